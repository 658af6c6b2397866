"""Risk-controlled abstention (SPEC 4 `risk_control`) of a list of verdicts: the fixed-sequence
rule (calibration.from_counts.risk_from_candidates) on the lambda histogram of its verdicts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.counts import CANDIDATES, NO_BIN, lambda_bin, risk_histogram
from calibration.from_counts import (
    MIN_ACCEPTED,
    clopper_pearson_upper,
    risk_from_candidates,
    risk_from_histogram,
)
from calibration.table import DECIMALS, VerdictTable, build_table
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable


def risk_control(
    verdicts: Verdicts,
    target: float,
    delta: float = 0.1,
    candidates: int = CANDIDATES,
    min_accepted: int = MIN_ACCEPTED,
) -> dict[str, Any]:
    """{target, delta, threshold, accepted, errors, bound, coverage, accuracy} (SPEC 4) over labelled
    decided items with confidence max(p_a, 1 - p_a), candidates linspace(0, 1, `candidates`);
    coverage = accepted / decided (the denominator of `coverage_curve`)."""
    t = build_table(verdicts)
    confidence = t.confidence
    known = np.isfinite(confidence)
    grid = np.round(np.linspace(0.0, 1.0, candidates), DECIMALS)
    bins = np.where(known, lambda_bin(np.where(known, confidence, 0.0), grid), NO_BIN)
    ones = np.ones(len(t), dtype=np.int64)
    histogram = risk_histogram(np.zeros(len(t), dtype=np.int64), 1, t.winner, t.label, ones, bins, candidates)[0]
    return risk_from_histogram(histogram, int(t.outcomes.decided.sum()), target, delta, min_accepted)


def accepted_by(verdicts: Verdicts, threshold: float | None) -> npt.NDArray[np.bool_]:
    """Which verdicts a `risk_control` threshold accepts: winner A or B and confidence max(p_a, 1 - p_a)
    >= the threshold, both rounded to 9 decimals as the candidates are (so the accepted set is exactly
    the one `risk_control` counted on its own verdicts); none when the threshold is null. Labels play
    no part: this is also what a calibrated threshold does to new verdicts."""
    t = build_table(verdicts)
    if threshold is None:
        return np.zeros(len(t), dtype=bool)
    confidence = t.confidence
    known = np.isfinite(confidence)
    level = np.round(np.float64(threshold), DECIMALS)
    return np.asarray(t.ab_winner & known & (np.where(known, confidence, 0.0) >= level), dtype=bool)


__all__ = ["CANDIDATES", "MIN_ACCEPTED", "accepted_by", "clopper_pearson_upper", "risk_control",
           "risk_from_candidates"]
