"""End-to-end identification over real HTTP: enroll 100 LFW people, identify other images of them and of
100 people never enrolled. Prints JSON (and writes it with --out).

    python -m benchmarks.identify_e2e [--people 100] [--out benchmarks/results/identify_e2e.json]
    python -m benchmarks.identify_e2e --backend both     # SQLite and PostgreSQL + pgvector, same people, one run
    python -m benchmarks.identify_e2e --database-url postgresql+psycopg://...   # an existing (empty) database
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.server import running


def choose_people(n: int, seed: int = 0) -> tuple[list[tuple[str, Path, Path]], list[Path]]:
    """n people with >= 2 images (first enrolled, second probed) and n people with 1 image (never enrolled)."""
    root = faces_dir() / "lfw"
    multi, single = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        imgs = sorted(d.glob("*.jpg"))
        (multi if len(imgs) >= 2 else single).append((d.name, imgs))
    rng = random.Random(seed)
    known = [(name, imgs[0], imgs[1]) for name, imgs in rng.sample(multi, n)]
    unknown = [imgs[0] for _, imgs in rng.sample(single, n)]
    return known, unknown


def run(base_url: str, n: int = 100, seed: int = 0) -> dict:
    known, unknown = choose_people(n, seed)
    t0 = time.perf_counter()
    enrolled, enroll_failures = 0, []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for name, first, _ in known:
            r = client.post("/enroll", data={"label": name}, files={"files": (first.name, first.read_bytes())})
            if r.status_code == 201:
                enrolled += 1
            else:  # e.g. several usable faces: take the largest, as a user would point at it
                faces = r.json().get("error", {}).get("detail", {}).get("faces") or []
                if faces:
                    idx = max(faces, key=lambda f: f["size"])["face_index"]
                    r = client.post("/enroll", data={"label": name, "face_index": str(idx)},
                                    files={"files": (first.name, first.read_bytes())})
                enrolled += r.status_code == 201
                if r.status_code != 201:
                    enroll_failures.append({"name": name, "status": r.status_code, "body": r.json()})
        t_enroll = time.perf_counter() - t0

        def best(path: Path):
            r = client.post("/identify", files={"file": (path.name, path.read_bytes())})
            r.raise_for_status()
            body = r.json()
            if not body["faces"]:
                return None, body["threshold"]
            # the probe's subject: the largest face (LFW images are centred on them)
            face = max(body["faces"], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
            return face, body["threshold"]

        top1 = accepted = no_face = 0
        for name, _, probe in known:
            face, thr = best(probe)
            if face is None:
                no_face += 1
                continue
            if face["matches"] and face["matches"][0]["label"] == name:
                top1 += 1
                accepted += face["status"] == "match"
        rejected = unknown_no_face = 0
        for probe in unknown:
            face, thr = best(probe)
            if face is None:
                unknown_no_face += 1
                rejected += 1
                continue
            rejected += face["status"] == "unknown"
        version = client.get("/ready").json()["model_version"]
    return {"benchmark": "identify_e2e", "people_enrolled": enrolled, "enroll_failures": enroll_failures,
            "rank1": top1 / n, "rank1_above_threshold": accepted / n, "probe_no_face": no_face,
            "unknown_rejected": rejected / n, "unknown_no_face": unknown_no_face, "threshold": thr,
            "model_version": version, "enroll_s": round(t_enroll, 1), "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100)
    parser.add_argument("--out", default=None)
    parser.add_argument("--weights", default=None, help="FACEID_WEIGHTS for the server (registry name or path)")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite",
                        help="gallery database: a temporary SQLite file, embedded PostgreSQL + pgvector, or both")
    parser.add_argument("--database-url", default=None, help="run on this (empty) database instead")
    args = parser.parse_args(argv)
    if not (faces_dir() / "lfw").is_dir():
        print(json.dumps({"skipped": f"no LFW under {faces_dir()}"}))
        return 0
    env = {"FACEID_WEIGHTS": str(Path(args.weights).resolve()) if args.weights and Path(args.weights).is_file()
           else args.weights} if args.weights else {}
    if args.database_url:
        with running(args.database_url, env=env) as server:
            return emit(run(server.url, args.people), args.out)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in (["sqlite", "postgres"] if args.backend == "both" else [args.backend]):
            if backend == "sqlite":
                with running(Path(tmp) / "gallery.db", env=env) as server:
                    results[backend] = run(server.url, args.people)
            else:
                from harness import embedded_postgres

                with embedded_postgres(Path(tmp) / "pg") as pg, running(pg.create_database(), env=env) as server:
                    results[backend] = run(server.url, args.people)
    if len(results) == 1:
        return emit(next(iter(results.values())), args.out)
    keys = ("people_enrolled", "rank1", "rank1_above_threshold", "unknown_rejected")
    same = all(results["sqlite"].get(k) == results["postgres"].get(k) for k in keys)
    return emit({"backends": results, "same_rank1_and_unknown_rate": same}, args.out)


if __name__ == "__main__":
    sys.exit(main())
