"""Issue 16: a per-account session epoch (logout, reset, role change and pause end every session), login
failures counted per account, and indexes for the assignment timeout and the per-person cap on open tasks.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('web_accounts') as batch:
        batch.add_column(sa.Column('session_epoch', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('login_failures') as batch:
        batch.create_index('ix_login_failures_account_at', ['account', 'at'], unique=False)
    with op.batch_alter_table('assignments') as batch:
        batch.create_index('ix_assignments_status_assigned', ['status', 'assigned_at'], unique=False)
        batch.create_index('ix_assignments_annotator_status', ['annotator_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('assignments') as batch:
        batch.drop_index('ix_assignments_annotator_status')
        batch.drop_index('ix_assignments_status_assigned')
    with op.batch_alter_table('login_failures') as batch:
        batch.drop_index('ix_login_failures_account_at')
    with op.batch_alter_table('web_accounts') as batch:
        batch.drop_column('session_epoch')
