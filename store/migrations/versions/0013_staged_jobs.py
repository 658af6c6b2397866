"""Staged jobs: jobs.open_for_items, jobs.plan_state, job_pages

Revision ID: 0013
Revises: 0012
Create Date: 2027-03-01 10:00:00.000000

A job created empty and filled in pages (store/pages.py, POST /v1/jobs/{id}/items then /start):
whether it still takes pages, the metadata group names its pages hold so far, and each page sent
under an Idempotency-Key (where its items went and their fingerprint).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # the column types autogenerate names
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE (as 0007 and 0010): batch mode would copy the jobs table, which the other
    # tables' foreign keys name.
    op.add_column('jobs', sa.Column('open_for_items', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('jobs', sa.Column('plan_state', sa.Text(), nullable=True))
    op.create_table(
        'job_pages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('page_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column('first_position', sa.Integer(), nullable=False),
        sa.Column('n_items', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_id', 'page_key', name='uq_job_pages_job_key'),
    )


def downgrade() -> None:
    op.drop_table('job_pages')
    op.drop_column('jobs', 'plan_state')
    op.drop_column('jobs', 'open_for_items')
