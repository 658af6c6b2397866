"""Position and length bias of the judge (SPEC 4: position_consistency, first_position_rate,
prefers_longer) of a list of verdicts, through their Counts (the formulas are
calibration.from_counts'). None of these needs a human label."""

from __future__ import annotations

from collections.abc import Sequence

from calibration import from_counts
from calibration.counts import LENGTH_MARGIN, Counts, counts_of
from calibration.from_counts import LengthFigures, PositionFigures, position_figures
from calibration.table import VerdictTable
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable


def _counts(verdicts: Verdicts) -> Counts:
    return counts_of(verdicts, risk=False, hitl=False)


def position_consistency(verdicts: Verdicts) -> float | None:
    """Over items with calls in both orders, the share whose first samples (lowest sample number of
    each order) agree as win/tie/lose for A. An unparsed first sample counts as disagreement.
    None when no item was judged in both orders (e.g. --no-swap)."""
    return from_counts.position_consistency(_counts(verdicts))


def position_counts(verdicts: Verdicts) -> PositionFigures:
    """Parsed calls that know their order, by the position of the answer they chose (see
    calibration.from_counts.position_figures). Calls without an order are not counted."""
    return from_counts.position_counts(_counts(verdicts))


def first_position_rate(verdicts: Verdicts) -> float | None:
    """first / (first + second + tie) over parsed calls with an order; see `position_counts`."""
    return position_counts(verdicts)["rate"]


def prefers_longer(verdicts: Verdicts) -> float | None:
    """Share of decided items (SPEC 4: labelled, winner A or B) whose winner is the longer response,
    among pairs whose lengths (len_a, len_b) differ by more than 30 characters. None when no
    verdict carries lengths. `length_counts` gives the same over unlabelled items too."""
    return from_counts.prefers_longer(_counts(verdicts))


def length_counts(verdicts: Verdicts) -> LengthFigures:
    """The judge's prefers_longer beside the humans' own rate on the same kind of pairs, since
    humans often prefer the longer answer too: the bias is the difference, not the rate."""
    return from_counts.length_counts(_counts(verdicts))


__all__ = ["LENGTH_MARGIN", "first_position_rate", "length_counts", "position_consistency", "position_counts",
           "position_figures", "prefers_longer"]
