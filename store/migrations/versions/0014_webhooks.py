"""Webhooks: webhook_secrets, webhook_events, webhook_deliveries

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 17:40:00.000000

Additive: three new tables (store/webhooks.py). A job's webhook event is written with the job
(status waiting), so jobs stored before have none.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # the column types autogenerate names
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_secrets',
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('ciphertext', sa.Text(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('owner'),
    )
    op.create_table(
        'webhook_events',
        sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('dispatched_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('lease_token', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('lease_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('ended_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('delivered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('job_id', name='uq_webhook_events_job'),
    )
    op.create_index('ix_webhook_events_status_due', 'webhook_events', ['status', 'next_attempt_at'], unique=False)
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('ok', sa.Boolean(), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('duration_ms', sa.Float(), nullable=True),
        sa.Column('response_snippet', sa.Text(), nullable=True),
        sa.Column('next_retry_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['webhook_events.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('event_id', 'attempt', name='uq_webhook_deliveries_event_attempt'),
    )
    op.create_index('ix_webhook_deliveries_job', 'webhook_deliveries', ['job_id', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_job', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('ix_webhook_events_status_due', table_name='webhook_events')
    op.drop_table('webhook_events')
    op.drop_table('webhook_secrets')
