"""job_pages.page_key indexed: a new job's Idempotency-Key is checked against its owner's page keys

Revision ID: 0018
Revises: 0017
Create Date: 2027-03-09 10:00:00.000000

SPEC 8: the same Idempotency-Key on another route is a 409. A page's key (POST /v1/jobs/{id}/items)
sent again to create a job was accepted; POST /v1/jobs now looks it up among the owner's pages,
which needs the key alone indexed (the unique constraint leads with job_id).
"""

from __future__ import annotations

from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_job_pages_page_key', 'job_pages', ['page_key'])


def downgrade() -> None:
    op.drop_index('ix_job_pages_page_key', table_name='job_pages')
