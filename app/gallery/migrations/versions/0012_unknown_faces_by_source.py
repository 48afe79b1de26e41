"""unknown_faces.source_sha256 indexed: a photo identified again with remember_unknown finds the faces it already
left (they are kept once, not once per upload)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 02:00:00
"""
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_unknown_faces_source_sha256'), 'unknown_faces', ['source_sha256'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_unknown_faces_source_sha256'), table_name='unknown_faces')
