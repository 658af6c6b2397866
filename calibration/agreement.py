"""Agreement between judge and human (SPEC 4): accuracy, Cohen's kappa, Krippendorff's alpha of a
list of verdicts, through their Counts (the formulas are calibration.from_counts'); and
Krippendorff's alpha of any coder x unit data with the `krippendorff` package."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import krippendorff
import numpy as np

from calibration import from_counts
from calibration.counts import counts_of
from calibration.from_counts import alpha_of_tables, kappa_of_tables
from calibration.table import VerdictTable
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable


def counts(verdicts: Verdicts) -> dict[str, int]:
    """SPEC 4 `counts` of a list of verdicts (calibration.from_counts.counts_summary)."""
    return from_counts.counts_summary(counts_of(verdicts, risk=False, hitl=False))


def accuracy(verdicts: Verdicts) -> float | None:
    """Over labelled items, winner == label; a null winner is wrong. None without labels."""
    return from_counts.accuracy(counts_of(verdicts, risk=False, hitl=False))


def accuracy_no_tie(verdicts: Verdicts) -> float | None:
    """Over labelled items with winner A or B; a tie label is wrong. None when there are none."""
    return from_counts.accuracy_no_tie(counts_of(verdicts, risk=False, hitl=False))


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


def agreement_table(verdicts: Verdicts) -> np.ndarray:
    """3 x 3 counts, rows = judge winner, columns = human label, in the order A, B, tie."""
    return from_counts.agreement_table(counts_of(verdicts, risk=False, hitl=False)).copy()


def cohen_kappa(verdicts: Verdicts, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: Cohen's kappa over {A, B, tie} on labelled items with a winner."""
    return from_counts.cohen_kappa(counts_of(verdicts, risk=False, hitl=False), resamples, seed)


def judge_human_alpha(verdicts: Verdicts, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: nominal Krippendorff's alpha, judge and human as two coders (the closed
    form on the judge x human table, which is the `krippendorff` package's value for such data)."""
    return from_counts.krippendorff_alpha(counts_of(verdicts, risk=False, hitl=False), resamples, seed)


__all__ = ["accuracy", "accuracy_no_tie", "agreement_table", "alpha_of_tables", "cohen_kappa", "counts",
           "judge_human_alpha", "kappa_of_tables", "krippendorff_alpha"]
