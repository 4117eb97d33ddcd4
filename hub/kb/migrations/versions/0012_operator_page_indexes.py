"""Indexes the operator page reads through, so a page load does bounded work however long the hub has run: an
annotator's answers (newest first: the window agreement and median time are computed over) and task events, the
answers of the last hour, a device's newest sample (its bundle) and a device's batch budgets (sum and "unlimited"
read from the index alone). Before, each of these scanned a whole table while holding SQLite's write lock.

Revision ID: 0012
Revises: 0011
"""

from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

INDEXES = (  # table, index, columns
    ('answers', 'ix_answers_annotator_id', ['annotator_id', 'id']),
    ('answers', 'ix_answers_submitted_at', ['submitted_at']),
    ('task_events', 'ix_task_events_annotator_id', ['annotator_id']),
    ('samples', 'ix_samples_device_received', ['device_id', 'received_at']),
    ('batches', 'ix_batches_device_budget', ['device_id', 'labour_budget']),
)


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table) as batch:
            batch.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(INDEXES):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(name)
