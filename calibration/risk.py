"""Risk-controlled abstention (SPEC 4 `risk_control`): the fixed-sequence rule of Jung et al. 2024
("Trust or Escalate"), without their code's fallback of keeping a failing top threshold.

The confidences are sorted once; every candidate's accepted count and error count then come from a
binary search and a suffix sum, and all Clopper-Pearson bounds from one vectorised beta.ppf call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
from scipy.stats import beta as beta_dist

from calibration.table import DECIMALS, VerdictTable, build_table, ratio
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable

CANDIDATES = 5000
MIN_ACCEPTED = 30


@overload
def clopper_pearson_upper(errors: float, n: float, delta: float) -> float: ...
@overload
def clopper_pearson_upper(errors: np.ndarray, n: np.ndarray, delta: float) -> np.ndarray: ...
def clopper_pearson_upper(errors: float | np.ndarray, n: float | np.ndarray, delta: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson upper bound at level 1 - delta on an error rate:
    Beta^-1(1 - delta; errors + 1, n - errors); 1.0 where every item is an error (or n = 0).
    Works elementwise on arrays."""
    error_counts = np.asarray(errors, dtype=float)
    b = np.asarray(n, dtype=float) - error_counts
    valid = b > 0
    bound = np.where(valid, beta_dist.ppf(1.0 - delta, error_counts + 1.0, np.where(valid, b, 1.0)), 1.0)
    return float(bound) if bound.ndim == 0 else bound


def risk_control(
    verdicts: Verdicts,
    target: float,
    delta: float = 0.1,
    candidates: int = CANDIDATES,
    min_accepted: int = MIN_ACCEPTED,
) -> dict[str, Any]:
    """{target, delta, threshold, accepted, errors, bound, coverage, accuracy} (SPEC 4).

    Over labelled decided items with confidence max(p_a, 1 - p_a): start at the highest candidate
    lambda whose accepted set (confidence >= lambda) holds `min_accepted` items, walk down, stop at the
    first lambda whose bound exceeds 1 - target; the threshold is the last lambda that passed.
    coverage = accepted / decided (the denominator of `coverage_curve`); accuracy = 1 - errors /
    accepted. With a null threshold nothing is accepted (coverage 0, accuracy null) and `bound` is the
    one that failed at the starting lambda (null when no lambda holds `min_accepted` items); `reason`
    then says which case it was.
    """
    t = build_table(verdicts)
    confidence = t.confidence
    pool = t.decided & np.isfinite(confidence)
    decided = int(t.decided.sum())
    order = np.argsort(confidence[pool], kind="stable")
    conf = confidence[pool][order]
    wrong = ~t.correct[pool][order]
    # suffix[i] = errors among the items from sorted position i upwards (suffix[len] = 0)
    suffix = np.r_[np.cumsum(wrong[::-1])[::-1], 0]

    lambdas = np.linspace(0.0, 1.0, candidates)
    first_kept = np.searchsorted(conf, np.round(lambdas, DECIMALS), side="left")
    accepted = conf.size - first_kept
    errors = suffix[first_kept]
    return risk_from_candidates(accepted, errors, decided, target, delta, min_accepted)


def risk_from_candidates(
    accepted: np.ndarray,
    errors: np.ndarray,
    decided: int,
    target: float,
    delta: float = 0.1,
    min_accepted: int = MIN_ACCEPTED,
) -> dict[str, Any]:
    """The fixed-sequence rule of `risk_control` from each candidate lambda's accepted and error
    counts (candidates = linspace(0, 1, len(accepted)), ascending); `decided` is the coverage
    denominator. Split out so that stored histograms give the same result as the verdicts."""
    lambdas = np.linspace(0.0, 1.0, len(accepted))
    result: dict[str, Any] = {
        "target": target,
        "delta": delta,
        "threshold": None,
        "accepted": 0,
        "errors": 0,
        "bound": None,
        "coverage": 0.0,
        "accuracy": None,
    }
    eligible = np.flatnonzero(accepted >= min_accepted)  # a prefix: accepted shrinks as lambda grows
    if eligible.size == 0:
        result["reason"] = f"fewer than {min_accepted} labelled decided items"
        return result
    start = int(eligible[-1])
    bounds = clopper_pearson_upper(errors[: start + 1], accepted[: start + 1], delta)
    failing = np.flatnonzero(bounds > 1.0 - target)
    if failing.size and failing[-1] == start:
        result["bound"] = float(bounds[start])
        result["reason"] = "the bound fails already at the starting threshold"
        return result
    chosen = int(failing[-1]) + 1 if failing.size else 0
    n, e = int(accepted[chosen]), int(errors[chosen])
    result.update(
        threshold=float(lambdas[chosen]),
        accepted=n,
        errors=e,
        bound=float(bounds[chosen]),
        coverage=ratio(n, decided),
        accuracy=1.0 - e / n,
    )
    return result
