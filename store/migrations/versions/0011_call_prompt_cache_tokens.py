"""calls.cached_input_tokens, cache_write_tokens and saved_cache_usd: what the provider's prompt cache served

Revision ID: 0011
Revises: 0010
Create Date: 2027-02-20 10:00:00.000000

Additive: three nullable columns, null for every existing call (no provider said; judge.records.Call).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cached_input_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cache_write_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('saved_cache_usd', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('saved_cache_usd')
        batch_op.drop_column('cache_write_tokens')
        batch_op.drop_column('cached_input_tokens')
