"""Bundles remember where devices fetch them (update notices carry it, also over MQTT).

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bundles') as batch:
        batch.add_column(sa.Column('fetch_uri', sa.String(length=1024), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('bundles') as batch:
        batch.drop_column('fetch_uri')
