#!/bin/sh
# The one start command, for `make run` and the container alike: `python -m app.serve` (what `faceid serve` runs), which fetches
# (or converts offline) the default weights, then execs uvicorn.
# Environment: FACEID_* settings (see app/core/config.py), HOST/PORT or FACEID_HOST/FACEID_PORT, FACEID_WORKERS,
# FACEID_UVICORN_ARGS (extra uvicorn options).
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
HOST="${FACEID_HOST:-${HOST:-127.0.0.1}}"
PORT="${FACEID_PORT:-${PORT:-8000}}"
exec "$PY" -m app.serve --host "$HOST" --port "$PORT" --workers "${FACEID_WORKERS:-1}"
