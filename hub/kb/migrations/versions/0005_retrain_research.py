"""A retrain run remembers whether the operator asked for a re-search (new plan and tau) instead of keeping them.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('retrain_runs') as batch:
        batch.add_column(sa.Column('research', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('retrain_runs') as batch:
        batch.drop_column('research')
