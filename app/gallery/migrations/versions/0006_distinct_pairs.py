"""distinct_pairs: identity pairs said not to be the same person (no longer suggested as duplicates)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 14:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('distinct_pairs',
    sa.Column('identity_a', sa.Integer(), nullable=False),
    sa.Column('identity_b', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('identity_a < identity_b', name='ck_distinct_pair_order'),
    sa.ForeignKeyConstraint(['identity_a'], ['identities.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['identity_b'], ['identities.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('identity_a', 'identity_b')
    )
    with op.batch_alter_table('distinct_pairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_distinct_pairs_identity_b'), ['identity_b'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('distinct_pairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_distinct_pairs_identity_b'))
    op.drop_table('distinct_pairs')
