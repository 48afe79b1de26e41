"""Clustering unknown faces on LFW: the service's clustering against DBSCAN with Immich's defaults and oracle-tuned
DBSCAN, HDBSCAN, agglomerative (average linkage) and Chinese whispers, on the same embeddings in the same run.

Faces: every LFW image of the people with at least 2 (the service's MTCNN crop and embedding; of an image with
several faces, the one at its centre, whom LFW files it under: `--select`), all unknown, nobody enrolled. The service's threshold comes from the
checkpoint's impostor tail at FACEID_UNKNOWN_CLUSTER_FAR (default 1e-3; app.services.unknown.cluster, the
refine's own function); the baselines'
settings are chosen on these faces' labels (an oracle). A face left alone (a cluster of one, or DBSCAN noise)
counts as its own cluster in BCubed and as "unclustered".

Streaming: the same faces kept one at a time through `UnknownStore.keep` (the online step, real SQLite), in a
random order, then the service's refine; the clusters before the refine are reported too. Timing: the batch
clustering of 10k and 100k faces, LFW's faces plus copies of them under random rotations (each copy is a new set
of people with LFW's own structure, about orthogonal to the others).

    python -m benchmarks.clustering [--out benchmarks/results/clustering.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.report import emit
from model.clustering import average_linkage

TAILS = Path(__file__).resolve().parents[1] / "model" / "tails"


# --- metrics -------------------------------------------------------------------------------------------------
def scores(truth: np.ndarray, pred: np.ndarray) -> dict:
    """BCubed precision/recall/F1, pairwise precision/recall, unclustered faces, clusters (2+ faces) vs people."""
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    joint = Counter(zip(t.tolist(), p.tolist()))
    t_size, p_size = np.bincount(t), np.bincount(p)
    prec = rec = 0.0
    tp_pairs = 0
    for (a, b), n in joint.items():
        prec += n * n / p_size[b]
        rec += n * n / t_size[a]
        tp_pairs += n * (n - 1) // 2
    n = len(t)
    bp, br = prec / n, rec / n
    pred_pairs = int((p_size * (p_size - 1) // 2).sum())
    true_pairs = int((t_size * (t_size - 1) // 2).sum())
    return {"bcubed_precision": round(bp, 4), "bcubed_recall": round(br, 4),
            "bcubed_f1": round(2 * bp * br / (bp + br), 4),
            "pairwise_precision": round(tp_pairs / pred_pairs, 4) if pred_pairs else 1.0,
            "pairwise_recall": round(tp_pairs / true_pairs, 4),
            "unclustered_faces": int((p_size[p] == 1).sum()), "clusters": int((p_size >= 2).sum()),
            "people": int(len(t_size))}


def noise_alone(labels: np.ndarray) -> np.ndarray:
    """DBSCAN/HDBSCAN noise (-1): each such face its own cluster."""
    out = labels.copy()
    noise = out < 0
    out[noise] = out.max() + 1 + np.arange(noise.sum())
    return out


# --- baselines -----------------------------------------------------------------------------------------------
def dbscan(v, eps, min_samples):
    from sklearn.cluster import DBSCAN

    return noise_alone(DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute").fit_predict(v))


def hdbscan(v, min_cluster_size, min_samples):
    from sklearn.cluster import HDBSCAN

    # euclidean on unit vectors orders pairs as cosine does
    return noise_alone(HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True).fit_predict(v))


def chinese_whispers(v, threshold, iterations=20, seed=0):
    """dlib's chinese_whispers: an edge for every pair at or above `threshold` (weight 1, as dlib's face example),
    each node takes the label with the most weight among its neighbours, in random order, `iterations` times."""
    from model.clustering import pairs_at_least

    n = len(v)
    i, j = pairs_at_least(v, threshold)
    nbrs = [[] for _ in range(n)]
    for a, b in zip(i.tolist(), j.tolist()):
        nbrs[a].append(b)
        nbrs[b].append(a)
    labels = np.arange(n)
    rng = np.random.default_rng(seed)
    for _ in range(iterations):
        changed = 0
        for node in rng.permutation(n):
            if not nbrs[node]:
                continue
            counts = Counter(labels[nbrs[node]].tolist())
            best = max(counts.items(), key=lambda kv: (kv[1], -kv[0]))[0]
            if best != labels[node]:
                labels[node], changed = best, changed + 1
        if not changed:
            break
    return labels


def best_of(name, truth, runs) -> dict:
    """The run with the highest BCubed F1 (the oracle's pick) and what it was picked from."""
    results = []
    for setting, fn in runs:
        t0 = time.perf_counter()
        labels = fn()
        results.append({"setting": setting, **scores(truth, labels), "seconds": round(time.perf_counter() - t0, 2)})
    best = max(results, key=lambda r: r["bcubed_f1"])
    return {"method": name, "oracle": True, **best,
            "tried": [{"setting": r["setting"], "bcubed_f1": r["bcubed_f1"],
                       "pairwise_precision": r["pairwise_precision"]} for r in results]}


# --- the service ---------------------------------------------------------------------------------------------
def streamed(v, version, thresholds, far, seed=0, dummy_png=b"\x89PNG"):
    """Keep the faces one at a time through UnknownStore.keep on a fresh SQLite gallery; the clusters then, and
    after the service's refine (average linkage over every kept face, as UnknownService.refine_now does)."""
    from app.gallery.feedback import FaceCrop
    from app.gallery.store import GalleryStore, make_engine, migrate
    from app.gallery.unknown import UnknownStore
    from app.services.unknown import cluster, same_person_threshold

    threshold = same_person_threshold(thresholds, far, 0.5)
    order = np.random.default_rng(seed).permutation(len(v))
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/g.db")
        migrate(engine)
        store = UnknownStore(GalleryStore(engine))
        face_of = {}
        t0 = time.perf_counter()
        for i in order.tolist():
            crop = FaceCrop(dummy_png, 160, 32, f"{i:064x}", [0, 0, 1, 1], [[0, 0]] * 5, 1.0, version)
            [kept] = store.keep([(crop, {version: v[i]})], version, threshold)
            face_of[kept.face_id] = i
        keep_s = time.perf_counter() - t0
        rev, face_ids, old, dismissed, vectors = store.snapshot(version)
        online = np.empty(len(v), np.int64)
        online[[face_of[f] for f in face_ids.tolist()]] = old
        t0 = time.perf_counter()
        new = cluster(vectors, thresholds, far, 0.5, np.where(dismissed, old, -1))
        assert store.apply(rev, face_ids, old, new)
        refine_s = time.perf_counter() - t0
        _, face_ids, after, _, _ = store.snapshot(version)
        refined = np.empty(len(v), np.int64)
        refined[[face_of[f] for f in face_ids.tolist()]] = after
        engine.dispose()
    return online, refined, keep_s / len(v), refine_s


def people_embeddings(weights: str, select: str = "centre") -> dict:
    """The embeddings of the LFW images of people with 2+ (the service's pipeline, `precision="fast"`), cached.
    `select="centre"`: the face nearest the image's centre, LFW's convention for whom an image is filed under (the
    largest face is sometimes the person beside them: George W. Bush in "Colin_Powell_0068.jpg", which would count
    as a mixed cluster when it is put with Bush); `"largest"`: `benchmarks.lfw_all`'s cache of every image."""
    from benchmarks.lfw_all import lfw_embeddings, lfw_paths

    if select == "largest":
        return lfw_embeddings(weights)
    from benchmarks.lfw_embed import crops_cached, embed_all
    from model.pipeline import FacePipeline

    paths = lfw_paths()
    names = np.array([p.parent.name for p in paths])
    people, counts = np.unique(names, return_counts=True)
    idx = np.flatnonzero(np.isin(names, people[counts >= 2]))
    pipeline = FacePipeline.load(weights=weights, device="auto", precision="fast")
    version = pipeline.embedder.version
    cache = Path(".cache/benchmarks") / f"lfw-2plus-{select}-{version}-{pipeline.embedder.precision}.npz"
    if cache.is_file():
        emb = np.load(cache, allow_pickle=False)["emb"]
    else:
        crops, _ = crops_cached(pipeline, [paths[i] for i in idx], Path(".cache/benchmarks"), select=select)
        emb, _ = embed_all(pipeline.embedder, crops)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, emb=emb)
    return {"names": list(names[idx]), "emb": emb, "version": version}


