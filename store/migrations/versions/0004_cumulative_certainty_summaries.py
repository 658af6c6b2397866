"""cumulative certainty histogram in summary_main, and the summaries filled

Revision ID: 0004
Revises: 0003
Create Date: 2027-01-11 10:00:00.000000

summary_main's certainty histogram becomes cumulative: cert_<n|labelled|correct>_ge_<k> counts
the items with certainty >= grid[k] (k = m1: any certainty), so that a split at one threshold
sums 3 columns instead of 100 bins. The counts are converted in place (suffix sums, one UPDATE),
then the columns renamed. Then the jobs stored before the summaries existed are summarized
(store.summaries.backfill, by the current code: it belongs to the latest summary migration).
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


def upgrade() -> None:
    # Every right-hand side reads the row as it was: suffix sums of the per-bin counts.
    _update({f"cert_{name}_{_k(k)}": " + ".join(f"cert_{name}_{_k(j)}" for j in KS if j >= k)
             for name in NAMES for k in KS})
    _rename("cert_{name}_{k}", "cert_{name}_ge_{k}")

    from store.summaries import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    _update({f"cert_{name}_ge_{_k(k)}": f"cert_{name}_ge_{_k(k)}" + (f" - cert_{name}_ge_{_k(k + 1)}" if k < 100 else "")
             for name in NAMES for k in KS})
    _rename("cert_{name}_ge_{k}", "cert_{name}_{k}")
