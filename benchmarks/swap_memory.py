"""Does memory grow with hot swaps? Three swaps in a row on a 2-worker server over a large gallery; each worker's
RSS after each swap (once both serve the new model and have answered with it). The worker that ran a swap and
the one that followed it both should hold only the serving version's search and tails. With `--baseline` (a git
revision) the same run measures that revision too. Prints JSON.

    python -m benchmarks.swap_memory [--faces 40000] [--baseline 78dd40a]

The gallery is written straight into SQLite, already embedded (random unit vectors) under the base model and
the three candidates, so a swap re-embeds nothing and the benchmark measures what each process keeps.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from harness import REPO, Server
from benchmarks.faces import faces_dir
from benchmarks.rename_stall import build_gallery, checkout_of, probe_image
from benchmarks.report import emit


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def workers_of(master: int) -> list[int]:
    """The uvicorn worker processes under `master` (its children's children too: uvicorn's multiprocess)."""
    out, todo = [], [master]
    while todo:
        pid = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            kids = []
        for k in kids:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes()
            if b"spawn_main" in cmd:  # not the resource tracker
                out.append(k)
            todo.append(k)
    return sorted(set(out))


def both_serve(c: httpx.Client, image: bytes, version: str, timeout_s: float = 600) -> int:
    """Identify until 20 answers in a row come from `version` (both workers switched). Returns the requests."""
    deadline, streak, n = time.monotonic() + timeout_s, 0, 0
    while streak < 20:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not all switch to {version}")
        r = c.post("/identify", files={"file": ("p.jpg", image, "image/jpeg")})
        r.raise_for_status()
        n += 1
        streak = streak + 1 if r.json()["model_version"] == version else 0
        if streak == 0:
            time.sleep(0.2)  # a follower polls the gallery every couple of seconds on SQLite
    return n


def measure(name: str, checkout: Path, work: Path, args, versions: list[str], image: bytes, ckdir: Path) -> dict:
    db = work / f"{name}.db"
    build_gallery(checkout, db, versions, args.faces, args.per_identity)
    srv = Server(db, checkout=checkout, workers=2, env={"FACEID_PRECISION": "fp32",
                                                       "FACEID_CHECKPOINTS_DIR": str(ckdir)})
    srv.start()
    rows = []
    try:
        with httpx.Client(base_url=srv.url, timeout=600) as c:
            both_serve(c, image, versions[0])
            pids = workers_of(srv.proc.pid)
            rows.append({"after": "start", "version": versions[0], "rss_mb": [round(rss_mb(p), 1) for p in pids]})
            for i, version in enumerate(versions[1:], 1):
                r = c.post("/admin/model", json={"checkpoint": f"c{i}.pt"})
                r.raise_for_status()
                both_serve(c, image, version)
                rows.append({"after": f"swap {i}", "version": version,
                             "rss_mb": [round(rss_mb(p), 1) for p in pids]})
    finally:
        srv.stop()
    first, third = rows[1]["rss_mb"], rows[3]["rss_mb"]
    return {"workers": len(first), "rows": rows,
            "third_over_first": [round(b / a, 3) for a, b in zip(first, third)],
            "max_third_over_first": round(max(b / a for a, b in zip(first, third)), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=40_000)
    ap.add_argument("--per-identity", type=int, default=4)
    ap.add_argument("--baseline", default=None, help="a git revision measured the same way in the same run")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if not (faces_dir() / "photos").is_dir():
        return emit({"benchmark": "swap_memory", "skipped": f"no face data under {faces_dir()}"}, args.out)
    from model.pipeline import load_checkpoint
    from training.perturb import perturbed_checkpoint

    image = probe_image()
    out = {"benchmark": "swap_memory", "faces": args.faces, "versions_embedded": 4, "precision": "fp32",
           "results": {}}
    with tempfile.TemporaryDirectory(prefix="faceid-swapmem-") as tmp:
        work = Path(tmp)
        ckdir = work / "checkpoints"
        versions = [load_checkpoint("casia-webface").version] + [
            perturbed_checkpoint(ckdir / f"c{i}.pt", seed=i) for i in (1, 2, 3)]
        runs = [("this_tree", REPO)]
        if args.baseline:
            runs.insert(0, (f"baseline_{args.baseline}", checkout_of(args.baseline, work / "baseline")))
        for name, checkout in runs:
            out["results"][name] = measure(name, checkout, work, args, versions, image, ckdir)
    return emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
