"""cumulative certainty histogram in summary_main, and the summaries filled

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-11 10:00:00.000000

summary_main's certainty histogram becomes cumulative (cert_<n|labelled|correct>_ge_<k>: items
with certainty >= grid[k]), so that a split at one threshold sums 3 columns instead of 100 bins.
The summaries are derived data: the tables are emptied, summary_main is rebuilt with the new
columns, and everything stored is summarized again by the current code (store.summaries.backfill).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

DERIVED_TABLES = ('summary_overflow', 'summary_bpde_chunk', 'summary_bpde', 'summary_lambda')


def _summary_main(certainty: Sequence[str]) -> None:
    # The field lists as they are at this revision, frozen here.
    confusion = [f"w{w}_l{label}" for w in "abtn" for label in "abtn"]
    main = ["items", *confusion, "brier_n", "pos_both", "pos_agree", "calls_first", "calls_second", "calls_tie",
            "len_pairs", "len_pairs_longer", "len_decided", "len_decided_longer", "len_labelled",
            "len_labelled_longer", "abstained", "kept", "kept_correct"]
    ece = [f"ece_{name}_{b}" for b in range(10) for name in ("n", "correct")]
    floats = ["brier_sum", *(f"ece_confidence_{b}" for b in range(10))]
    op.create_table(
        'summary_main',
        sa.Column('job_id', sa.String(length=36), sa.ForeignKey('jobs.id'), primary_key=True),
        sa.Column('group_key', sa.String(length=255), primary_key=True),
        sa.Column('group_value', sa.String(length=255), primary_key=True),
        sa.Column('hour', sa.Integer(), primary_key=True),
        sa.Column('profile', sa.String(length=255), primary_key=True),
        sa.Column('model', sa.String(length=255), primary_key=True),
        *(sa.Column(name, sa.Integer(), nullable=False, server_default='0') for name in (*main, *ece, *certainty)),
        *(sa.Column(name, sa.Float(), nullable=False, server_default='0') for name in floats))


def _certainty(infix: str) -> list[str]:
    return [f"cert_{name}_{infix}{'m1' if k < 0 else k}" for k in range(-1, 101)
            for name in ("n", "labelled", "correct")]


def upgrade() -> None:
    for table in DERIVED_TABLES:
        op.execute(sa.text(f"DELETE FROM {table}"))
    op.drop_table('summary_main')
    _summary_main(_certainty("ge_"))

    from store.summaries import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    # Revision 0003's code filled its summaries itself; after a downgrade they start empty.
    for table in DERIVED_TABLES:
        op.execute(sa.text(f"DELETE FROM {table}"))
    op.drop_table('summary_main')
    _summary_main(_certainty(""))
