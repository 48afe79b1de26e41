"""A real uvicorn server: /identify requests per second and p50/p95/p99 latency with 1, 4 and 16 concurrent
clients, batching on vs the same server with batching off, in one run. Prints JSON.

    python -m benchmarks.serve [--seconds 20] [--clients 1,4,16]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.server import running


def probes() -> list[bytes]:
    root = faces_dir() / "lfw"
    return [p.read_bytes() for p in sorted(root.glob("*/*_0001.jpg"))[:32]]


def load(url: str, images: list[bytes], clients: int, seconds: float) -> dict:
    lat, errors = [], []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(c: int):
        with httpx.Client(base_url=url, timeout=120) as h:
            i = c
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
    return {"requests": len(lat), "errors": len(errors), "rps": round(len(lat) / wall, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if not (faces_dir() / "lfw").is_dir():
        print(json.dumps({"skipped": f"no LFW under {faces_dir()}"}))
        return 0
    images = probes()
    result = {"benchmark": "serve", "seconds_per_point": args.seconds, "precision": args.precision, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("on", "off"):
            env = {"FACEID_BATCHING": "true" if mode == "on" else "false", "FACEID_PRECISION": args.precision,
                   "FACEID_LOG_JSON": "true"}
            with running(Path(tmp) / "g.db", env=env) as srv:
                with httpx.Client(base_url=srv.url, timeout=120) as h:  # a small gallery to search
                    for i, img in enumerate(images[:10]):
                        h.post("/enroll", data={"label": f"p{i}"}, files={"files": ("a.jpg", img)})
                load(srv.url, images, 2, 3)  # warm-up
                result["runs"][f"batching_{mode}"] = {str(c): load(srv.url, images, c, args.seconds)
                                                      for c in (int(x) for x in args.clients.split(","))}
    on, off = result["runs"]["batching_on"], result["runs"]["batching_off"]
    top = str(max(int(x) for x in args.clients.split(",")))
    result["rps_ratio_at_max_clients"] = round(on[top]["rps"] / off[top]["rps"], 2)
    result["p99_ratio_max_vs_single_client"] = round(on[top]["p99_ms"] / on["1"]["p99_ms"], 2)
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
