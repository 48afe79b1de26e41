"""PostgreSQL: pgvector extension; embeddings.vector and templates.vector as pgvector `vector` (searched there)

On SQLite this revision does nothing (the in-memory index searches there). HNSW indexes are created per model
version at run time (app/gallery/search/pgvector.py), since versions are only known then.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 11:10:00
"""
import numpy as np
import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_BATCH = 2000


def _convert(table: str, src, dst, to_db) -> None:
    """Copy column src into dst (both `sa.column`s with their types) in batches; exact float32 both ways."""
    conn = op.get_bind()
    t = sa.table(table, sa.column("id", sa.Integer), src, dst)
    src, dst = src.name, dst.name
    last = 0
    while True:
        rows = conn.execute(sa.select(t.c.id, t.c[src]).where(t.c.id > last).order_by(t.c.id).limit(_BATCH)).all()
        if not rows:
            return
        for rid, value in rows:
            conn.execute(sa.update(t).where(t.c.id == rid).values({dst: to_db(value)}))
        last = rows[-1][0]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for table in ("embeddings", "templates"):
        op.add_column(table, sa.Column("vector_pg", VECTOR(), nullable=True))
        _convert(table, sa.column("vector", sa.LargeBinary), sa.column("vector_pg", VECTOR()),
                 lambda b: np.frombuffer(b, dtype="<f4"))
        op.drop_column(table, "vector")
        op.alter_column(table, "vector_pg", new_column_name="vector", nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("embeddings", "templates"):
        op.execute(f"DO $$ DECLARE r record; BEGIN FOR r IN SELECT indexname FROM pg_indexes "
                   f"WHERE tablename = '{table}' AND indexname LIKE 'ix_{table}_hnsw_%' "
                   f"LOOP EXECUTE 'DROP INDEX ' || quote_ident(r.indexname); END LOOP; END $$")
        op.add_column(table, sa.Column("vector_bytes", sa.LargeBinary(), nullable=True))
        _convert(table, sa.column("vector", VECTOR()), sa.column("vector_bytes", sa.LargeBinary),
                 lambda v: np.asarray(v, dtype="<f4").tobytes())
        op.drop_column(table, "vector")
        op.alter_column(table, "vector_bytes", new_column_name="vector", nullable=False)
