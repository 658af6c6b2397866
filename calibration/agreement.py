"""Agreement between judge and human (SPEC 4): accuracy, Cohen's kappa, Krippendorff's alpha."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import krippendorff
import numpy as np

from calibration.bootstrap import contingency, value_with_interval
from calibration.table import NONE, VerdictTable, build_table, ratio
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable
K = 3  # categories A, B, tie


def counts(verdicts: Verdicts) -> dict[str, int]:
    """SPEC 4 `counts`: the parts of `accuracy` (correct / labelled) and `accuracy_no_tie`
    (correct_no_tie / decided)."""
    t = build_table(verdicts)
    correct = t.correct
    return {
        "items": len(t),
        "labelled": int(t.labelled.sum()),
        "decided": int(t.decided.sum()),
        "correct": int(correct.sum()),
        "correct_no_tie": int((correct & t.decided).sum()),
    }


def accuracy(verdicts: Verdicts) -> float | None:
    """Over labelled items, winner == label; a null winner is wrong. None without labels."""
    c = counts(verdicts)
    return ratio(c["correct"], c["labelled"])


def accuracy_no_tie(verdicts: Verdicts) -> float | None:
    """Over labelled items with winner A or B; a tie label is wrong. None when there are none."""
    c = counts(verdicts)
    return ratio(c["correct_no_tie"], c["decided"])


def kappa_of_tables(tables: np.ndarray) -> np.ndarray:
    """Cohen's kappa of (..., K, K) count tables; NaN where undefined (chance agreement = 1).

    Computed on integers, (n * trace - sum r c) / (n^2 - sum r c), so that "undefined" is an exact
    zero test rather than a float comparison.
    """
    t = tables.astype(np.int64)
    n = t.sum(axis=(-2, -1))
    agree = np.trace(t, axis1=-2, axis2=-1)
    chance = (t.sum(axis=-1) * t.sum(axis=-2)).sum(axis=-1)
    num = n * agree - chance
    den = n * n - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def alpha_of_tables(tables: np.ndarray) -> np.ndarray:
    """Nominal Krippendorff's alpha for two coders who both rated every unit, from (..., K, K) tables.

    Coincidence matrix o = T + T'; with n.. = 2n pairable values and n_c its margins,
    alpha = 1 - (n.. - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k. This is what the `krippendorff`
    package computes for such data (checked by a test); the closed form is needed for the bootstrap.
    """
    t = tables.astype(np.int64)
    n = t.sum(axis=(-2, -1))
    disagree = 2 * (n - np.trace(t, axis1=-2, axis2=-1))
    margins = t.sum(axis=-1) + t.sum(axis=-2)
    total = 2 * n
    expected = total * total - (margins * margins).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, 1.0 - (total - 1) * disagree / np.where(expected > 0, expected, 1), np.nan)


KrippendorffLevel = Literal["nominal", "ordinal", "interval", "ratio"]


def krippendorff_alpha(reliability_data: Any, level: KrippendorffLevel = "nominal") -> float | None:
    """Krippendorff's alpha of coder x unit data (rows = coders), with the `krippendorff` package.

    Missing values may be None or NaN. At the nominal level values may be any hashable labels
    (strings are coded as integers first). Returns None where alpha is undefined: fewer than two
    distinct values, or no unit rated by two coders.
    """
    if isinstance(reliability_data, np.ndarray) and reliability_data.dtype.kind in "biuf":
        data = reliability_data.astype(float)  # fast path: already numeric, NaN = missing
    elif level == "nominal":
        rows = [list(row) for row in reliability_data]
        codes: dict[Any, int] = {}
        data = np.array(
            [[np.nan if _missing(v) else codes.setdefault(v, len(codes)) for v in row] for row in rows],
            dtype=float,
        )
    else:
        rows = [list(row) for row in reliability_data]
        data = np.array([[np.nan if _missing(v) else float(v) for v in row] for row in rows], dtype=float)
    try:
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    except ValueError:
        return None  # the package refuses degenerate data; alpha is undefined there
    return value if math.isfinite(value) else None


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _paired(t: VerdictTable) -> tuple[np.ndarray, np.ndarray]:
    """(judge, human) codes of labelled items with a winner: the items kappa and alpha are over."""
    mask = t.labelled & (t.winner != NONE)
    return t.winner[mask], t.label[mask]


def agreement_table(verdicts: Verdicts) -> np.ndarray:
    """3 x 3 counts, rows = judge winner, columns = human label, in the order A, B, tie."""
    judge, human = _paired(build_table(verdicts))
    return contingency(judge, human, K)


def cohen_kappa(verdicts: Verdicts, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: Cohen's kappa over {A, B, tie} on labelled items with a winner."""
    return value_with_interval(agreement_table(verdicts), kappa_of_tables, resamples, seed)


def judge_human_alpha(verdicts: Verdicts, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: nominal Krippendorff's alpha, judge and human as two coders.

    The point value comes from the `krippendorff` package; the bootstrap uses the equivalent closed
    form on resampled tables (same resamples as kappa's for the same seed).
    """
    judge, human = _paired(build_table(verdicts))
    table = contingency(judge, human, K)
    point = krippendorff_alpha(np.vstack([judge, human])) if judge.size else None
    if point is None:
        return {"value": None, "ci95": None}
    return value_with_interval(table, alpha_of_tables, resamples, seed, point=point)
