"""Budgets and cost columns: jobs.max_cost_usd, the budget_reservations table, and the verdicts'
cost inputs (input_tokens, cached_input_tokens, saved_batch_usd, saved_cache_usd)

Revision ID: 0010
Revises: 0009
Create Date: 2027-02-12 10:00:00.000000

Existing jobs have no budget; existing verdicts have null cost inputs beside their n_calls and
cost_usd (the reports then count their input tokens as 0 and their cached share as unknown).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # the column types autogenerate names
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None
VERDICT_COLUMNS = (('input_tokens', sa.Integer), ('cached_input_tokens', sa.Integer),
                   ('saved_batch_usd', sa.Float), ('saved_cache_usd', sa.Float))


def upgrade() -> None:
    # Plain ALTER TABLE (as 0007): batch mode would copy the jobs table, which the other tables'
    # foreign keys refuse.
    op.add_column('jobs', sa.Column('max_cost_usd', sa.Float(), nullable=True))
    for name, kind in VERDICT_COLUMNS:
        op.add_column('verdicts', sa.Column(name, kind(), nullable=True))
    op.create_table(
        'budget_reservations',
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('batch_start', sa.Integer(), nullable=False),
        sa.Column('usd', sa.Float(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.PrimaryKeyConstraint('job_id', 'batch_start'),
    )


def downgrade() -> None:
    op.drop_table('budget_reservations')
    for name, _ in reversed(VERDICT_COLUMNS):
        op.drop_column('verdicts', name)
    op.drop_column('jobs', 'max_cost_usd')
