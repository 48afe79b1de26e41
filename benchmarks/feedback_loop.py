"""The feedback loop end to end on a degraded camera domain, all through a real server's public API. Prints JSON.

Domains (`--domain`): `gray24`, as benchmarks/domain_adapt.py degrades (160 px face crop -> grayscale -> 24 px
-> 160 px); `blurjpeg`, another camera (Gaussian blur, 64 px, JPEG quality 10, back to 160 px, in colour).

1. enroll `--enroll` degraded images of each of `--people` LFW people (those with enough images);
2. identify `--feedback-probes` other degraded images of each and, for every wrong top match, POST /feedback
   "this face is X" on the answer's probe id (the wrongly named identity becomes a hard negative); at most
   `--corrections` of them (0: none, the gallery's own labels only);
3. identify the remaining degraded images (evaluation probes, never trained on): closed-set rank-1;
4. for each budget of `--max-steps` (several: one enrolment and correction phase, each budget on its own copy
   of that gallery and its own server), POST /admin/train, wait for the gate and the hot swap, identify the
   evaluation probes again; LFW 10-fold accuracy before and after comes from the gate (`--lfw-pairs` pairs).

    python -m benchmarks.feedback_loop --people 80 --max-steps 50 150 300 600 [--domain blurjpeg] \
        [--out benchmarks/results/feedback_loop_gray24.json]
    python -m benchmarks.feedback_loop --people 80 --train-minutes 10      # a budget of minutes instead
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageFilter

from harness import Server
from benchmarks.domain_adapt import degrade
from benchmarks.lfw_all import lfw_paths
from benchmarks.report import emit
from model.crops import crops_cached
from model.pipeline import FacePipeline
from training.datasets import faces_dir


def png(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    return buf.getvalue()


def top_match(client: httpx.Client, image: bytes) -> tuple[int | None, int | None]:
    """(best identity id or None when no face was found, the face's probe id) of the largest face."""
    r = client.post("/identify", files={"file": ("probe.png", image, "image/png")})
    r.raise_for_status()
    faces = r.json()["faces"]
    if not faces:
        return None, None
    face = max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))
    return (face["matches"][0]["identity_id"] if face["matches"] else None), face["probe_id"]


def rank1(client: httpx.Client, probes: list[tuple[int, bytes]]) -> dict:
    hits, no_face = 0, 0
    for identity_id, image in probes:
        got, _ = top_match(client, image)
        no_face += got is None
        hits += got == identity_id
    return {"rank1": hits / len(probes), "probes": len(probes), "no_face": no_face}


def wait_for(fn, timeout_s: float, every_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError("condition not reached")


def blur_jpeg(crops: np.ndarray, radius: float = 2.0, low: int = 64, quality: int = 10) -> np.ndarray:
    """Another camera: out of focus and heavily compressed (blur, `low` px, JPEG `quality`, back to the size)."""
    out = np.empty_like(crops)
    for i, c in enumerate(crops):
        size = c.shape[1], c.shape[0]
        small = Image.fromarray(c).filter(ImageFilter.GaussianBlur(radius)).resize((low, low), Image.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buf).convert("RGB").resize(size, Image.BILINEAR))
    return out


DOMAINS = {"gray24": ("LFW crops, grayscale, 24 px, back to 160 px (domain_adapt.degrade)", degrade),
           "blurjpeg": ("LFW crops, Gaussian blur radius 2, 64 px, JPEG quality 10, back to 160 px", blur_jpeg)}
RECIPE = ("keep", "patience", "schedule", "warmup", "l2sp", "select_lfw_pairs", "validate_every", "blend")


