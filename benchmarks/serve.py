"""Real uvicorn servers: /identify requests per second and p50/p95/p99 latency with 1, 4 and 16 concurrent
clients, for several server configurations side by side in one run (default: batching on vs off). Prints JSON.

All servers start first; then every point (clients x configuration) is measured in turn, `--passes` times,
and each figure is the median over the passes, so that the configurations see the same machine state.

    python -m benchmarks.serve [--seconds 20] [--clients 1,4,16]
    python -m benchmarks.serve --passes 3 --configs \
        "torch=FACEID_DETECTOR_BACKEND=torch;onnxruntime=FACEID_DETECTOR_BACKEND=onnxruntime"

A configuration's CHECKOUT=path (not an environment variable) runs the server from another source tree, so
one run compares code before and after a change (`git archive main | tar -x -C /tmp/main`):

    python -m benchmarks.serve --configs "main=CHECKOUT=/tmp/main;branch="
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.server import Server


def probes(n: int | None = 32) -> list[bytes]:
    """The first image of the first `n` LFW people (None: of all 5,749)."""
    root = faces_dir() / "lfw"
    return [p.read_bytes() for p in sorted(root.glob("*/*_0001.jpg"))[:n]]


def load(url: str, images: list[bytes], clients: int, seconds: float, start: int = 0) -> dict:
    """`clients` threads identify `images` in turn (from `start`, wrapping around) for `seconds`."""
    lat, errors = [], []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(c: int):
        with httpx.Client(base_url=url, timeout=120) as h:
            i = start + c
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                r = h.post("/identify", files={"file": ("p.jpg", images[i % len(images)])})
                dt = time.perf_counter() - t
                with lock:
                    (lat.append(dt) if r.status_code == 200 else errors.append(r.status_code))
                i += clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    if not len(ms):
        return {"requests": 0, "errors": len(errors), "error_statuses": sorted(set(errors)), "rps": 0.0,
                "p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {"requests": len(lat), "errors": len(errors), "rps": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


DEFAULT_CONFIGS = "batching_on=FACEID_BATCHING=true;batching_off=FACEID_BATCHING=false"


def parse_configs(text: str) -> dict[str, dict[str, str]]:
    """'name=VAR=value,VAR=value;name2=...' -> {name: {VAR: value}} (the first is the baseline)."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, assignments = part.partition("=")
        out[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="per point and pass")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--configs", default=DEFAULT_CONFIGS,
                    help="servers to compare, 'name=FACEID_X=v,FACEID_Y=w;name2=...'; the first is the baseline")
    ap.add_argument("--passes", type=int, default=1, help="rounds of all points, the servers taking turns")
    ap.add_argument("--start-timeout-s", type=float, default=300.0, help="for a loaded machine")
    ap.add_argument("--distinct", action="store_true", help="every request a photo no request sent before (the first "
                    "image of each of LFW's 5,749 people, in turn): what keeping unknown faces costs when they are new, "
                    "not the same 32 photos again (a photo's unknown faces are kept once)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not (faces_dir() / "lfw").is_dir():
        print(json.dumps({"skipped": f"no LFW under {faces_dir()}"}))
        return 0
    images = probes(None if args.distinct else 32)
    configs = parse_configs(args.configs)
    clients = [int(x) for x in args.clients.split(",")]
    result = {"benchmark": "serve", "seconds_per_point": args.seconds, "passes": args.passes,
              "precision": args.precision, "configs": configs, "distinct_photos": args.distinct, "runs": {}}
    sent = {}  # --distinct: per server, the next photo it has not been sent (the first 10 are its gallery)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        servers = {}
        for name, extra in configs.items():  # all servers up at once, idle while another is measured
            extra = dict(extra)
            checkout = extra.pop("CHECKOUT", None)
            env = {"FACEID_PRECISION": args.precision, "FACEID_LOG_JSON": "true", **extra}
            srv = Server(Path(tmp) / f"{name}.db", env=env, checkout=checkout).start(timeout_s=args.start_timeout_s)
            stack.callback(srv.stop)
            with httpx.Client(base_url=srv.url, timeout=120) as h:  # a small gallery to search
                for i, img in enumerate(images[:10]):
                    h.post("/enroll", data={"label": f"p{i}"}, files={"files": ("a.jpg", img)})
                result.setdefault("ready", {})[name] = h.get("/ready").json()
            warm = load(srv.url, images, 2, 3, start=10)  # warm-up
            sent[name] = 10 + warm["requests"] + warm["errors"] + 2
            servers[name] = srv
        points: dict[str, dict[int, list[dict]]] = {n: {c: [] for c in clients} for n in configs}
        for _ in range(args.passes):
            for c in clients:
                for name, srv in servers.items():  # taking turns: each sees the same machine state
                    point = load(srv.url, images, c, args.seconds, start=sent[name] if args.distinct else 0)
                    sent[name] += point["requests"] + point["errors"] + c
                    points[name][c].append(point)
    for name in configs:
        result["runs"][name] = {str(c): median_point(points[name][c]) for c in clients}
    base, top = next(iter(configs)), str(max(clients))
    result["ratios_vs_baseline"] = {
        name: {f"rps_at_{top}_clients": round(result["runs"][name][top]["rps"] / result["runs"][base][top]["rps"], 2),
               **({"p50_speedup_at_1_client": round(result["runs"][base]["1"]["p50_ms"]
                                                    / result["runs"][name]["1"]["p50_ms"], 2)}
                  if "1" in result["runs"][name] else {})}
        for name in list(configs)[1:]}
    first = result["runs"][base]
    if "1" in first:
        result["p99_ratio_max_vs_single_client"] = round(first[top]["p99_ms"] / first["1"]["p99_ms"], 2)
    return emit(result, args.out)


def median_point(rows: list[dict]) -> dict:
    """Per-field median over passes (requests and errors summed)."""
    out = {k: round(float(np.median([r[k] for r in rows])), 2) for k in ("rps", "p50_ms", "p95_ms", "p99_ms")}
    return {"requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows), **out}


if __name__ == "__main__":
    sys.exit(main())
