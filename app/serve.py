"""Start the REST API: fetch (or convert offline) the serving weights, then become uvicorn.

    python -m app.serve --host 127.0.0.1 --port 8000 --workers 1

What `faceid serve`, `make run` and the container run (docker/entrypoint.sh). Settings come from FACEID_*
variables (app/core/config.py); FACEID_UVICORN_ARGS adds uvicorn options.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def fetch_serving_weights() -> int:
    """The configured registry weights (a checkpoint file needs nothing) and MTCNN, fetched or converted;
    1 when MTCNN cannot be had (the server cannot detect faces without it)."""
    from app.core.config import get_settings
    from model.weights import REGISTRY, WeightsError, fetch

    name = get_settings().weights
    if name in REGISTRY:
        try:
            fetch(name)
        except WeightsError as exc:
            print(f"warning: weights {name}: {exc}", file=sys.stderr)
    try:
        fetch("mtcnn")
    except WeightsError as exc:
        print(f"error: weights mtcnn: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    ap = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default=env.get("FACEID_HOST", "127.0.0.1"), help="bind address")
    ap.add_argument("--port", type=int, default=int(env.get("FACEID_PORT", 8000)))
    ap.add_argument("--workers", type=int, default=int(env.get("FACEID_WORKERS", 1)))
    ap.add_argument("--fetch-weights", action=argparse.BooleanOptionalAction, default=True,
                    help="fetch or convert the weights first")
    args = ap.parse_args(argv)
    if args.fetch_weights and fetch_serving_weights():
        return 1
    os.environ["FACEID_HOST"], os.environ["FACEID_PORT"] = args.host, str(args.port)  # Settings checks the bind address
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", args.host,
           "--port", str(args.port), "--workers", str(args.workers), "--timeout-graceful-shutdown", "10",
           *shlex.split(os.environ.get("FACEID_UVICORN_ARGS", ""))]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # uvicorn becomes this process: signals reach it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
