"""Device credentials keep a SHA-256 digest of the secret beside its PBKDF2 hash: the hub checks bearer tokens
against the digest, so a refused guess no longer costs it a slow hash (rows from before stay NULL until their
device's first verified call stores it).

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('device_credentials') as batch:
        batch.add_column(sa.Column('secret_digest', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('device_credentials') as batch:
        batch.drop_column('secret_digest')
