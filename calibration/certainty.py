"""Is the judge's certainty worth anything? (SPEC 4: high/low certainty, coverage, ECE, Brier.)

Vocabulary (calibration.table): "with a winner" = winner A or B, labelled or not; "decided" = SPEC 4's
decided, labelled items with winner A or B. A tie label on a decided item counts as wrong, as in
`accuracy_no_tie`. Certainty is |2 p_a - 1| (or the template's), confidence is max(p_a, 1 - p_a).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.table import DECIMALS, A, B, VerdictTable, build_table, ratio
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable

COVERAGE_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))
ECE_BINS = 10


def _split_side(t: VerdictTable, mask: np.ndarray, threshold: float) -> dict[str, Any]:
    labelled = mask & t.labelled
    correct = int((mask & t.correct).sum())
    return {
        "threshold": threshold,
        "n": int(mask.sum()),
        "labelled": int(labelled.sum()),
        "correct": correct,
        "accuracy": ratio(correct, labelled.sum()),
    }


def certainty_split(verdicts: Verdicts, threshold: float = 0.8) -> tuple[dict[str, Any], dict[str, Any]]:
    """(high_certainty, low_certainty) at `threshold`, inclusive on the high side.

    `n` counts items with winner A or B on that side (labelled or not, so an unlabelled job still shows
    how many verdicts are confident); `labelled` those with a human label; `correct` those whose winner
    equals the label; `accuracy` = correct / labelled (null without labelled items). Items with a
    winner but no certainty at all (neither certainty nor p_a) are on neither side.
    """
    t = build_table(verdicts)
    cut = round(threshold, DECIMALS)  # certainty is rounded to 9 decimals (SPEC 3.1); so is the cut
    pool = t.ab_winner & np.isfinite(t.certainty)
    high = pool & (t.certainty >= cut)
    low = pool & (t.certainty < cut)
    return _split_side(t, high, threshold), _split_side(t, low, threshold)


def coverage_curve(verdicts: Verdicts, thresholds: Sequence[float] = COVERAGE_THRESHOLDS) -> list[dict[str, Any]]:
    """[{threshold, coverage, accuracy, n}]: coverage = share of decided items with certainty >= the
    threshold, accuracy among those (null where none), n = how many those are."""
    t = build_table(verdicts)
    decided = t.decided
    total = int(decided.sum())
    out = []
    for threshold in thresholds:
        kept = decided & (t.certainty >= round(threshold, DECIMALS))
        n = int(kept.sum())
        out.append(
            {
                "threshold": threshold,
                "coverage": ratio(n, total),
                "accuracy": ratio((kept & t.correct).sum(), n),
                "n": n,
            }
        )
    return out


def coverage_auc(verdicts: Verdicts) -> float | None:
    """Area under the full accuracy-coverage curve of decided items (selective accuracy).

    Items are accepted from the most certain down; at every distinct certainty level (ties enter
    together) the curve steps to (coverage, accuracy of the accepted items); the area is
    sum(delta coverage * accuracy). 1.0 = never wrong; the judge's plain accuracy_no_tie = a judge whose
    certainty carries no information. `coverage_curve` samples this curve at 10 thresholds.
    """
    t = build_table(verdicts)
    pool = t.decided & np.isfinite(t.certainty)
    total = int(t.decided.sum())
    if not pool.any():
        return None
    order = np.argsort(-t.certainty[pool], kind="stable")
    certainty = t.certainty[pool][order]
    cum_correct = np.cumsum(t.correct[pool][order])
    ends = np.flatnonzero(np.r_[certainty[1:] != certainty[:-1], True])  # last index of each level
    accepted = ends + 1
    coverage = accepted / total
    accuracy = cum_correct[ends] / accepted
    widths = np.diff(np.r_[0.0, coverage])
    return float((widths * accuracy).sum())


def reliability(verdicts: Verdicts, bins: int = ECE_BINS) -> tuple[float | None, list[dict[str, Any]]]:
    """(ECE, reliability table) over decided items, confidence max(p_a, 1 - p_a) in `bins` equal-width
    bins over [0.5, 1]; bins are closed on the left, the last also on the right.

    ECE = sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|.
    """
    t = build_table(verdicts)
    confidence = t.confidence
    pool = t.decided & np.isfinite(confidence)
    conf = confidence[pool]
    correct = t.correct[pool].astype(float)
    index = ece_bin(conf, bins)
    n_bin = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    return reliability_from_bins(n_bin, conf_sum, correct_sum)


def ece_bin(confidence: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The reliability bin of each confidence: equal-width bins over [0.5, 1], closed on the left,
    the last also on the right. Rounding before floor keeps a confidence of exactly 0.55 in bin 1
    despite binary fractions."""
    return np.clip(np.floor(np.round((confidence - 0.5) * 2 * bins, DECIMALS)), 0, bins - 1).astype(np.int64)


def reliability_from_bins(n_bin: np.ndarray, conf_sum: np.ndarray,
                          correct_sum: np.ndarray) -> tuple[float | None, list[dict[str, Any]]]:
    """(ECE, reliability table) from per-bin counts, confidence sums and correct counts (the
    sufficient statistics, so that stored summaries give the same numbers as the verdicts)."""
    bins = len(n_bin)
    total = int(np.sum(n_bin))
    table = []
    ece = 0.0
    width = 0.5 / bins
    for b in range(bins):
        n = int(n_bin[b])
        mean_conf = float(conf_sum[b]) / n if n else None
        acc = float(correct_sum[b]) / n if n else None
        if acc is not None and mean_conf is not None:  # n > 0
            ece += n / total * abs(acc - mean_conf)
        table.append(
            {
                "lo": round(0.5 + b * width, 6),
                "hi": round(0.5 + (b + 1) * width, 6),
                "n": n,
                "confidence": mean_conf,
                "accuracy": acc,
            }
        )
    return (float(ece) if total else None), table


def ece(verdicts: Verdicts, bins: int = ECE_BINS) -> float | None:
    return reliability(verdicts, bins)[0]


def brier(verdicts: Verdicts) -> float | None:
    """Mean of (p_a - 1[label = A])^2 over items labelled A or B that have a p_a."""
    t = build_table(verdicts)
    mask = ((t.label == A) | (t.label == B)) & np.isfinite(t.p_a)
    if not mask.any():
        return None
    target = (t.label[mask] == A).astype(float)
    return float(np.mean((t.p_a[mask] - target) ** 2))
