"""Cascades: verdicts.stage and verdicts.stages_json, calls.stage in the calls' unique key

Revision ID: 0008
Revises: 0007
Create Date: 2027-02-10 10:00:00.000000

A cascade (SPEC 2.1) judges one item with several stages, each making calls in both orders: a
call is unique on (job, item, stage, order, sample). Existing calls are stage 0; existing verdicts
have null stage and stages (a single judge).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('stages_json', sa.Text(), nullable=True))
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.Integer(), nullable=False, server_default='0'))
        batch_op.drop_constraint('uq_calls_job_item_order_sample', type_='unique')
        batch_op.create_unique_constraint('uq_calls_job_item_stage_order_sample',
                                          ['job_id', 'item_id', 'stage', 'order', 'sample'])


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_constraint('uq_calls_job_item_stage_order_sample', type_='unique')
        batch_op.create_unique_constraint('uq_calls_job_item_order_sample', ['job_id', 'item_id', 'order', 'sample'])
        batch_op.drop_column('stage')
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        batch_op.drop_column('stages_json')
        batch_op.drop_column('stage')
