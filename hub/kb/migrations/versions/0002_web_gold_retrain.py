"""Web accounts, annotator pauses, gold items, task events (skip / can't tell), model versions, retrain runs.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('web_accounts',
    sa.Column('annotator_id', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=256), nullable=True),
    sa.Column('invite_hash', sa.String(length=64), nullable=True),
    sa.Column('invite_expires', sa.Double(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], ),
    sa.PrimaryKeyConstraint('annotator_id'),
    sa.UniqueConstraint('invite_hash')
    )
    op.create_table('annotator_pauses',
    sa.Column('annotator_id', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=512), nullable=False),
    sa.Column('paused_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], ),
    sa.PrimaryKeyConstraint('annotator_id')
    )
    op.create_table('gold_items',
    sa.Column('sample_id', sa.String(length=36), nullable=False),
    sa.Column('class_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], ),
    sa.PrimaryKeyConstraint('sample_id')
    )
    op.create_table('task_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=False),
    sa.Column('sample_id', sa.String(length=36), nullable=False),
    sa.Column('annotator_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('latency_s', sa.Double(), nullable=False),
    sa.Column('at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], ),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], ),
    sa.ForeignKeyConstraint(['task_id'], ['assignments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id')
    )
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_events_sample_id'), ['sample_id'], unique=False)
    op.create_table('model_versions',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('keras_path', sa.String(length=1024), nullable=False),
    sa.Column('bundle_dir', sa.String(length=1024), nullable=False),
    sa.Column('tau', sa.Double(), nullable=False),
    sa.Column('temperature', sa.Double(), nullable=False),
    sa.Column('retrain_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version')
    )
    op.create_table('retrain_runs',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model_name', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('requested_at', sa.Double(), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=True),
    sa.Column('finished_at', sa.Double(), nullable=True),
    sa.Column('from_version', sa.String(length=64), nullable=False),
    sa.Column('to_version', sa.String(length=64), nullable=True),
    sa.Column('cutoff', sa.Double(), nullable=False),
    sa.Column('samples_used', sa.Integer(), nullable=False),
    sa.Column('filtered_out', sa.Integer(), nullable=False),
    sa.Column('metrics', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('retrain_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_retrain_runs_model_name'), ['model_name'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('retrain_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_retrain_runs_model_name'))
    op.drop_table('retrain_runs')
    op.drop_table('model_versions')
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_events_sample_id'))
    op.drop_table('task_events')
    op.drop_table('gold_items')
    op.drop_table('annotator_pauses')
    op.drop_table('web_accounts')
