"""feedback: reports on faces ("is", "is_not", "nobody") with their crops; probes: faces of recent answers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 14:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _crop_columns() -> list:
    return [sa.Column('crop_png', sa.LargeBinary(), nullable=False),
            sa.Column('crop_size', sa.Integer(), nullable=False),
            sa.Column('crop_margin', sa.Integer(), nullable=False),
            sa.Column('source_sha256', sa.String(length=64), nullable=False),
            sa.Column('box', sa.JSON(), nullable=False),
            sa.Column('landmarks', sa.JSON(), nullable=False),
            sa.Column('detection_score', sa.Float(), nullable=False),
            sa.Column('model_version', sa.String(length=64), nullable=False)]


def upgrade() -> None:
    op.create_table('probes',
    sa.Column('id', sa.Integer(), nullable=False),
    *_crop_columns(),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('top_identity_id', sa.Integer(), nullable=True),
    sa.Column('top_score', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('probes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_probes_expires_at'), ['expires_at'], unique=False)
    op.create_table('feedback',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=True),
    sa.Column('answered_identity_id', sa.Integer(), nullable=True),
    sa.Column('answered_score', sa.Float(), nullable=True),
    sa.Column('probe_id', sa.Integer(), nullable=True),
    *_crop_columns(),
    sa.Column('reported_by', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['answered_identity_id'], ['identities.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_feedback_identity_id'), ['identity_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_identity_id'))
        batch_op.drop_index(batch_op.f('ix_feedback_kind'))
    op.drop_table('feedback')
    with op.batch_alter_table('probes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_probes_expires_at'))
    op.drop_table('probes')
