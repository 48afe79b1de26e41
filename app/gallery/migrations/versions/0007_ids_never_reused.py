"""ids never reused (SQLite AUTOINCREMENT on identities, faces, probes, feedback); probes.owner; feedback.probe_id
indexed

SQLite gives a deleted row's id to the next insert when it was the largest; AUTOINCREMENT never does. The
tables are rebuilt (batch mode: copy, drop, rename; `migrate` turns foreign keys off for it, so the copy's
drop cascades nowhere) and their sqlite_sequence starts at the largest id present. PostgreSQL's serial
sequences never go back: only the new column and index there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

TABLES = ('identities', 'faces', 'probes', 'feedback')


def upgrade() -> None:
    with op.batch_alter_table('probes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=120), nullable=True))
        batch_op.create_index(batch_op.f('ix_probes_owner'), ['owner'], unique=False)
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_probe_id'), ['probe_id'], unique=False)
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': True}):
            pass


def downgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_probe_id'))
    with op.batch_alter_table('probes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_probes_owner'))
        batch_op.drop_column('owner')
