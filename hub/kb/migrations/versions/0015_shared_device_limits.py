"""Per-device limits and fair hand-out hold across hub processes sharing a database: what each device stores per
minute is counted in the database (device_intake_minutes, summed over the last hour under the device's row lock
in the transaction that stores a sample), and each device's latest hand-out turn is a column of devices, a
counter every process advances. Before, each process counted image bytes and turns in memory: a device spreading
its samples over N hubs stored up to N hourly image budgets, and each hub went round the devices on its own.

The counts start at this revision: in the hour after the upgrade, the hourly limits do not see what was stored
before it.

Revision ID: 0015
Revises: 0014
"""

from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('device_intake_minutes',
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('minute', sa.BigInteger(), nullable=False),
    sa.Column('samples', sa.Integer(), nullable=False),
    sa.Column('image_bytes', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('device_id', 'minute')
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_served', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_index('ix_devices_last_served', ['last_served'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_last_served')
        batch_op.drop_column('last_served')
    op.drop_table('device_intake_minutes')
