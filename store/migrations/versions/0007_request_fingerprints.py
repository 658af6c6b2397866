"""request fingerprints for Idempotency-Key replays; summaries without a metadata key ""

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-20 10:00:00.000000

jobs.request_fingerprint: SHA-256 of the request a job was made from (store.repo
request_fingerprint), so that a replayed Idempotency-Key with another request is refused. The jobs
stored before that have a key get it from their stored items, profile and inputs (the same
function). Then the jobs whose summaries grouped a metadata key "" are summarized anew without it
(store.backfills.rebuild_empty_key_jobs): those rows were read as part of every total.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from store.backfills import fingerprint_keyed_jobs, rebuild_empty_key_jobs

    op.add_column('jobs', sa.Column('request_fingerprint', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    fingerprint_keyed_jobs(conn)
    rebuild_empty_key_jobs(conn)


def downgrade() -> None:
    # A plain ALTER TABLE DROP COLUMN (SQLite 3.35+): batch mode would copy the jobs table, which
    # the other tables' foreign keys refuse.
    op.drop_column('jobs', 'request_fingerprint')
