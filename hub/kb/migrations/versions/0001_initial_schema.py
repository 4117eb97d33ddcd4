"""Initial schema: devices, annotators, batches, samples, assignments (tasks), answers, replies, bundles.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 19:00:17.141182
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('annotators',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('bundles',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('published_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version')
    )
    op.create_table('devices',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('registered_at', sa.Double(), nullable=False),
    sa.Column('labour_spent', sa.Double(), nullable=False),
    sa.Column('samples_replied', sa.Integer(), nullable=False),
    sa.Column('last_seen', sa.Double(), nullable=True),
    sa.Column('last_status', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('batches',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('m', sa.Integer(), nullable=False),
    sa.Column('deadline', sa.Double(), nullable=False),
    sa.Column('labour_budget', sa.Double(), nullable=False),
    sa.Column('labour_reserved', sa.Double(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('samples',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('bundle_name', sa.String(length=128), nullable=False),
    sa.Column('bundle_version', sa.String(length=64), nullable=False),
    sa.Column('captured_at', sa.Double(), nullable=True),
    sa.Column('hdnn_kind', sa.Integer(), nullable=False),
    sa.Column('image_format', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('channels', sa.Integer(), nullable=False),
    sa.Column('image_bytes', sa.LargeBinary(), nullable=True),
    sa.Column('image_path', sa.String(length=512), nullable=True),
    sa.Column('model_output', sa.LargeBinary(), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=False),
    sa.Column('difficulty', sa.Double(), nullable=False),
    sa.Column('labour_reserved', sa.Double(), nullable=False),
    sa.Column('m', sa.Integer(), nullable=False),
    sa.Column('aggregator', sa.String(length=64), nullable=False),
    sa.Column('transport', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('assigned_count', sa.Integer(), nullable=False),
    sa.Column('answer_count', sa.Integer(), nullable=False),
    sa.Column('deadline', sa.Double(), nullable=False),
    sa.Column('received_at', sa.Double(), nullable=False),
    sa.Column('closed_at', sa.Double(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], ),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.create_index('ix_samples_status_deadline', ['status', 'deadline'], unique=False)
        batch_op.create_index('ix_samples_status_received', ['status', 'received_at'], unique=False)

    op.create_table('assignments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('sample_id', sa.String(length=36), nullable=False),
    sa.Column('annotator_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('assigned_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], ),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sample_id', 'annotator_id', name='uq_assignment_sample_annotator')
    )
    op.create_table('replies',
    sa.Column('sample_id', sa.String(length=36), nullable=False),
    sa.Column('reply_id', sa.String(length=36), nullable=False),
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('aggregator', sa.String(length=64), nullable=False),
    sa.Column('class_id', sa.Integer(), nullable=True),
    sa.Column('labour', sa.Double(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('transport', sa.String(length=16), nullable=False),
    sa.Column('delivered', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], ),
    sa.PrimaryKeyConstraint('sample_id'),
    sa.UniqueConstraint('reply_id')
    )
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.create_index('ix_replies_transport_delivered', ['transport', 'delivered'], unique=False)

    op.create_table('answers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=False),
    sa.Column('sample_id', sa.String(length=36), nullable=False),
    sa.Column('annotator_id', sa.String(length=128), nullable=False),
    sa.Column('class_id', sa.Integer(), nullable=True),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('latency_s', sa.Double(), nullable=False),
    sa.Column('operations', sa.Integer(), nullable=False),
    sa.Column('simulated', sa.Boolean(), nullable=False),
    sa.Column('submitted_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], ),
    sa.ForeignKeyConstraint(['sample_id'], ['samples.id'], ),
    sa.ForeignKeyConstraint(['task_id'], ['assignments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id')
    )
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_answers_sample_id'), ['sample_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('answers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_answers_sample_id'))

    op.drop_table('answers')
    with op.batch_alter_table('replies', schema=None) as batch_op:
        batch_op.drop_index('ix_replies_transport_delivered')

    op.drop_table('replies')
    op.drop_table('assignments')
    with op.batch_alter_table('samples', schema=None) as batch_op:
        batch_op.drop_index('ix_samples_status_received')
        batch_op.drop_index('ix_samples_status_deadline')

    op.drop_table('samples')
    op.drop_table('batches')
    op.drop_table('devices')
    op.drop_table('bundles')
    op.drop_table('annotators')
