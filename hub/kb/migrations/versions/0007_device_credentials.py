"""Issue 15: device credentials (a slow hash of each device's secret, its target, revocation time).

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_credentials',
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('secret_hash', sa.String(length=256), nullable=True),
    sa.Column('target', sa.String(length=64), nullable=True),
    sa.Column('issued_at', sa.Double(), nullable=False),
    sa.Column('revoked_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('device_id')
    )


def downgrade() -> None:
    op.drop_table('device_credentials')
