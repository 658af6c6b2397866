"""Position and length bias of the judge (SPEC 4: position_consistency, first_position_rate,
prefers_longer). None of these needs a human label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from calibration.table import ABSENT, UNPARSED, A, B, VerdictTable, build_table, ratio
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable

LENGTH_MARGIN = 30  # characters; SPEC 4: "pairs differing by more than 30 characters"


def position_consistency(verdicts: Verdicts) -> float | None:
    """Over items with calls in both orders, the share whose first samples (lowest sample number of
    each order) agree as win/tie/lose for A. An unparsed first sample counts as disagreement.
    None when no item was judged in both orders (e.g. --no-swap)."""
    t = build_table(verdicts)
    both = (t.first_ab != ABSENT) & (t.first_ba != ABSENT)
    agree = both & (t.first_ab == t.first_ba) & (t.first_ab < UNPARSED)
    return ratio(agree.sum(), both.sum())


class PositionFigures(TypedDict):
    calls: int
    first: int
    second: int
    tie: int
    rate: float | None
    rate_no_tie: float | None


def position_counts(verdicts: Verdicts) -> PositionFigures:
    """Parsed calls that know their order, by the position of the answer they chose.

    `first_position_rate` (SPEC: "share of parsed calls choosing the answer shown first") keeps tie
    calls in the denominator, as the SPEC's wording says; so with ties its unbiased value is below
    0.5. `rate_no_tie` drops them from the denominator, where 0.5 means no position bias.
    Calls without an order (imports with no order information) are not counted.
    """
    t = build_table(verdicts)
    return position_figures(int(t.first_calls.sum()), int(t.second_calls.sum()), int(t.tie_calls.sum()))


def position_figures(first: int, second: int, tie: int) -> PositionFigures:
    """SPEC 4's position figures from the calls that chose the first-shown answer, the second, a tie."""
    return {
        "calls": first + second + tie,
        "first": first,
        "second": second,
        "tie": tie,
        "rate": ratio(first, first + second + tie),
        "rate_no_tie": ratio(first, first + second),
    }


def first_position_rate(verdicts: Verdicts) -> float | None:
    """first / (first + second + tie) over parsed calls with an order; see `position_counts`."""
    return position_counts(verdicts)["rate"]


def _longer_mask(t: VerdictTable) -> tuple[np.ndarray, np.ndarray]:
    known = np.isfinite(t.len_a) & np.isfinite(t.len_b)
    with np.errstate(invalid="ignore"):
        differ = known & (np.abs(t.len_a - t.len_b) > LENGTH_MARGIN)
        a_longer = t.len_a > t.len_b
    return differ, a_longer


def prefers_longer(verdicts: Verdicts) -> float | None:
    """Share of decided items (SPEC 4: labelled, winner A or B) whose winner is the longer response,
    among pairs whose lengths (len_a, len_b) differ by more than 30 characters. None when no
    verdict carries lengths. `length_counts` gives the same over unlabelled items too."""
    t = build_table(verdicts)
    differ, a_longer = _longer_mask(t)
    pool = differ & t.decided
    return ratio((pool & ((t.winner == A) == a_longer)).sum(), pool.sum())


class LengthFigures(TypedDict):
    pairs: int
    judge_prefers_longer: float | None
    labelled_pairs: int
    human_prefers_longer: float | None


def length_counts(verdicts: Verdicts) -> LengthFigures:
    """The judge's prefers_longer beside the humans' own rate on the same kind of pairs, since
    humans often prefer the longer answer too: the bias is the difference, not the rate."""
    t = build_table(verdicts)
    differ, a_longer = _longer_mask(t)
    judged = differ & t.ab_winner
    labelled = differ & ((t.label == A) | (t.label == B))
    return {
        "pairs": int(judged.sum()),
        "judge_prefers_longer": ratio((judged & ((t.winner == A) == a_longer)).sum(), judged.sum()),
        "labelled_pairs": int(labelled.sum()),
        "human_prefers_longer": ratio((labelled & ((t.label == A) == a_longer)).sum(), labelled.sum()),
    }

