"""An index of the verdicts by certainty bin, for the certainty split at an off-grid threshold

Revision ID: 0015
Revises: 0014
Create Date: 2027-02-24 10:00:00.000000

GET /v1/stats/agreement?threshold=0.837 (a threshold off the 0.01 grid) reads the cumulative
certainty histogram from the summaries, plus the selection's verdicts in the one certainty bin
the threshold falls in (store.stats `splits`). Owner-wide, nothing else narrows that read: without
this index PostgreSQL scans every verdict of the table to find the ~1% in the bin; with it, a
bitmap scan reads only those rows (100,000 verdicts: ~4,650 heap pages to ~950). The job id second:
for one job's report SQLite's planner takes this index over the job's own, and with the job in it
reads only that job's verdicts in the bin.
"""

from __future__ import annotations

from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_verdicts_certainty_bin', 'verdicts', ['stat_certainty_bin', 'job_id'])


def downgrade() -> None:
    op.drop_index('ix_verdicts_certainty_bin', table_name='verdicts')
