"""Batch mode: provider_batches, provider_batch_requests, provider_batch_leases; calls.saved_batch_usd

Revision ID: 0012
Revises: 0011
Create Date: 2027-02-20 10:00:00.000000

A batch-mode job's provider batches (their ids stored before anything else can fail), each
request's custom_id with the call it is and, once the batch ended, its answer; and the lease that
lets one worker at a time tick the job (worker/provider_batches.py).
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # the column types autogenerate names
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('saved_batch_usd', sa.Float(), nullable=True))
    op.create_table(
        'provider_batches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('batch_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column('input_file_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('n_requests', sa.Integer(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_provider_batches_job_status', 'provider_batches', ['job_id', 'status'], unique=False)
    op.create_table(
        'provider_batch_requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('batch_row', sa.Integer(), nullable=False),
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('custom_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('order', sqlmodel.sql.sqltypes.AutoString(length=2), nullable=False),
        sa.Column('sample', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('stage', sa.Integer(), nullable=False),
        sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('raw', sa.Text(), nullable=True),
        sa.Column('input_tokens', sa.Integer(), nullable=True),
        sa.Column('output_tokens', sa.Integer(), nullable=True),
        sa.Column('truncated_from', sa.Integer(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['batch_row'], ['provider_batches.id']),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('batch_row', 'custom_id', name='uq_provider_batch_requests_row_custom_id'),
    )
    op.create_index('ix_provider_batch_requests_job', 'provider_batch_requests', ['job_id'], unique=False)
    op.create_table(
        'provider_batch_leases',
        sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id']),
        sa.PrimaryKeyConstraint('job_id'),
    )


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('saved_batch_usd')
    op.drop_table('provider_batch_leases')
    op.drop_index('ix_provider_batch_requests_job', table_name='provider_batch_requests')
    op.drop_table('provider_batch_requests')
    op.drop_index('ix_provider_batches_job_status', table_name='provider_batches')
    op.drop_table('provider_batches')
