#!/bin/sh
# The one start command, for `make run` and the container alike.
# Environment: FACEID_* settings (see app/core/config.py), HOST/PORT or FACEID_HOST/FACEID_PORT, FACEID_WORKERS.
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
HOST="${FACEID_HOST:-${HOST:-127.0.0.1}}"
PORT="${FACEID_PORT:-${PORT:-8000}}"
export FACEID_HOST="$HOST" FACEID_PORT="$PORT"
# Default weights are fetched (or converted offline) before the server starts, so workers start fast.
"$PY" -m model.weights fetch "${FACEID_WEIGHTS:-casia-webface}" mtcnn >/dev/null 2>&1 || \
  "$PY" -m model.weights fetch mtcnn >/dev/null
exec "$PY" -m uvicorn app.main:create_app --factory --host "$HOST" --port "$PORT" \
  --workers "${FACEID_WORKERS:-1}" --timeout-graceful-shutdown 10 ${FACEID_UVICORN_ARGS:-}
