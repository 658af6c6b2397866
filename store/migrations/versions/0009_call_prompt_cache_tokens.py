"""calls.cached_input_tokens and calls.cache_write_tokens: what the provider's prompt cache served

Revision ID: 0009
Revises: 0008
Create Date: 2027-02-20 10:00:00.000000

Additive: two nullable columns, null for every existing call (no provider said; judge.records.Call).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cached_input_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cache_write_tokens', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('cache_write_tokens')
        batch_op.drop_column('cached_input_tokens')
