"""cumulative certainty histogram in summary_main, and the summaries filled

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-11 10:00:00.000000

summary_main's certainty histogram becomes cumulative: cert_<n|labelled|correct>_ge_<k> counts
the items with certainty >= grid[k] (k = m1: any certainty), so that a split at one threshold
sums 3 columns instead of 100 bins. Stored counts are converted in place (suffix sums, one
UPDATE), then the columns renamed; an empty table is simply made anew (306 renames cost SQLite
seconds, and every new database passes here). Then the jobs stored before the summaries existed
are summarized (store.backfills.backfill, by the current code: it belongs to the latest summary
migration).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

NAMES = ("n", "labelled", "correct")
KS = range(-1, 101)  # frozen at this revision: the 0.01 certainty grid and "any"


def _k(k: int) -> str:
    return "m1" if k < 0 else str(k)


def _update(assignments: dict[str, str]) -> None:
    op.execute(sa.text("UPDATE summary_main SET " + ", ".join(f"{c} = {e}" for c, e in assignments.items())))


def _rename(old: str, new: str) -> None:
    for name in NAMES:
        for k in KS:
            op.execute(sa.text(f"ALTER TABLE summary_main RENAME COLUMN {old.format(name=name, k=_k(k))} "
                               f"TO {new.format(name=name, k=_k(k))}"))


def _empty() -> bool:
    return op.get_bind().execute(sa.text("SELECT 1 FROM summary_main LIMIT 1")).first() is None


def _recreate(certainty: str) -> None:
    """summary_main made anew, empty, with the certainty columns named by `certainty`."""
    main = ["items", *(f"w{w}_l{label}" for w in "abtn" for label in "abtn"), "brier_n", "pos_both", "pos_agree",
            "calls_first", "calls_second", "calls_tie", "len_pairs", "len_pairs_longer", "len_decided",
            "len_decided_longer", "len_labelled", "len_labelled_longer", "abstained", "kept", "kept_correct",
            *(f"ece_{name}_{b}" for b in range(10) for name in ("n", "correct"))]
    certainty_columns = [certainty.format(name=name, k=_k(k)) for k in KS for name in NAMES]
    floats = ["brier_sum", *(f"ece_confidence_{b}" for b in range(10))]
    op.drop_table('summary_main')
    op.create_table(
        'summary_main',
        sa.Column('job_id', sa.String(length=36), sa.ForeignKey('jobs.id'), primary_key=True),
        sa.Column('group_key', sa.String(length=255), primary_key=True),
        sa.Column('group_value', sa.String(length=255), primary_key=True),
        sa.Column('hour', sa.Integer(), primary_key=True),
        sa.Column('profile', sa.String(length=255), primary_key=True),
        sa.Column('model', sa.String(length=255), primary_key=True),
        *(sa.Column(c, sa.Integer(), nullable=False, server_default='0') for c in (*main, *certainty_columns)),
        *(sa.Column(c, sa.Float(), nullable=False, server_default='0') for c in floats))


def upgrade() -> None:
    if _empty():
        _recreate("cert_{name}_ge_{k}")
    else:
        # Every right-hand side reads the row as it was: suffix sums of the per-bin counts.
        _update({f"cert_{name}_{_k(k)}": " + ".join(f"cert_{name}_{_k(j)}" for j in KS if j >= k)
                 for name in NAMES for k in KS})
        _rename("cert_{name}_{k}", "cert_{name}_ge_{k}")

    from store.backfills import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    if _empty():
        _recreate("cert_{name}_{k}")
        return
    _update({f"cert_{name}_ge_{_k(k)}": f"cert_{name}_ge_{_k(k)}" + (f" - cert_{name}_ge_{_k(k + 1)}" if k < 100 else "")
             for name in NAMES for k in KS})
    _rename("cert_{name}_ge_{k}", "cert_{name}_{k}")
