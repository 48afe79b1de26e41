"""serving model recorded in gallery_state, so every process follows a hot swap

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 00:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('gallery_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serving_model', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('serving_version', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('gallery_state', schema=None) as batch_op:
        batch_op.drop_column('serving_version')
        batch_op.drop_column('serving_model')
