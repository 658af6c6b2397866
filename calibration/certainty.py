"""Is the judge's certainty worth anything? (SPEC 4: high/low certainty, coverage, ECE, Brier.)

The statistics of a list of verdicts, through their Counts (the formulas are
calibration.from_counts'), and `coverage_auc`, the one extra that needs every verdict's certainty.
Vocabulary (calibration.table.Outcomes): "with a winner" = winner A or B, labelled or not;
"decided" = SPEC 4's decided, labelled items with winner A or B. Certainty is |2 p_a - 1| (or the
template's), confidence is max(p_a, 1 - p_a).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration import from_counts
from calibration.counts import (
    COVERAGE_THRESHOLDS,
    ECE_BINS,
    Counts,
    counts_of,
    ece_bin,
    split_histogram,
)
from calibration.from_counts import reliability_from_bins
from calibration.table import DECIMALS, VerdictTable, build_table
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable


def _counts(verdicts: Verdicts) -> Counts:
    return counts_of(verdicts, risk=False, hitl=False)


def split_counts(t: VerdictTable, threshold: float, group: np.ndarray | None = None,
                 groups: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group, the ([n, labelled, correct] high, ... low) split of the table's rows at a threshold
    (certainty rounded to 9 decimals, SPEC 3.1; so is the cut): what `Counts.split` holds."""
    cut = round(threshold, DECIMALS)
    known = np.isfinite(t.certainty)
    with np.errstate(invalid="ignore"):
        high = t.certainty >= cut
    g = np.zeros(len(t), dtype=np.int64) if group is None else group
    return split_histogram(g, groups, t.winner, t.label, np.ones(len(t), dtype=np.int64), high, known)


def certainty_split(verdicts: Verdicts, threshold: float = 0.8) -> tuple[dict[str, Any], dict[str, Any]]:
    """(high_certainty, low_certainty) at `threshold` (calibration.from_counts.certainty_split)."""
    t = build_table(verdicts)
    c = _counts(t)
    c.split = split_counts(t, threshold)[0]
    return from_counts.certainty_split(c, threshold)


def coverage_curve(verdicts: Verdicts) -> list[dict[str, Any]]:
    """[{threshold, coverage, accuracy, n}] at COVERAGE_THRESHOLDS (calibration.from_counts)."""
    return from_counts.coverage_curve(_counts(verdicts))


def coverage_auc(verdicts: Verdicts) -> float | None:
    """Area under the full accuracy-coverage curve of decided items (selective accuracy).

    Items are accepted from the most certain down; at every distinct certainty level (ties enter
    together) the curve steps to (coverage, accuracy of the accepted items); the area is
    sum(delta coverage * accuracy). 1.0 = never wrong; the judge's plain accuracy_no_tie = a judge whose
    certainty carries no information. `coverage_curve` samples this curve at 10 thresholds.
    """
    t = build_table(verdicts)
    outcomes = t.outcomes
    pool = outcomes.decided & np.isfinite(t.certainty)
    total = int(outcomes.decided.sum())
    if not pool.any():
        return None
    order = np.argsort(-t.certainty[pool], kind="stable")
    certainty = t.certainty[pool][order]
    cum_correct = np.cumsum(outcomes.correct[pool][order])
    ends = np.flatnonzero(np.r_[certainty[1:] != certainty[:-1], True])  # last index of each level
    accepted = ends + 1
    coverage = accepted / total
    accuracy = cum_correct[ends] / accepted
    widths = np.diff(np.r_[0.0, coverage])
    return float((widths * accuracy).sum())


def reliability(verdicts: Verdicts) -> tuple[float | None, list[dict[str, Any]]]:
    """(ECE, reliability table) over decided items (calibration.from_counts.reliability)."""
    return from_counts.reliability(_counts(verdicts))


def ece(verdicts: Verdicts) -> float | None:
    return reliability(verdicts)[0]


def brier(verdicts: Verdicts) -> float | None:
    """Mean of (p_a - 1[label = A])^2 over items labelled A or B that have a p_a."""
    return from_counts.brier(_counts(verdicts))


__all__ = ["COVERAGE_THRESHOLDS", "ECE_BINS", "brier", "certainty_split", "coverage_auc", "coverage_curve", "ece",
           "ece_bin", "reliability", "reliability_from_bins", "split_counts"]
