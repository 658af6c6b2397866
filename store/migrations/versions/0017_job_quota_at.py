"""jobs.quota_at: from when a job counts in its owner's daily quota

Revision ID: 0017
Revises: 0016
Create Date: 2027-03-08 10:00:00.000000

The daily quota counted the jobs created in the last 24 h, so a staged job created empty and
filled (or started) a day later counted in no window: its items and cost passed any quota. A job
now counts from `quota_at`: its creation, moved to the time of each page and of its start. The
older rows get their created_at; the index serves the quota's query as ix_jobs_owner_created did.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # the column types autogenerate names
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (as 0013): batch mode would copy the jobs table, which other tables' foreign keys name.
    op.add_column('jobs', sa.Column('quota_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.execute("UPDATE jobs SET quota_at = created_at")
    op.create_index('ix_jobs_owner_quota_at', 'jobs', ['owner', 'quota_at'])


def downgrade() -> None:
    op.drop_index('ix_jobs_owner_quota_at', table_name='jobs')
    op.drop_column('jobs', 'quota_at')
