"""Collections at scale (issue 29): /identify latency in a small and in a big collection of a service that holds
1,000 collections, against services that hold only that collection; memory and disk per collection. Prints JSON.

    python -m benchmarks.collections [--backend sqlite|postgres|both] [--collections 1000] [--faces-big 100000]
    python -m benchmarks.collections --collections 50 --faces-big 10000     # a quick check

One run per backend: a service `all` holds the collections `s0000`..`s<N-1>` (20 identities each) and `big`
(`--faces-big` faces, 5 per identity); `small` holds only s0000's content, `big` only big's (as their default
gallery). Enrolling 120,000 faces through /enroll would take hours on a small CPU, so the galleries are filled
directly through the service's store (`GalleryStore.enroll`, one transaction per identity, faces carrying an
embedding for the serving model's version and a small real crop) in the databases the servers open, after the
collections were made by the service's own code (`app.services.collections.Collections.create`). The 20 people of
s0000 are real: 20 LFW people with 2+ photos, enrolled with the embeddings of their other photos (the service's
pipeline, `benchmarks.lfw_all`'s cache); they are also among big's people. Every other face is a distractor
(`benchmarks.search.distractors`: a real embedding plus noise at cosine 0.25-0.55 with it, where other people's
faces lie). Then real servers (`harness.Server`) answer /identify of these 20 people's first photos over HTTP, one
client, the configurations taking turns (`--passes` rounds): (a) all, in s0000; (b) small; (c) all, in big;
(d) big. Ratios a/b and c/d of the p50s. Memory: the `all` server's RSS before and after opening every small
collection (one /identify in each: it opens the collection, loads its search and its operating point), divided
by their number (PostgreSQL: also the server's connections and memory); disk: the files (SQLite) or relations
(PostgreSQL schema) of one empty collection.

PostgreSQL: an embedded server (harness.EmbeddedPostgres); big's HNSW index is built by the service on its first
search past FACEID_PGVECTOR_EXACT_BELOW vectors, before timing.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
import types
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from sqlalchemy import event, text

from app.core.config import Settings
from app.gallery.store import GalleryStore, NewFace, make_engine, migrate
from app.services.collections import Collections, collection_engine, collection_url
from benchmarks.faces import faces_dir
from benchmarks.report import emit
from benchmarks.search import distractors
from benchmarks.server import Server

PROBE_PEOPLE = 20
SMALL = "s0000"


# --- the data ------------------------------------------------------------------------------------------------
def lfw_cache(version: str) -> tuple[np.ndarray, list[Path], str]:
    """(embeddings of every LFW image, their paths, the cache file) from `benchmarks.lfw_all`'s cache."""
    from benchmarks.lfw_all import lfw_paths

    found = sorted(Path(".cache/benchmarks").glob(f"lfw-all-{version}-*.npz"))
    if not found:
        raise SystemExit(f"no LFW embeddings of model {version}: run python -m benchmarks.lfw_all first")
    return np.load(found[0])["emb"], lfw_paths(), found[0].name


def probe_people(paths: list[Path], n: int = PROBE_PEOPLE, seed: int = 0) -> list[tuple[str, list[int]]]:
    """`n` LFW people with 2+ photos (seeded): (name, rows of their photos, the first is the probe)."""
    by: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by.setdefault(p.parent.name, []).append(i)
    multi = sorted(name for name, rows in by.items() if len(rows) >= 2)
    pick = np.random.default_rng(seed).permutation(len(multi))[:n]
    return [(multi[i], by[multi[i]]) for i in pick]


def small_crop(path: Path, side: int = 40) -> np.ndarray:
    """A real face, small: the centre of an LFW photo (the face sits there) scaled to `side` pixels."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    return np.asarray(im.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).resize((side, side)), dtype=np.uint8)


class Filler:
    """Writes identities through the service's store (`GalleryStore.enroll`), one transaction per identity."""

    def __init__(self, version: str, crop: np.ndarray):
        self.version, self.crop = version, crop

    def enroll(self, store: GalleryStore, identities: list[tuple[str, np.ndarray]]) -> int:
        """Enrolls `identities` (label, vectors) and closes the store's connections."""
        try:
            self._enroll(store, identities)
        finally:
            store.engine.dispose()
        return sum(len(v) for _, v in identities)

    def _enroll(self, store: GalleryStore, identities: list[tuple[str, np.ndarray]]) -> None:
        for label, vectors in identities:
            store.enroll(label, [NewFace(self.crop, 14, f"{label}-{j}".ljust(64, "0")[:64], [0.0, 0.0, 40.0, 40.0],
                                         [], 0.99, {self.version: v.astype(np.float32)})
                                 for j, v in enumerate(vectors)])


def unsynchronised(engine) -> None:
    """SQLite: the benchmark's fill does not wait for the disk at every commit (the service's engine does)."""
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _off(conn, _record):
            conn.execute("PRAGMA synchronous=OFF")


