"""Replies by the time they were made: the retrain trigger counts each model's human labels made since its last
retrain (`RetrainStore.new_label_count`) on every reply and every 5 s. Without this index SQLite read every sample
ever stored to find the few hundred new ones (the filter's columns sit past the inline image, so each row's image
pages too), and PostgreSQL every reply: a query that grew with the months a hub runs. With it, only the replies
since the cutoff are read.

Revision ID: 0016
Revises: 0015
"""

from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_replies_created_at', 'replies', ['created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_replies_created_at', table_name='replies')
