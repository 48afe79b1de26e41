"""identities.cover_face_id: the face a person's gallery card shows (nullable; no foreign key, so identities and
faces do not point at each other: the store clears it when that face is deleted or moved away)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 01:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('identities', sa.Column('cover_face_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    # a plain ALTER TABLE on both (SQLite >= 3.35): a batch copy of identities would cascade-delete every face
    op.drop_column('identities', 'cover_face_id')
