"""Issue 27's abuse figures on a real uvicorn server (loopback only, bounded in count and time). Prints JSON.

- `bomb`: `--bomb-requests` concurrent POST /faces/import, each one PNG crop of ~155 kB that declares
  6320 x 6320 RGBA (160 MB of pixels). Reports the server's peak RSS above its idle RSS (sampled every 10 ms
  from /proc/<pid>/status, VmRSS) against the decode budget (FACEID_MAX_DECODE_BYTES) + 200 MB, and the answers.
- `flood`: a 50-face image (LFW photos tiled 10 x 5) sent to /identify by `--clients` clients at full speed
  for `--flood-s` seconds. Reports requests, faces per answer, and the probe store (rows and crop bytes,
  sampled every 0.5 s from the SQLite file) against FACEID_PROBE_MAX_ROWS / _PER_KEY.

    flock /tmp/faceid-bench.lock nice python -m benchmarks.abuse [--flood-s 60] [--clients 4] \
        [--probe-max-rows-per-key 300]

RSS that cannot be read is an error, never a zero.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from app.core.config import Settings
from harness import running, zero_png
from training.datasets import faces_dir


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:  # raises where it cannot be read: no figure is better than a 0
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class PeakRss:
    def __init__(self, pid: int):
        self.pid, self.peak_mb, self._stop = pid, rss_mb(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def png_bomb(side: int = 6320) -> bytes:
    """A valid RGBA PNG of side x side zero pixels."""
    return zero_png(side, side, color_type=6)


def bomb(srv, n: int) -> dict:
    crop = png_bomb()
    body = {"label": "bomb", "faces": [{"crop": base64.b64encode(crop).decode(), "source_sha256": "0" * 64,
                                        "box": [0, 0, 10, 10], "landmarks": [[1, 1]] * 5, "detection_score": 0.9,
                                        "crop_margin": 0}]}
    idle = rss_mb(srv.proc.pid)
    with PeakRss(srv.proc.pid) as peak, ThreadPoolExecutor(n) as pool, httpx.Client(timeout=300) as c:
        answers = list(pool.map(lambda _: c.post(f"{srv.url}/faces/import", json=body), range(n)))
    budget_mb = Settings().max_decode_bytes / 2**20
    return {"requests": n, "crop_bytes": len(crop), "declared": "6320x6320 RGBA",
            "answers": sorted({f"{r.status_code} {r.json()['error']['code']}" for r in answers}),
            "idle_rss_mb": round(idle, 1), "peak_rss_mb": round(peak.peak_mb, 1),
            "peak_above_idle_mb": round(peak.peak_mb - idle, 1), "bound_mb": round(budget_mb + 200, 1),
            "within_bound": peak.peak_mb - idle <= budget_mb + 200}


def fifty_faces() -> bytes:
    """50 LFW photos (one person each) tiled 10 x 5 into one JPEG."""
    people = sorted(p for p in (faces_dir() / "lfw").iterdir() if p.is_dir())[:50]
    tiles = [Image.open(sorted(p.glob("*.jpg"))[0]).convert("RGB").resize((200, 200)) for p in people]
    sheet = Image.new("RGB", (2000, 1000))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % 10) * 200, (i // 10) * 200))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def probe_store(db: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        n, size = conn.execute("SELECT count(*), coalesce(sum(length(crop_png)), 0) FROM probes").fetchone()
    return int(n), int(size)


def flood(srv, db: Path, seconds: float, clients: int, per_key: int | None) -> dict:
    image = fifty_faces()
    faces_seen, done, errors = [], [0], []
    stop = time.monotonic() + seconds
    peak = [0, 0]

    def client():
        with httpx.Client(timeout=120) as c:
            while time.monotonic() < stop:
                r = c.post(f"{srv.url}/identify", files={"file": ("fifty.jpg", image, "image/jpeg")})
                if r.status_code != 200:
                    errors.append(r.status_code)
                    continue
                faces_seen.append(len(r.json()["faces"]))
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        n, size = probe_store(db)
        peak[0], peak[1] = max(peak[0], n), max(peak[1], size)
        time.sleep(0.5)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    n, size = probe_store(db)
    settings = Settings()
    per_key = settings.probe_max_rows_per_key if per_key is None else per_key
    cap = min(settings.probe_max_rows, per_key)  # keyless: every request comes from one client address
    return {"seconds": round(elapsed, 1), "clients": clients, "requests": done[0], "errors": sorted(set(errors)),
            "requests_per_s": round(done[0] / elapsed, 2), "faces_per_answer": max(faces_seen, default=0),
            "probes_written": sum(faces_seen), "probe_rows_peak": max(peak[0], n), "probe_rows_end": n,
            "probe_bytes_peak": max(peak[1], size), "bytes_per_probe": round(size / n) if n else None,
            "cap_rows": cap, "within_cap": max(peak[0], n) <= cap,
            "database_bytes": db.stat().st_size + (db.with_name(db.name + "-wal").stat().st_size
                                                    if db.with_name(db.name + "-wal").exists() else 0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bomb-requests", type=int, default=12)
    ap.add_argument("--flood-s", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--probe-max-rows-per-key", type=int, default=None,
                    help="FACEID_PROBE_MAX_ROWS_PER_KEY for the server (default: the setting's), e.g. a small cap "
                         "that a slow machine's flood reaches within --flood-s")
    ap.add_argument("--skip", choices=["bomb", "flood"], action="append", default=[])
    args = ap.parse_args(argv)
    env = {} if args.probe_max_rows_per_key is None else \
        {"FACEID_PROBE_MAX_ROWS_PER_KEY": str(args.probe_max_rows_per_key)}
    out = {"load_average": os.getloadavg(), "server_env": env}
    with tempfile.TemporaryDirectory(prefix="faceid-abuse-") as tmp:
        db = Path(tmp) / "g.db"
        with running(db, env=env) as srv:
            if "bomb" not in args.skip:
                out["bomb"] = bomb(srv, args.bomb_requests)
            if "flood" not in args.skip:
                out["flood"] = flood(srv, db, args.flood_s, args.clients, args.probe_max_rows_per_key)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
