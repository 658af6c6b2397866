"""verdict summaries for the dashboard statistics

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-10 10:00:00.000000

Adds the per-verdict stat columns, the jobs' group plan and the summary tables
(store.models). Migration 0004 reshapes summary_main and fills the summaries for the verdicts
already stored (the fill runs the current code, so it belongs to the latest summary migration).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

STAT_COLUMNS = (
    ("stat_certainty", sa.Float()), ("stat_certainty_bin", sa.Integer()), ("stat_confidence", sa.Float()),
    ("stat_lambda_bin", sa.Integer()), ("stat_ece_bin", sa.Integer()), ("stat_p_a", sa.Float()),
    ("stat_position", sa.Integer()), ("stat_longer", sa.Integer()), ("calls_first", sa.Integer()),
    ("calls_second", sa.Integer()), ("calls_tie", sa.Integer()), ("group_json", sa.Text()),
)


def _summary_key() -> list[sa.Column[Any]]:  # Column[Any]: string and integer columns
    return [
        sa.Column('job_id', sa.String(length=36), sa.ForeignKey('jobs.id'), primary_key=True),
        sa.Column('group_key', sa.String(length=255), primary_key=True),
        sa.Column('group_value', sa.String(length=255), primary_key=True),
        sa.Column('hour', sa.Integer(), primary_key=True),
        sa.Column('profile', sa.String(length=255), primary_key=True),
        sa.Column('model', sa.String(length=255), primary_key=True),
    ]


def _counts(*names: str) -> list[sa.Column[int]]:
    return [sa.Column(name, sa.Integer(), nullable=False, server_default='0') for name in names]


def upgrade() -> None:
    # The field lists as they are at this revision (calibration.from_counts), frozen here so that
    # the revision keeps meaning what it meant.
    confusion = [f"w{w}_l{label}" for w in "abtn" for label in "abtn"]
    main = ["items", *confusion, "brier_n", "pos_both", "pos_agree", "calls_first", "calls_second", "calls_tie",
            "len_pairs", "len_pairs_longer", "len_decided", "len_decided_longer", "len_labelled",
            "len_labelled_longer", "abstained", "kept", "kept_correct"]
    ece = [f"ece_{name}_{b}" for b in range(10) for name in ("n", "correct")]
    certainty = [f"cert_{name}_{'m1' if k < 0 else k}" for k in range(-1, 101) for name in ("n", "labelled", "correct")]
    floats = ["brier_sum", *(f"ece_confidence_{b}" for b in range(10))]
    cells = [f"w{w}_l{label}" for w in "abtn" for label in "abt"]

    for name, type_ in STAT_COLUMNS:
        op.add_column('verdicts', sa.Column(name, type_, nullable=True))
    op.add_column('jobs', sa.Column('summary_keys', sa.Text(), nullable=True))
    op.create_table('summary_main', *_summary_key(), *_counts(*main, *ece, *certainty),
                    *(sa.Column(name, sa.Float(), nullable=False, server_default='0') for name in floats))
    op.create_table('summary_lambda', *_summary_key(),
                    sa.Column('lambda_bin', sa.SmallInteger(), primary_key=True),
                    *_counts("n_decided", "n_errors"))
    op.create_table('summary_bpde', *_summary_key(),
                    sa.Column('bpde_null', sa.SmallInteger(), primary_key=True),
                    sa.Column('bpde', sa.Float(), primary_key=True),
                    *_counts(*cells))
    op.create_table('summary_bpde_chunk', *_summary_key(),
                    sa.Column('bpde_null', sa.SmallInteger(), primary_key=True),
                    sa.Column('bpde', sa.Float(), primary_key=True),
                    sa.Column('chunk', sa.Integer(), primary_key=True),
                    *_counts(*cells))
    op.create_table('summary_overflow',
                    sa.Column('job_id', sa.String(length=36), sa.ForeignKey('jobs.id'), primary_key=True),
                    sa.Column('group_key', sa.String(length=255), primary_key=True))


def downgrade() -> None:
    for table in ('summary_overflow', 'summary_bpde_chunk', 'summary_bpde', 'summary_lambda', 'summary_main'):
        op.drop_table(table)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('summary_keys')
    with op.batch_alter_table('verdicts', schema=None) as batch_op:
        for name, _ in reversed(STAT_COLUMNS):
            batch_op.drop_column(name)
