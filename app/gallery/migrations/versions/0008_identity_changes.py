"""identity_changes: the change log of non-append writes (which identities each touched), so in-memory
searches reload those identities instead of the whole gallery; embedding ids never reused (SQLite
AUTOINCREMENT: the in-memory search appends the embeddings past the last id it has seen)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 17:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('identity_changes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('identity_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identity_changes_generation'), ['generation'], unique=False)
    if op.get_bind().dialect.name == 'sqlite':  # PostgreSQL's serial sequences never go back
        with op.batch_alter_table('embeddings', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
            pass


def downgrade() -> None:
    with op.batch_alter_table('identity_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identity_changes_generation'))
    op.drop_table('identity_changes')
