"""unknown faces kept by choice and their clusters: unknown_clusters, unknown_faces (crop, box, source hash, time,
cluster, expiry), unknown_embeddings (one per face and model version); gallery_state.unknown_revision

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 20:30:00
"""
import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import VECTOR

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    vector = VECTOR() if op.get_bind().dialect.name == "postgresql" else sa.LargeBinary()
    op.create_table('unknown_clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dismissed', sa.Boolean(), nullable=False),
    sa.Column('suggested_identity_id', sa.Integer(), nullable=True),
    sa.Column('suggested_score', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['suggested_identity_id'], ['identities.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    op.create_table('unknown_faces',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('crop_png', sa.LargeBinary(), nullable=False),
    sa.Column('crop_size', sa.Integer(), nullable=False),
    sa.Column('crop_margin', sa.Integer(), nullable=False),
    sa.Column('source_sha256', sa.String(length=64), nullable=False),
    sa.Column('box', sa.JSON(), nullable=False),
    sa.Column('landmarks', sa.JSON(), nullable=False),
    sa.Column('detection_score', sa.Float(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['unknown_clusters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    op.create_index(op.f('ix_unknown_faces_cluster_id'), 'unknown_faces', ['cluster_id'], unique=False)
    op.create_index(op.f('ix_unknown_faces_expires_at'), 'unknown_faces', ['expires_at'], unique=False)
    op.create_table('unknown_embeddings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('face_id', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('vector', vector, nullable=False),
    sa.ForeignKeyConstraint(['face_id'], ['unknown_faces.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('face_id', 'model_version', name='uq_unknown_embedding_face_version')
    )
    op.create_index(op.f('ix_unknown_embeddings_face_id'), 'unknown_embeddings', ['face_id'], unique=False)
    op.create_index(op.f('ix_unknown_embeddings_model_version'), 'unknown_embeddings', ['model_version'],
                    unique=False)
    with op.batch_alter_table('gallery_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unknown_revision', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('gallery_state', schema=None) as batch_op:
        batch_op.drop_column('unknown_revision')
    op.drop_index(op.f('ix_unknown_embeddings_model_version'), table_name='unknown_embeddings')
    op.drop_index(op.f('ix_unknown_embeddings_face_id'), table_name='unknown_embeddings')
    op.drop_table('unknown_embeddings')
    op.drop_index(op.f('ix_unknown_faces_expires_at'), table_name='unknown_faces')
    op.drop_index(op.f('ix_unknown_faces_cluster_id'), table_name='unknown_faces')
    op.drop_table('unknown_faces')
    op.drop_table('unknown_clusters')
