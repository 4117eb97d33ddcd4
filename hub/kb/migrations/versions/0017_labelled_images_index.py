"""Images of answered samples past the newest `knowledge_base.keep_labelled_images` of their model are removed
(hgen.hub.kb.retention_labelled): its queries read a partial index of the devices' answered samples that still hold
an image, by model and closed_at, so a round walks a model's newest N and its oldest batch, never every sample the
knowledge base keeps (expired ones, gold ones, and the answered ones already emptied).

Revision ID: 0017
Revises: 0016
"""

from alembic import op
import sqlalchemy as sa


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

LABELLED_IMAGES = ("status IN ('answered', 'partial') AND transport != 'gold' "
                   "AND (image_path IS NOT NULL OR length(image_bytes) > 0)")  # models.LABELLED_IMAGES
LABELLED_IMAGES_SQLITE = "+" + LABELLED_IMAGES  # models.LABELLED_IMAGES_SQLITE (keeps SQLite off the status index)


def upgrade() -> None:
    op.create_index('ix_samples_labelled_images', 'samples', ['bundle_name', 'closed_at'], unique=False,
                    sqlite_where=sa.text(LABELLED_IMAGES_SQLITE), postgresql_where=sa.text(LABELLED_IMAGES))


def downgrade() -> None:
    op.drop_index('ix_samples_labelled_images', table_name='samples')
