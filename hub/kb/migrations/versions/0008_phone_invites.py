"""Issue 20: phones' single-use onboarding links in the knowledge base (any hub process redeems them, once).

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('phone_invites',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('expires_at', sa.Double(), nullable=False),
    sa.Column('redeemed_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('token_hash')
    )
    op.create_index(op.f('ix_phone_invites_expires_at'), 'phone_invites', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_phone_invites_expires_at'), table_name='phone_invites')
    op.drop_table('phone_invites')
