"""Do gallery edits stall searches? Concurrent /identify p50/p99 on a real server over a large in-memory
gallery, in quiet phases and in phases with `--renames` renames, taken in turns on the same server. With
`--baseline` (a git revision), the same run also measures that revision's server (`git archive`), one after the
other on the same machine, so the two ratios compare side by side. Prints JSON.

    python -m benchmarks.rename_stall [--faces 100000] [--renames 50] [--seconds 20] [--baseline 78dd40a]

The gallery is written straight into SQLite (random unit vectors under the serving model's version, so nothing
is re-embedded at start): identify answers `unknown`, and the search still compares against every identity.
"""
from __future__ import annotations

import argparse
import io
import random
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from harness import REPO, Server
from benchmarks.faces import faces_dir
from benchmarks.report import emit


def checkout_of(revision: str, into: Path) -> Path:
    """The source tree of `revision` (no .venv: the server runs with this interpreter)."""
    data = subprocess.run(["git", "archive", revision], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def build_gallery(checkout: Path, db: Path, version: str | list[str], faces: int, per_identity: int,
                  seed: int = 0) -> None:
    """Migrate with `checkout`'s own migrations, then write `faces` faces straight into SQLite, embedded (random
    unit vectors) under each of `version`."""
    versions = [version] if isinstance(version, str) else list(version)
    subprocess.run([sys.executable, "-c", "import sys; from app.gallery.store import make_engine, migrate; "
                    "migrate(make_engine(sys.argv[1]))", f"sqlite:///{db}"], cwd=checkout, check=True)
    from model.templates import template_of

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(np.full((160, 160, 3), 127, np.uint8)).save(buf, format="PNG")
    png, now = buf.getvalue(), datetime.now(timezone.utc).isoformat()
    n_ids = faces // per_identity
    con = sqlite3.connect(db)
    with con:
        con.executemany("INSERT INTO identities (id, label, created_at, updated_at) VALUES (?, ?, ?, ?)",
                        [(i, f"person-{i}", now, now) for i in range(1, n_ids + 1)])
        for start in range(0, n_ids, 5000):
            ids = range(start + 1, min(start + 5000, n_ids) + 1)
            face_rows, emb_rows, tpl_rows = [], [], []
            for j, iid in enumerate(ids):
                for k in range(per_identity):
                    fid = (iid - 1) * per_identity + k + 1
                    face_rows.append((fid, iid, png, 160, 32, "0" * 64, "[0, 0, 1, 1]", "[]", 0.99, now))
            for vi, ver in enumerate(versions):
                vecs = rng.standard_normal((len(ids) * per_identity, 512)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                for j, iid in enumerate(ids):
                    for k in range(per_identity):
                        fid = (iid - 1) * per_identity + k + 1
                        emb_rows.append((vi * faces + fid, fid, ver, vecs[j * per_identity + k].astype("<f4").tobytes(),
                                         now))
                    tpl_rows.append((iid, ver, template_of(vecs[j * per_identity:(j + 1) * per_identity])
                                     .astype("<f4").tobytes(), per_identity, now))
            con.executemany("INSERT INTO faces (id, identity_id, crop_png, crop_size, crop_margin, source_sha256, box, "
                            "landmarks, detection_score, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", face_rows)
            con.executemany("INSERT INTO embeddings (id, face_id, model_version, vector, created_at) "
                            "VALUES (?, ?, ?, ?, ?)", emb_rows)
            con.executemany("INSERT INTO templates (identity_id, model_version, vector, n_faces, updated_at) "
                            "VALUES (?, ?, ?, ?, ?)", tpl_rows)
        con.execute("UPDATE gallery_state SET generation = 1 WHERE id = 1")
    con.close()


def probe_image() -> bytes:
    """A small photo of one face (detection stays cheap: the search's share of a request is what changes)."""
    photos = sorted((faces_dir() / "photos").glob("*/*.jpg"))
    im = Image.open(photos[0]).convert("RGB")
    im.thumbnail((240, 240))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def phase(url: str, image: bytes, seconds: float, clients: int, renames: int, n_ids: int) -> dict:
    """`clients` threads identify for `seconds`; meanwhile `renames` renames spread evenly (0: none)."""
    stop = threading.Event()
    lat: list[float] = []
    errors: list[str] = []

    def client():
        with httpx.Client(base_url=url, timeout=120) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post("/identify", files={"file": ("p.jpg", image, "image/jpeg")})
                if r.status_code != 200:
                    errors.append(f"identify {r.status_code}")
                lat.append(time.perf_counter() - t0)

    def renamer():
        rng = random.Random(0)
        with httpx.Client(base_url=url, timeout=120) as c:
            for i in range(renames):
                if stop.wait(seconds / (renames + 1)):
                    return
                iid = rng.randint(1, n_ids)
                r = c.patch(f"/identities/{iid}", json={"label": f"renamed-{iid}-{time.monotonic_ns()}"})
                if r.status_code != 200:
                    errors.append(f"rename {r.status_code}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    if renames:
        threads.append(threading.Thread(target=renamer))
    for t in threads:
        t.start()
    time.sleep(seconds)  # the phase's length (a measurement window, not an ordering)
    stop.set()
    for t in threads:
        t.join()
    lat.sort()
    return {"requests": len(lat), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "max_ms": round(1000 * lat[-1], 1), "errors": errors[:5], "n_errors": len(errors)}


def measure(name: str, checkout: Path, work: Path, args, version: str, image: bytes) -> dict:
    db = work / f"{name}.db"
    t0 = time.perf_counter()
    build_gallery(checkout, db, version, args.faces, args.per_identity)
    built_s = time.perf_counter() - t0
    srv = Server(db, checkout=checkout, env={"FACEID_PRECISION": args.precision, "FACEID_BATCHING": "true"})
    t0 = time.perf_counter()
    srv.start()
    try:
        start_s = time.perf_counter() - t0
        with httpx.Client(base_url=srv.url, timeout=300) as c:
            for _ in range(3):  # warm: the index loaded, the gallery's tail computed
                c.post("/identify", files={"file": ("p.jpg", image, "image/jpeg")}).raise_for_status()
            ready = c.get("/ready").json()
        n_ids = args.faces // args.per_identity
        phases = []
        for turn in range(args.turns):
            for renames in (0, args.renames):
                phases.append({"renames": renames, "turn": turn,
                               **phase(srv.url, image, args.seconds, args.clients, renames, n_ids)})
    finally:
        srv.stop()
    quiet = [p for p in phases if p["renames"] == 0]
    busy = [p for p in phases if p["renames"]]
    p99 = lambda ps: statistics.median(p["p99_ms"] for p in ps)  # noqa: E731
    p50 = lambda ps: statistics.median(p["p50_ms"] for p in ps)  # noqa: E731
    return {"gallery_build_s": round(built_s, 1), "server_start_s": round(start_s, 1),
            "indexed_vectors": ready.get("indexed_vectors"), "identities": ready.get("identities"),
            "p50_ms_quiet": p50(quiet), "p50_ms_renaming": p50(busy),
            "p99_ms_quiet": p99(quiet), "p99_ms_renaming": p99(busy),
            "p99_ratio": round(p99(busy) / p99(quiet), 3), "phases": phases}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--per-identity", type=int, default=4)
    ap.add_argument("--renames", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    ap.add_argument("--turns", type=int, default=2, help="quiet + renaming phases, taken in turns")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--precision", default="fp32", help="FACEID_PRECISION of the servers (both the same)")
    ap.add_argument("--baseline", default=None, help="a git revision measured the same way in the same run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not (faces_dir() / "photos").is_dir():
        return emit({"benchmark": "rename_stall", "skipped": f"no face data under {faces_dir()}"}, args.out)
    from model.pipeline import load_checkpoint

    version = load_checkpoint("casia-webface").version  # FACEID_WEIGHTS default; flip TTA off
    image = probe_image()
    out = {"benchmark": "rename_stall", "faces": args.faces, "per_identity": args.per_identity,
           "renames_per_phase": args.renames, "phase_s": args.seconds, "clients": args.clients,
           "precision": args.precision, "results": {}}
    with tempfile.TemporaryDirectory(prefix="faceid-rename-") as tmp:
        work = Path(tmp)
        runs = [("this_tree", REPO)]
        if args.baseline:
            runs.insert(0, (f"baseline_{args.baseline}", checkout_of(args.baseline, work / "baseline")))
        for name, checkout in runs:
            out["results"][name] = measure(name, checkout, work, args, version, image)
    return emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