def registry(url: str) -> Collections:
    """The service's collections registry on database `url` (migrated), without loading a model: collections are
    made by `Collections.create` exactly as POST /collections makes them."""
    settings = Settings(database_url=url)
    engine = make_engine(url)
    migrate(engine)
    default = types.SimpleNamespace(settings=settings, store=GalleryStore(engine), serving=types.SimpleNamespace())
    return Collections(default)


def collection_store(url: str, cid: int) -> GalleryStore:
    engine = collection_engine(url, cid, 30.0)
    unsynchronised(engine)
    return GalleryStore(engine, collection_url(url, cid)[1])


def default_store(url: str) -> GalleryStore:
    engine = make_engine(url, 30.0)
    migrate(engine)
    unsynchronised(engine)
    return GalleryStore(engine)


def small_content(probe_emb: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(f"person{i:02d}", e[:1]) for i, e in enumerate(probe_emb)]


def big_content(probe_emb: list[np.ndarray], real: np.ndarray, faces: int, per_identity: int,
                seed: int = 1) -> list[tuple[str, np.ndarray]]:
    """The 20 real people (up to `per_identity` photos each), then distractor identities up to `faces` faces."""
    out = [(f"person{i:02d}", e[:per_identity]) for i, e in enumerate(probe_emb)]
    left = faces - sum(len(v) for _, v in out)
    rng = np.random.default_rng(seed)
    vectors = np.concatenate(list(distractors(rng, real, max(left, 0)))) if left > 0 else np.zeros((0, real.shape[1]))
    for k, start in enumerate(range(0, len(vectors), per_identity)):
        out.append((f"big{k:06d}", vectors[start:start + per_identity]))
    return out


