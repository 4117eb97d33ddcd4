"""Bundles keep their target and a copy of their archive, so hubs sharing the database but not a disk serve each
other's bundles.

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bundles') as batch:
        batch.add_column(sa.Column('target', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('archive', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('bundles') as batch:
        batch.drop_column('archive')
        batch.drop_column('target')
