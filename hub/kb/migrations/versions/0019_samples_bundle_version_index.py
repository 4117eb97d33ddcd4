"""A model version's newest samples by index: the operator page compares how often people agree with the deployed
version's sure answers and the version before's (`hgen.hub.retrain.watch`), reading each version's latest samples.
Without it every page load read every sample and reply the hub kept (0.5 s at 200,000 replies, per model).

Revision ID: 0019
Revises: 0018
"""

from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the version first: an index led by bundle_name alone was taken by SQLite for the retrain trigger's query
    op.create_index('ix_samples_bundle_version', 'samples', ['bundle_version', 'bundle_name', 'received_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_samples_bundle_version', table_name='samples')
