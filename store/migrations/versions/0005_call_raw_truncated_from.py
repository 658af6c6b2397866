"""calls.raw_truncated_from: the full length of an answer whose raw text was cut

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-20 10:00:00.000000

Additive: one nullable column, null for every existing call (their raw text is whole).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('raw_truncated_from', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('raw_truncated_from')