def scaled(v, n, seed=0):
    """n faces: `v` and copies of it under random rotations (new people, LFW's structure)."""
    rng = np.random.default_rng(seed)
    parts, have = [v], len(v)
    while have < n:
        q, _ = np.linalg.qr(rng.normal(size=(v.shape[1], v.shape[1])))
        parts.append((v @ q).astype(np.float32))
        have += len(v)
    return np.concatenate(parts)[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--far", type=float, default=1e-3, help="FACEID_UNKNOWN_CLUSTER_FAR")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--select", choices=("centre", "largest"), default="centre", help="which face of an LFW image "
                    "with several: the one at the centre (whom LFW files it under) or the largest")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from app.services.unknown import cluster, same_person_threshold

    d = people_embeddings(args.weights, args.select)
    names = np.array(d["names"])
    people, counts = np.unique(names, return_counts=True)
    keep = np.isin(names, people[counts >= 2])
    v, truth = np.ascontiguousarray(d["emb"][keep], np.float32), names[keep]
    thresholds = json.loads((TAILS / f"{args.weights}.json").read_text())
    thr = same_person_threshold(thresholds, args.far, 0.5)
    rows = []

    t0 = time.perf_counter()
    ours = cluster(v, thresholds, args.far, 0.5)
    service = {"method": "service (average linkage at the calibrated threshold)", "oracle": False,
               "setting": {"far": args.far, "threshold": round(thr, 4)}, **scores(truth, ours),
               "seconds": round(time.perf_counter() - t0, 2)}
    rows.append(service)
    rows.append({"method": "service, other pair FARs (not the default; for the record)", "oracle": False,
                 "sweep": [{"far": far, "threshold": round(same_person_threshold(thresholds, far, 0.5), 4),
                            **scores(truth, cluster(v, thresholds, far, 0.5))} for far in (2e-3, 1e-3, 2e-4)]
                 + [{"far": far, "threshold": round(same_person_threshold(thresholds, far, 0.5), 4),
                     "rule": "plain average linkage at the pair threshold (no far / min(a, b) tightening)",
                     **scores(truth, average_linkage(v, same_person_threshold(thresholds, far, 0.5)))}
                    for far in (1e-3, args.far)]})
    t0 = time.perf_counter()
    immich = {"method": "DBSCAN, Immich defaults", "oracle": False, "setting": {"eps": 0.5, "min_samples": 3},
              **scores(truth, dbscan(v, 0.5, 3)), "seconds": round(time.perf_counter() - t0, 2)}
    rows.append(immich)
    rows.append(best_of("DBSCAN", truth, [({"eps": e, "min_samples": m}, lambda e=e, m=m: dbscan(v, e, m))
                                          for e in (0.3, 0.35, 0.4, 0.45, 0.5) for m in (1, 2, 3)]))
    rows.append(best_of("HDBSCAN", truth, [({"min_cluster_size": c, "min_samples": m},
                                            lambda c=c, m=m: hdbscan(v, c, m)) for c in (2, 3, 5) for m in (1, 2)]))
    rows.append(best_of("agglomerative average linkage", truth,
                        [({"threshold": t}, lambda t=t: average_linkage(v, t))
                         for t in (0.45, 0.48, 0.5, 0.52, 0.54, 0.56, 0.6)]))
    rows.append(best_of("Chinese whispers", truth, [({"threshold": t}, lambda t=t: chinese_whispers(v, t))
                                                    for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)]))
    best_oracle = max((r for r in rows if r.get("oracle")), key=lambda r: r["bcubed_f1"])

    stream = None
    if not args.skip_stream:
        online, refined, per_face_s, refine_s = streamed(v, d["version"], thresholds, args.far)
        stream = {"online_only": scores(truth, online), "after_refine": scores(truth, refined),
                  "keep_ms_per_face": round(per_face_s * 1000, 2), "refine_s": round(refine_s, 2)}

    timing = []
    for n in map(int, args.sizes.split(",")):
        big = scaled(v, n)
        t0 = time.perf_counter()
        labels = cluster(big, thresholds, args.far, 0.5)
        timing.append({"faces": n, "service_seconds": round(time.perf_counter() - t0, 2),
                       "clusters": int((np.bincount(labels) >= 2).sum())})
        if n <= 20_000:
            t0 = time.perf_counter()
            dbscan(big, 0.5, 3)
            timing[-1]["dbscan_immich_seconds"] = round(time.perf_counter() - t0, 2)
    out = {"benchmark": "clustering", "faces": int(len(v)), "people": int(len(set(truth))),
           "model_version": d["version"], "results": rows, "streaming": stream, "timing": timing,
           "acceptance": {"f1_over_immich": round(service["bcubed_f1"] - immich["bcubed_f1"], 4),
                          "f1_below_best_oracle": round(best_oracle["bcubed_f1"] - service["bcubed_f1"], 4),
                          "best_oracle": best_oracle["method"],
                          "pairwise_precision": service["pairwise_precision"],
                          "streaming_f1_gap": None if stream is None else
                          round(service["bcubed_f1"] - stream["after_refine"]["bcubed_f1"], 4),
                          "online_only_f1_gap": None if stream is None else
                          round(service["bcubed_f1"] - stream["online_only"]["bcubed_f1"], 4)}}
    return emit(out, args.out)


if __name__ == "__main__":
    sys.exit(main())