# --- the servers --------------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` and its descendants (uvicorn may run its worker as a child)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total / 1024


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` and its descendants have used."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pids: dict[str, int], seconds: float = 10.0) -> dict[str, float]:
    """Each server's CPU use while no request comes (its background work: listeners, pollers, tasks)."""
    before = {k: cpu_s(p) for k, p in pids.items()}
    time.sleep(seconds)
    return {k: round(100 * (cpu_s(p) - before[k]) / seconds, 1) for k, p in pids.items()}


def time_identify(h: httpx.Client, path: str, images: list[bytes], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        r = h.post(path, files={"file": ("p.jpg", images[i % len(images)])})
        out.append(time.perf_counter() - t)
        if r.status_code != 200:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return out


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.array(xs) * 1000, q)), 1)


def disk_of_empty(backend: str, reg: Collections, url: str) -> dict:
    row = reg.create("empty", {})
    db_url, schema = collection_url(url, row.id)
    if schema is None:
        db = Path(db_url.removeprefix("sqlite:///"))
        files = {p.name: p.stat().st_size for p in db.parent.glob(f"{db.name}*")}
        return {"bytes": sum(files.values()), "files": files}
    with reg.registry.engine.connect() as conn:
        n = conn.scalar(text("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN "
                             "pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = :s AND c.relkind IN "
                             "('r', 'm')"), {"s": schema})
        rels = conn.scalar(text("SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace "
                                "WHERE s.nspname = :s"), {"s": schema})
    return {"bytes": int(n), "relations": int(rels), "schema": schema}


def copy_sqlite(src_url: str, dst: Path) -> str:
    """A collection's SQLite database as another service's default gallery (same schema: every database is
    migrated by the same revisions)."""
    src = sqlite3.connect(src_url.removeprefix("sqlite:///"))
    out = sqlite3.connect(dst)
    src.backup(out)
    src.close()
    out.close()
    return f"sqlite:///{dst}"


@dataclass
class Galleries:
    """What `build` made: database URLs of the services `all`, `small`, `big`; the collections of `all` (name -> id);
    the probe photos; the embeddings' cache file; one empty collection's disk; seconds taken; PostgreSQL or None."""
    urls: dict[str, str]
    made: dict[str, int]
    images: list[bytes]
    cache: str
    disk: dict
    seconds: dict[str, float]
    pg: object | None


def build(backend: str, args, tmp: Path, stack: ExitStack) -> Galleries:
    from model.pipeline import load_checkpoint

    t0 = time.perf_counter()
    version = load_checkpoint(args.weights).version
    real, paths, cache = lfw_cache(version)
    people = probe_people(paths)
    probe_emb = [real[rows[1:]] for _, rows in people]
    images = [paths[rows[0]].read_bytes() for _, rows in people]
    filler = Filler(version, small_crop(paths[people[0][1][0]]))
    if backend == "postgres":
        from harness import EmbeddedPostgres

        pg = EmbeddedPostgres(tmp / "pg").start()
        stack.callback(pg.close)
        with pg_connect(pg) as conn:  # max_connections stays at its default (100): the collections share a pool
            conn.execute("ALTER SYSTEM SET shared_buffers = '512MB'")
        pg.stop()
        pg.start()
        urls = {name: pg.create_database(name) for name in ("all", "small", "big")}
    else:
        urls = {name: f"sqlite:///{tmp / name}.db" for name in ("all", "small", "big")}
    reg = registry(urls["all"])
    made: dict[str, int] = {}
    t = time.perf_counter()
    for i in range(args.collections):
        made[f"s{i:04d}"] = reg.create(f"s{i:04d}", {}).id
    made["big"] = reg.create("big", {}).id
    create_s = time.perf_counter() - t
    disk = disk_of_empty(backend, reg, urls["all"])
    rng = np.random.default_rng(2)
    t = time.perf_counter()
    filled = filler.enroll(collection_store(urls["all"], made[SMALL]), small_content(probe_emb))
    others = list(distractors(rng, real, (args.collections - 1) * args.identities))
    others = np.concatenate(others) if others else np.zeros((0, real.shape[1]), np.float32)
    for k, name in enumerate(n for n in made if n not in (SMALL, "big")):
        vecs = others[k * args.identities:(k + 1) * args.identities]
        filled += filler.enroll(collection_store(urls["all"], made[name]),
                                [(f"{name}-p{j:02d}", v[None]) for j, v in enumerate(vecs)])
        if k % 100 == 99:
            print(f"[{backend}] {k + 2}/{args.collections} small collections filled", file=sys.stderr)
    small_fill_s = time.perf_counter() - t
    t = time.perf_counter()
    big = big_content(probe_emb, real, args.faces_big, args.faces_per_identity)
    filled += filler.enroll(collection_store(urls["all"], made["big"]), big)
    big_fill_s = time.perf_counter() - t
    print(f"[{backend}] filled {filled} faces", file=sys.stderr)
    if backend == "sqlite":  # the same content as another service's whole gallery: a copy of the database
        for name in ("small", "big"):
            src, _ = collection_url(urls["all"], made[SMALL if name == "small" else "big"])
            copy_sqlite(src, tmp / f"{name}.db")
    else:
        filler.enroll(default_store(urls["small"]), small_content(probe_emb))
        filler.enroll(default_store(urls["big"]), big)
    seconds = {"create_collections": round(create_s, 1), "fill_small": round(small_fill_s, 1),
               "fill_big": round(big_fill_s, 1), "fill_total": round(time.perf_counter() - t0, 1)}
    return Galleries(urls, made, images, cache, disk, seconds, pg if backend == "postgres" else None)


def run_backend(backend: str, args, tmp: Path, stack: ExitStack) -> dict:
    """Builds the galleries, starts the three servers, opens every collection, times the four configurations."""
    t0 = time.perf_counter()
    g = build(backend, args, tmp, stack)
    urls, made, images, pg = g.urls, g.made, g.images, g.pg
    env = {"FACEID_PRECISION": args.precision, "FACEID_WEIGHTS": args.weights, "FACEID_LOG_JSON": "true",
           "FACEID_COLLECTIONS_MAX_OPEN": str(args.max_open or args.collections + 16)}
    servers = {}
    for name in ("all", "small", "big"):
        db = urls[name] if backend == "postgres" else tmp / f"{name}.db"
        servers[name] = Server(db, env=env, log_path=tmp / f"server-{backend}-{name}.log").start(timeout_s=600)
        stack.callback(servers[name].stop)
    configs = {"a_all_in_small": ("all", f"/collections/{SMALL}/identify"), "b_small_only": ("small", "/identify"),
               "c_all_in_big": ("all", "/collections/big/identify"), "d_big_only": ("big", "/identify")}
    clients = {name: stack.enter_context(httpx.Client(base_url=s.url, timeout=1800)) for name, s in servers.items()}
    t = time.perf_counter()
    answers = {}
    for cfg, (srv, path) in configs.items():  # first search: loads the search (PostgreSQL big: builds HNSW)
        r = clients[srv].post(path, files={"file": ("p.jpg", images[0])})
        r.raise_for_status()
        answers[cfg] = {"status": r.json()["faces"][0]["status"], "threshold": r.json()["threshold"]}
    warm_s = time.perf_counter() - t
    pid = servers["all"].proc.pid
    rss_before = rss_mb(pid)
    pg_pss_before = pg_pss_mb(pg) if backend == "postgres" else None
    t = time.perf_counter()
    for k, name in enumerate(n for n in made if n not in (SMALL, "big")):  # opens it, loads its search
        time_identify(clients["all"], f"/collections/{name}/identify", images[k % len(images):][:1], 1)
    open_s = time.perf_counter() - t
    opened = len(made) - 2
    rss_after = rss_mb(pid)
    connections = pg_connections(pg, "all") if backend == "postgres" else None
    pg_pss = pg_pss_mb(pg) if backend == "postgres" else None
    idle = idle_cpu_percent({name: srv.proc.pid for name, srv in servers.items()})
    for cfg, (srv, path) in configs.items():
        time_identify(clients[srv], path, images, 5)  # warm-up
    lat: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(args.passes):
        for cfg, (srv, path) in configs.items():  # taking turns: each sees the same machine state
            lat[cfg] += time_identify(clients[srv], path, images, args.requests)
    p50 = {c: pct(v, 50) for c, v in lat.items()}
    return {
        "backend": backend, "collections": args.collections, "identities_per_collection": args.identities,
        "faces_big": args.faces_big, "faces_per_identity_big": args.faces_per_identity,
        "embeddings": f"{PROBE_PEOPLE} real LFW people (cache {g.cache}) in {SMALL} and big; every other face a "
                      "distractor (real LFW embedding plus noise, cosine 0.25-0.55 with it)",
        "max_open": args.max_open or args.collections + 16,
        "requests_per_config": args.requests * args.passes, "passes": args.passes,
        "identify_ms": {c: {"p50": p50[c], "p90": pct(v, 90), "n": len(v)} for c, v in lat.items()},
        "ratio_small_a_over_b": round(p50["a_all_in_small"] / p50["b_small_only"], 3),
        "ratio_big_c_over_d": round(p50["c_all_in_big"] / p50["d_big_only"], 3),
        "first_answers": answers,
        "idle_cpu_percent_of_a_core": idle,
        "memory": {"rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
                   "collections_opened": opened,
                   "per_collection_kb": round(1024 * (rss_after - rss_before) / max(opened, 1), 1),
                   "open_and_identify_s_per_collection": round(open_s / max(opened, 1), 4),
                   "rss_small_only_mb": round(rss_mb(servers["small"].proc.pid), 1),
                   "rss_big_only_mb": round(rss_mb(servers["big"].proc.pid), 1),
                   **({"postgres_connections_of_all": connections,
                       "postgres_pss_mb_before_opening": pg_pss_before, "postgres_pss_mb_after_opening": pg_pss,
                       "postgres_per_collection_kb": round(1024 * (pg_pss - pg_pss_before) / max(opened, 1), 1)}
                      if connections is not None else {})},
        "disk_per_empty_collection": g.disk,
        "seconds": {**g.seconds, "first_search_warm": round(warm_s, 1), "open_all": round(open_s, 1),
                    "total": round(time.perf_counter() - t0, 1)}}


def pg_connect(pg):
    import psycopg

    return psycopg.connect(pg._server.get_uri(), autocommit=True)


def pg_pss_mb(pg) -> float:
    """Proportional memory of the whole PostgreSQL server (postmaster and every backend; shared buffers counted
    once, split among the processes that touched them)."""
    postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
    total, todo = 0, [postmaster]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return round(total / 1024, 1)


def pg_connections(pg, database: str) -> dict:
    """The connections a database has, by what they are doing (a LISTEN connection idles)."""
    with pg_connect(pg) as conn:
        rows = conn.execute("SELECT state, count(*) FROM pg_stat_activity WHERE datname = %s GROUP BY state",
                            (database,)).fetchall()
        limit = conn.execute("SHOW max_connections").fetchone()[0]
    return {"total": sum(n for _, n in rows), "by_state": {str(k): n for k, n in rows}, "max_connections": int(limit)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    ap.add_argument("--collections", type=int, default=1000, help="small collections (the first is s0000)")
    ap.add_argument("--identities", type=int, default=20, help="per small collection (one face each)")
    ap.add_argument("--faces-big", type=int, default=100_000)
    ap.add_argument("--faces-per-identity", type=int, default=5, help="in the big collection")
    ap.add_argument("--requests", type=int, default=20, help="per configuration and pass")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--max-open", type=int, default=None, help="FACEID_COLLECTIONS_MAX_OPEN of the servers "
                    "(default: every collection stays open)")
    ap.add_argument("--weights", default="casia-webface")
    ap.add_argument("--precision", default="fast")
    ap.add_argument("--out-dir", default="benchmarks/results", help="writes collections-<backend>.json there")
    args = ap.parse_args(argv)
    if not (faces_dir() / "lfw").is_dir():
        print(json.dumps({"skipped": f"no LFW under {faces_dir()}"}))
        return 0
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"faceid-collections-{backend}-") as tmp, ExitStack() as stack:
            result = {"benchmark": "collections", "command": "python -m benchmarks.collections " + " ".join(
                sys.argv[1:] if argv is None else argv), **run_backend(backend, args, Path(tmp), stack)}
        emit(result, str(Path(args.out_dir) / f"collections-{backend}.json") if args.out_dir else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
