"""Whether a majority of the people asked stands behind a drawing (boxes, regions): a class became a retraining
label only with a strict majority of the m asked (a lone answer at the deadline, an even split: no label), while
every drawing was one, so one person's box around nothing, or one box of three people asked, was retrained on.
Replies made before this migration keep NULL and stay labels, as they were made.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('replies', sa.Column('agreed', sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column('replies', 'agreed')
