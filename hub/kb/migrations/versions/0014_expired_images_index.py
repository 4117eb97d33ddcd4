"""Images of samples that expired unanswered are removed after knowledge_base.keep_unlabelled_images_days
(hgen.hub.kb.retention): the sweep reads a partial index of the expired samples that still hold an image, by
closed_at, so each batch is a few index steps however many samples (labelled ones, whose images stay, and expired
ones already emptied) the knowledge base keeps.

Revision ID: 0014
Revises: 0013
"""

from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

EXPIRED_IMAGES = "status = 'expired' AND (image_path IS NOT NULL OR length(image_bytes) > 0)"  # models.EXPIRED_IMAGES
EXPIRED_IMAGES_SQLITE = "+" + EXPIRED_IMAGES  # models.EXPIRED_IMAGES_SQLITE (keeps SQLite off the status index)


def upgrade() -> None:
    op.create_index('ix_samples_expired_images', 'samples', ['closed_at'], unique=False,
                    sqlite_where=sa.text(EXPIRED_IMAGES_SQLITE), postgresql_where=sa.text(EXPIRED_IMAGES))


def downgrade() -> None:
    op.drop_index('ix_samples_expired_images', table_name='samples')
