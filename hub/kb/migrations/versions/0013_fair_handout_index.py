"""Tasks are handed out fairly across devices (each device's oldest open sample before any device's second) and a
device's open samples are capped (limits.max_open_samples_per_device): both read a partial index of the devices'
open samples by (device_id, received_at), gold excluded. It holds only what waits for people, so a device's
oldest open sample is one index step away however many closed samples it has; before, hand-out went oldest-first
across the hub and one device's 5,000 samples came before every other device's.

Revision ID: 0013
Revises: 0012
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

OPEN_DEVICE_SAMPLES = "status IN ('received', 'assigned') AND transport != 'gold'"  # models.OPEN_DEVICE_SAMPLES


def upgrade() -> None:
    where = sa.text(OPEN_DEVICE_SAMPLES)
    op.create_index('ix_samples_open_device', 'samples', ['device_id', 'received_at'], unique=False,
                    sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index('ix_samples_open_device', table_name='samples')