def snapshot(db: Path, to: Path) -> None:
    """A consistent copy of a SQLite gallery in WAL mode (the server may still hold it open)."""
    import sqlite3

    to.parent.mkdir(parents=True, exist_ok=True)
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def train_once(args, gallery: Path, folder: Path, eval_probes, before: dict, max_steps: int | None) -> dict:
    """One budget on its own copy of the gallery and its own server: train, gate, swap, rank-1 again."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "gallery.db"
    snapshot(gallery, db)
    env = {"FACEID_CHECKPOINTS_DIR": str(folder / "checkpoints"), "FACEID_MATCH_THRESHOLD": "0.5",
           "FACEID_ENROLL_MIN_DETECTION_SCORE": "0.5", "FACEID_ENROLL_MIN_FACE_SIZE": "20"}
    server = Server(db, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c:
            body = {"max_minutes": args.train_minutes, "epochs": 1000, "lr": args.lr, "batch_size": args.bs,
                    "k": args.k, "train_from": args.train_from, "val_identities": args.val_identities,
                    "lfw_pairs": args.lfw_pairs, "seed": args.seed, "max_steps": max_steps,
                    **{k: getattr(args, k) for k in RECIPE if getattr(args, k) is not None}}
            t_train = time.perf_counter()
            r = c.post("/admin/train", json=body)
            r.raise_for_status()
            job = wait_for(lambda: (s := c.get("/admin/train").json())["returncode"] is not None and s,
                           args.train_minutes * 60 + 3600)
            train_wall_s = time.perf_counter() - t_train
            result = job.get("result") or {}
            after = None
            if job["state"] == "published" and (job.get("swap") or {}).get("state") not in ("refused", "failed"):
                version = result["candidate"]["version"]
                wait_for(lambda: c.get("/ready").json()["model_version"] == version, 3600)
                after = rank1(c, eval_probes)
    finally:
        server.stop()
    base_lfw = (result.get("base") or {}).get("lfw_accuracy")
    new_lfw = (result.get("candidate") or {}).get("lfw_accuracy")
    base_h, new_h = (result.get("base") or {}).get("held_out"), (result.get("candidate") or {}).get("held_out")
    return {
        "max_steps": max_steps, "rank1_after": after,
        "rank1_gain_points": round(100 * (after["rank1"] - before["rank1"]), 2) if after else None,
        "job": {k: job.get(k) for k in ("state", "step", "returncode", "swap")},
        "gate": result.get("gate"), "kept": result.get("kept"), "stopped_early": result.get("stopped_early"),
        "held_out": {"base": base_h, "candidate": new_h,
                     "rank1_gain_points": round(100 * (new_h["rank1"] - base_h["rank1"]), 2) if new_h else None},
        "lfw_10fold": {"pairs": args.lfw_pairs, "base": base_lfw, "candidate": new_lfw,
                       "drop_points": round(100 * (base_lfw - new_lfw), 2) if base_lfw and new_lfw else None},
        "curve": result.get("curve"), "recipe": result.get("recipe"),
        "train": {"steps": result.get("steps"), "train_minutes": result.get("train_minutes"),
                  "l2sp_distance": result.get("l2sp_distance"), "job_wall_s": round(train_wall_s, 1)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=80)
    ap.add_argument("--domain", choices=sorted(DOMAINS), default="gray24")
    ap.add_argument("--enroll", type=int, default=3, help="degraded images enrolled per person")
    ap.add_argument("--feedback-probes", type=int, default=3, help="identified per person; mistakes reported")
    ap.add_argument("--corrections", type=int, default=None, help="report at most this many mistakes (0: none; "
                    "default: all)")
    ap.add_argument("--eval-probes", type=int, default=3, help="held-out probes per person for rank-1")
    ap.add_argument("--max-steps", type=int, nargs="+", default=None, help="step budgets, each trained from the "
                    "same gallery and corrections (default: one budget of --train-minutes)")
    ap.add_argument("--train-minutes", type=float, default=None, help="a cap on each job's training time "
                    "(default: 10 without --max-steps, else 600)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--train-from", default="mixed_6a")
    ap.add_argument("--val-identities", type=float, default=0.3)
    ap.add_argument("--lfw-pairs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    g = ap.add_argument_group("recipe (default: the service's)")
    g.add_argument("--keep", choices=("best", "last"), default=None)
    g.add_argument("--patience", type=int, default=None)
    g.add_argument("--schedule", choices=("cosine", "linear", "constant"), default=None)
    g.add_argument("--warmup", type=float, default=None)
    g.add_argument("--l2sp", type=float, default=None)
    g.add_argument("--select-lfw-pairs", type=int, default=None)
    g.add_argument("--validate-every", type=int, default=None)
    g.add_argument("--blend", type=float, nargs="*", default=None, help="WiSE-FT blends offered at each evaluation "
                   "(none: --blend with no value)")
    ap.add_argument("--workdir", default=None, help="server gallery and checkpoints (default: a temp folder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.train_minutes is None:
        args.train_minutes = 600.0 if args.max_steps else 10.0
    if not (faces_dir() / "lfw").is_dir():
        return emit({"skipped": f"no LFW under {faces_dir()}"}, args.out)
    t0 = time.perf_counter()
    per_person = args.enroll + args.feedback_probes + args.eval_probes
    paths = lfw_paths()
    by_person: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_person.setdefault(p.parent.name, []).append(i)
    eligible = sorted(n for n, idx in by_person.items() if len(idx) >= per_person)
    rng = np.random.default_rng(args.seed)
    people = sorted(rng.choice(eligible, min(args.people, len(eligible)), replace=False).tolist())
    selected = [paths[i] for n in people for i in by_person[n][:per_person]]
    crops, _ = crops_cached(FacePipeline.load(device="cpu"), selected, Path(".cache/benchmarks"))
    domain, transform = DOMAINS[args.domain]
    chosen = {n: transform(crops[j * per_person:(j + 1) * per_person]) for j, n in enumerate(people)}
    t_data = time.perf_counter() - t0

    work = Path(args.workdir or tempfile.mkdtemp(prefix="faceid-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {"FACEID_CHECKPOINTS_DIR": str(work / "checkpoints"), "FACEID_MATCH_THRESHOLD": "0.5",
           "FACEID_ENROLL_MIN_DETECTION_SCORE": "0.5", "FACEID_ENROLL_MIN_FACE_SIZE": "20"}
    server = Server(work / "gallery.db", env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=600) as c:
            ids, enroll_failed = {}, 0
            for name in people:
                files = [("files", (f"{i}.png", png(x), "image/png")) for i, x in enumerate(chosen[name][:args.enroll])]
                r = c.post("/enroll", data={"label": name}, files=files)
                if r.status_code != 201:  # a degraded image without a usable face: enroll what can be
                    ok = [f for f in files if c.post("/enroll", data={"label": name}, files=[f]).status_code == 201]
                    enroll_failed += len(files) - len(ok)
                    r = c.get("/identities", params={"prefix": name})
                    match = [i for i in r.json()["items"] if i["label"] == name]
                    if match:
                        ids[name] = match[0]["id"]
                    continue
                ids[name] = r.json()["identity"]["id"]
            people = [n for n in people if n in ids]
            fb_probes = [(ids[n], png(x)) for n in people for x in chosen[n][args.enroll:args.enroll + args.feedback_probes]]
            eval_probes = [(ids[n], png(x)) for n in people for x in chosen[n][args.enroll + args.feedback_probes:]]
            corrections, mistakes, no_face = 0, 0, 0
            for identity_id, image in fb_probes:
                got, probe_id = top_match(c, image)
                no_face += got is None
                if got is not None and got != identity_id:
                    mistakes += 1
                    if args.corrections is None or corrections < args.corrections:
                        r = c.post("/feedback", json={"kind": "is", "identity_id": identity_id, "probe_id": probe_id})
                        r.raise_for_status()
                        corrections += 1
            before = rank1(c, eval_probes)
            serving = c.get("/ready").json()["model_version"]
    finally:
        server.stop()
    report = {
        "benchmark": "feedback_loop", "domain": args.domain, "domain_description": domain,
        "people": len(people), "enrolled_per_person": args.enroll, "enroll_images_refused": enroll_failed,
        "feedback_probes": len(fb_probes), "feedback_no_face": no_face, "mistakes": mistakes,
        "corrections_sent": corrections, "eval_probes": len(eval_probes), "serving_version": serving,
        "rank1_before": before,
        "settings": {"minutes_cap": args.train_minutes, "lr": args.lr, "batch_size": args.bs, "k": args.k,
                     "train_from": args.train_from, "val_identities": args.val_identities, "seed": args.seed,
                     **{k: getattr(args, k) for k in RECIPE}},
        "runs": [], "data_s": round(t_data, 1)}
    for b in args.max_steps or [None]:
        report["runs"].append(train_once(args, work / "gallery.db", work / f"budget-{b or 'minutes'}", eval_probes,
                                         before, b))
        if args.out:  # a long sweep keeps what it has measured so far
            Path(args.out).write_text(json.dumps({**report, "partial": True}, indent=2))
    return emit({**report, "wall_s": round(time.perf_counter() - t0, 1)}, args.out)


if __name__ == "__main__":
    sys.exit(main())
