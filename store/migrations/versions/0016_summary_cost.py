"""summary_cost: the verdicts' cost inputs summed per job, hour, profile and model

Revision ID: 0016
Revises: 0015
Create Date: 2027-03-01 10:00:00.000000

The reports' cost sections and the dashboard's cost per day read these sums instead of scanning
the verdict rows (store.stats). The verdicts stored before are summed here, in one INSERT ...
SELECT grouped by the hour of created_at as store.summaries.hour_of computes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

COST_INTS = ("items", "n_calls", "input_tokens", "cached_input_tokens", "cached_input_n", "saved_batch_n",
             "saved_cache_n")
COST_FLOATS = ("cost_usd", "saved_batch_usd", "saved_cache_usd")


def upgrade() -> None:
    op.create_table(
        'summary_cost',
        sa.Column('job_id', sa.String(length=36), sa.ForeignKey('jobs.id'), primary_key=True),
        sa.Column('group_key', sa.String(length=255), primary_key=True),
        sa.Column('group_value', sa.String(length=255), primary_key=True),
        sa.Column('hour', sa.Integer(), primary_key=True),
        sa.Column('profile', sa.String(length=255), primary_key=True),
        sa.Column('model', sa.String(length=255), primary_key=True),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default='0') for name in COST_INTS),
        *(sa.Column(name, sa.Float(), nullable=False, server_default='0') for name in COST_FLOATS),
    )
    if op.get_bind().dialect.name == 'postgresql':
        hour = "CAST(floor(extract(epoch FROM created_at) / 3600) AS INTEGER)"
    else:  # SQLite keeps created_at as UTC text
        hour = "CAST(strftime('%s', created_at) AS INTEGER) / 3600"
    op.execute(
        f"INSERT INTO summary_cost (job_id, group_key, group_value, hour, profile, model, {', '.join(COST_INTS)}, "
        f"{', '.join(COST_FLOATS)}) "
        f"SELECT job_id, '', '', {hour}, profile, model, COUNT(*), COALESCE(SUM(n_calls), 0), "
        "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_input_tokens), 0), COUNT(cached_input_tokens), "
        "COUNT(saved_batch_usd), COUNT(saved_cache_usd), COALESCE(SUM(cost_usd), 0), "
        "COALESCE(SUM(saved_batch_usd), 0), COALESCE(SUM(saved_cache_usd), 0) "
        f"FROM verdicts GROUP BY job_id, {hour}, profile, model")


def downgrade() -> None:
    op.drop_table('summary_cost')
