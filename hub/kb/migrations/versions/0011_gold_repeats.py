"""An annotator who has seen every gold sample is given one again, so they stay checked: an assignment carries its
repeat number, and (sample, annotator, repeat) is unique instead of (sample, annotator). Rows from before are the
first time (0).

Revision ID: 0011
Revises: 0010
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('assignments') as batch:
        batch.add_column(sa.Column('repeat_no', sa.Integer(), server_default='0', nullable=False))
        batch.drop_constraint('uq_assignment_sample_annotator', type_='unique')
        batch.create_unique_constraint('uq_assignment_sample_annotator_repeat',
                                       ['sample_id', 'annotator_id', 'repeat_no'])


def downgrade() -> None:
    repeats = 'SELECT id FROM assignments WHERE repeat_no > 0'  # the gold re-checks cannot stay under the old rule
    op.execute(f'DELETE FROM answers WHERE task_id IN ({repeats})')
    op.execute(f'DELETE FROM task_events WHERE task_id IN ({repeats})')
    op.execute('DELETE FROM assignments WHERE repeat_no > 0')
    with op.batch_alter_table('assignments') as batch:
        batch.drop_constraint('uq_assignment_sample_annotator_repeat', type_='unique')
        batch.create_unique_constraint('uq_assignment_sample_annotator', ['sample_id', 'annotator_id'])
        batch.drop_column('repeat_no')
