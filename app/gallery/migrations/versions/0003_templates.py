"""identity templates: one normalised mean embedding per identity and model version

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 11:00:00
"""
import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('identity_id', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('vector', sa.LargeBinary(), nullable=False),
    sa.Column('n_faces', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['identity_id'], ['identities.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('identity_id', 'model_version', name='uq_template_identity_version')
    )
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_templates_model_version'), ['model_version'], unique=False)
    # templates of an existing gallery, from its stored embeddings
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT f.identity_id, e.model_version, e.vector FROM embeddings e JOIN faces f ON f.id = e.face_id "
        "ORDER BY f.identity_id, e.model_version")).all()
    groups: dict = {}
    for identity_id, version, blob in rows:
        groups.setdefault((identity_id, version), []).append(np.frombuffer(blob, dtype='<f4'))
    table = sa.table('templates', sa.column('identity_id', sa.Integer), sa.column('model_version', sa.String),
                     sa.column('vector', sa.LargeBinary), sa.column('n_faces', sa.Integer),
                     sa.column('updated_at', sa.DateTime(timezone=True)))
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    from model.templates import template_of  # the one rule (model/templates.py)
    values = [{"identity_id": i, "model_version": ver, "n_faces": len(vs), "updated_at": now,
               "vector": template_of(np.stack(vs)).astype('<f4').tobytes()}
              for (i, ver), vs in groups.items()]
    if values:
        op.bulk_insert(table, values)


def downgrade() -> None:
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_templates_model_version'))
    op.drop_table('templates')
