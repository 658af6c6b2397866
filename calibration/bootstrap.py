"""Percentile bootstrap for statistics of a contingency table (Cohen's kappa, Krippendorff's alpha).

Method: our own vectorised resampling with a seeded `numpy.random.Generator`, not
`scipy.stats.bootstrap`. Kappa and two-coder alpha depend on the items only through the K x K table
of (judge, human) pairs, and resampling n items with replacement gives a table distributed exactly as
Multinomial(n, observed cell shares). So one `Generator.multinomial` call draws all resamples as
tables: identical in distribution to resampling items, but O(resamples x K) instead of
O(resamples x n), which is what makes 1,000 resamples of 100,000 items cost milliseconds. The
interval is the percentile interval (2.5th and 97.5th percentiles); BCa, scipy's default, would need a
jackknife over the items. tests/test_calibration_agreement.py checks the interval against
`scipy.stats.bootstrap(method="percentile")` on item-level resampling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TableStatistic = Callable[[np.ndarray], np.ndarray]
"""Maps tables of shape (..., K, K) (counts) to values of shape (...); NaN where undefined."""

CONFIDENCE = 0.95
# A resample can make the statistic undefined (e.g. every item in one category). Those resamples are
# dropped; if more than this share of them is undefined the interval is not meaningful: null.
MAX_UNDEFINED_SHARE = 0.5


def contingency(rows: np.ndarray, cols: np.ndarray, k: int) -> np.ndarray:
    """K x K table of counts of (rows[i], cols[i]) code pairs."""
    return np.bincount(rows.astype(np.int64) * k + cols.astype(np.int64), minlength=k * k).reshape(k, k)


_drawn: dict[tuple[bytes, tuple[int, ...], int, int], np.ndarray] = {}


def bootstrap_tables(table: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """`resamples` tables drawn by resampling the table's items with replacement (read-only).

    Kappa and alpha of one table draw the same resamples (same seed); the last few draws are kept
    so that the second statistic does not draw them again."""
    key = (np.asarray(table, dtype=np.int64).tobytes(), table.shape, resamples, seed)
    draws = _drawn.get(key)
    if draws is None:
        n = int(table.sum())
        k = table.shape[0]
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, table.ravel() / n, size=resamples).reshape(resamples, k, k)
        draws.flags.writeable = False
        if len(_drawn) >= 8:
            _drawn.pop(next(iter(_drawn)))
        _drawn[key] = draws
    return draws


def percentile_interval(values: np.ndarray) -> list[float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.size < (1.0 - MAX_UNDEFINED_SHARE) * values.size:
        return None
    alpha = (1.0 - CONFIDENCE) / 2.0
    lo, hi = np.percentile(finite, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def value_with_interval(
    table: np.ndarray,
    statistic: TableStatistic,
    resamples: int,
    seed: int,
    point: float | None = None,
) -> dict[str, object]:
    """{"value", "ci95"} for a statistic of the table; either may be None where undefined.

    `point` overrides the point estimate (e.g. the `krippendorff` package's own value).
    """
    if table.sum() == 0:
        return {"value": None, "ci95": None}
    value = float(statistic(table)) if point is None else point
    if not np.isfinite(value):
        return {"value": None, "ci95": None}
    ci = None
    if resamples > 0:
        ci = percentile_interval(statistic(bootstrap_tables(table, resamples, seed)))
    return {"value": value, "ci95": ci}
