"""Copy a gallery from one database to another (SQLite <-> PostgreSQL), then verify the copy.

    python -m app.gallery.copy sqlite:///data/faceid.db postgresql+psycopg://faceid:secret@db/faceid
    python -m app.gallery.copy postgresql+psycopg://faceid:secret@db/faceid sqlite:///backup.db

The destination is migrated to the newest schema and must hold no identities. Every table is copied row by
row with its ids, in batches, through the service's own models (vectors stay float32, bit for bit); the
gallery state (generation, serving model) comes along, and PostgreSQL's id sequences are moved past the
copied ids. Then the row counts of every table are compared and a random sample of vectors is compared bit
for bit. Prints a JSON report; exit code 0 only when the copy verified. Stop the writers (the API) first, or
the copy is of a moving gallery.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from sqlalchemy import Engine, func, insert, select, text, update

from app.gallery.models import Base, GalleryState
from app.gallery.store import make_engine, migrate

VECTOR_TABLES = ("embeddings", "templates")


def _tables():
    return [t for t in Base.metadata.sorted_tables if t.name != GalleryState.__tablename__]


def copy_gallery(src: Engine, dst: Engine, batch: int = 1000) -> dict[str, int]:
    """Copy every row; returns rows copied per table."""
    copied = {}
    with src.connect() as s, dst.begin() as d:
        if d.scalar(select(func.count()).select_from(Base.metadata.tables["identities"])):
            raise SystemExit("the destination gallery is not empty; copy into a new database")
        for table in _tables():
            pk = list(table.primary_key.columns)
            n, last = 0, None
            while True:
                q = select(table).order_by(*pk).limit(batch)
                if last is not None:
                    q = q.where(pk[0] > last)
                rows = [dict(r._mapping) for r in s.execute(q)]
                if not rows:
                    break
                d.execute(insert(table), rows)
                n += len(rows)
                last = rows[-1][pk[0].name]
            copied[table.name] = n
        state = s.execute(select(GalleryState).where(GalleryState.id == 1)).mappings().first()
        if state:
            d.execute(update(GalleryState).where(GalleryState.id == 1).values(**dict(state)))
        if dst.dialect.name == "postgresql":  # new rows must not reuse the copied ids
            for table in _tables():
                pk = [c.name for c in table.primary_key.columns]
                if len(pk) == 1 and pk[0] in ("id", "seq"):  # the outbox's key is `seq`
                    key = pk[0]
                    d.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key}'), "
                                   f"COALESCE(MAX({key}), 1), MAX({key}) IS NOT NULL) FROM {table.name}"))
    return copied


def verify(src: Engine, dst: Engine, sample: int = 200, seed: int = 0) -> dict:
    """Row counts of every table, and `sample` random vectors per vector table, compared."""
    report: dict = {"counts": {}, "vectors_compared": {}, "mismatches": []}
    rng = np.random.default_rng(seed)
    with src.connect() as s, dst.connect() as d:
        for table in _tables() + [GalleryState.__table__]:
            a = s.scalar(select(func.count()).select_from(table))
            b = d.scalar(select(func.count()).select_from(table))
            report["counts"][table.name] = a
            if a != b:
                report["mismatches"].append(f"{table.name}: {a} rows in the source, {b} in the copy")
        for name in VECTOR_TABLES:
            table = Base.metadata.tables.get(name)
            if table is None:
                continue
            ids = np.asarray(s.scalars(select(table.c.id)).all(), np.int64)
            if len(ids) > sample:
                ids = rng.choice(ids, sample, replace=False)
            want = dict(s.execute(select(table.c.id, table.c.vector).where(table.c.id.in_(ids.tolist()))).all())
            got = dict(d.execute(select(table.c.id, table.c.vector).where(table.c.id.in_(ids.tolist()))).all())
            report["vectors_compared"][name] = len(want)
            bad = [i for i, v in want.items() if got.get(i) != v]
            if bad:
                report["mismatches"].append(f"{name}: vectors differ for ids {bad[:10]}")
    report["ok"] = not report["mismatches"]
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="source database URL (sqlite:///path or postgresql+psycopg://...)")
    ap.add_argument("dst", help="destination database URL (migrated here; must be empty)")
    ap.add_argument("--batch", type=int, default=1000, help="rows per insert")
    ap.add_argument("--sample", type=int, default=200, help="vectors compared per table after the copy")
    args = ap.parse_args(argv)
    src, dst = make_engine(args.src), make_engine(args.dst)
    try:
        migrate(src)  # a gallery from an older version is brought to this schema first
        migrate(dst)
        copied = copy_gallery(src, dst, args.batch)
        report = {"copied": copied, **verify(src, dst, args.sample)}
    finally:
        src.dispose()
        dst.dispose()
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
