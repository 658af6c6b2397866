"""The human queue: a partial index of the verdicts waiting for a human label

Revision ID: 0009
Revises: 0008
Create Date: 2027-02-12 10:00:00.000000

GET /v1/jobs/{id}/queue lists a job's abstained, unlabelled verdicts, highest BPDE first, and
GET /v1/jobs/{id} counts them (store.queue). The index holds only those rows, on (job_id, bpde
DESC, position): a page or the count reads the job's waiting items, never all its verdicts, and a
label leaves the index with the item.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# As store.models.WAITING compiles on each dialect (abstained = 1 on SQLite, = true on PostgreSQL):
# SQLite uses a partial index only for queries that repeat its terms.
WAITING = sa.and_(sa.column('abstained') == sa.true(), sa.column('human_label').is_(None))


def upgrade() -> None:
    op.create_index('ix_verdicts_waiting', 'verdicts', ['job_id', sa.text('bpde DESC'), 'position'],
                    sqlite_where=WAITING, postgresql_where=WAITING)


def downgrade() -> None:
    op.drop_index('ix_verdicts_waiting', table_name='verdicts')
