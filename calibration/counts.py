"""Counts, the one representation of a set of verdicts behind every SPEC 4 statistic.

Every SPEC 4 number depends on the verdicts only through a few tables of counts: the judge x human
confusion table (accuracy, counts, Cohen's kappa, Krippendorff's alpha and their bootstrap), a
cumulative certainty histogram at 0.01 steps (high/low certainty, coverage curve), the reliability
bins (ECE), a confidence histogram on SPEC 4's own lambda grid (risk control), sums (Brier, position,
length, abstention) and, for the HITL selection, the confusion of labelled items per BPDE value.

This module is the one projection from verdicts to those counts:

- `stat_columns`: each verdict's label-independent inputs (its certainty and confidence bins,
  first-sample agreement, which response is longer, calls by position), computed once from
  `calibration.table` columns. store/ keeps them as the verdict rows' stat_* columns.
- `project` and its families (`add_main`, `add_certainty`, `add_reliability`, `add_risk`,
  `add_hitl`): rows -> per-group Counts, vectorised. A row is one verdict (n = 1) or a group of
  verdicts sharing the family's keys whose additive columns SQL summed (store.stats), so that SQL
  only ever sums stored per-verdict columns and every formula (what is correct, decided, longer, a
  Brier term, ...) is written here once.

`calibration.from_counts` turns Counts into the report. No import of store/ or api/.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.table import (
    ABSENT,
    DECIMALS,
    UNPARSED,
    A,
    B,
    Outcomes,
    VerdictTable,
    build_table,
    confidence_of,
)
from judge.records import Verdict

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ECE_BINS = 10
COVERAGE_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(10))
CANDIDATES = 5000  # SPEC 4's risk-control candidates: linspace(0, 1, 5000)
LENGTH_MARGIN = 30  # characters; SPEC 4: "pairs differing by more than 30 characters"

# The confusion table's cells: judge winner A, B, tie, null x human label A, B, tie, none
# (calibration.table's codes, NONE = 3).
_LETTERS = "abtn"
CONFUSION_FIELDS = tuple(f"w{w}_l{label}" for w in _LETTERS for label in _LETTERS)
# The scalar counts of one set of verdicts, in this order (store.models names its columns so).
MAIN_FIELDS = (
    "items",
    *CONFUSION_FIELDS,
    "brier_n",  # labelled A or B with a p_a; brier_sum is a float field
    "pos_both",  # first samples in both orders
    "pos_agree",  # ... that agree
    "calls_first",
    "calls_second",
    "calls_tie",
    "len_pairs",  # winner A or B, lengths differ by more than 30 characters
    "len_pairs_longer",  # ... and the winner is the longer response
    "len_decided",  # the same over decided items (prefers_longer)
    "len_decided_longer",
    "len_labelled",  # labelled A or B, lengths differ by more than 30 characters
    "len_labelled_longer",  # ... and the label is the longer response
    "abstained",
    "kept",  # decided and not abstained
    "kept_correct",
)

# Certainty bins: bin k holds certainties c with GRID[k] <= c < GRID[k + 1] (k = -1 below 0, 100 at
# 1 and above). Any threshold on the grid splits exactly; that covers the default 0.8 and the
# coverage curve's 0, 0.1, ..., 0.9.
CERTAINTY_GRID = np.array([round(k / 100, DECIMALS) for k in range(101)])
# SPEC 4's candidate lambdas, rounded as the confidences are. Lambda bin i holds the confidences c
# with LAMBDA_GRID[i] <= c < LAMBDA_GRID[i + 1], so "confidence >= lambda_i" is exactly "bin >= i".
LAMBDA_GRID = np.round(np.linspace(0.0, 1.0, CANDIDATES), DECIMALS)
NO_BIN = -2  # a row without a certainty (or confidence) bin
assert all(round(t, DECIMALS) in CERTAINTY_GRID for t in COVERAGE_THRESHOLDS)


def _bin_name(k: int) -> str:
    return "m1" if k < 0 else str(k)


# The reliability bins (decided items: n, correct; and the confidence sum, a float) and the
# certainty histogram are fixed-size, so they are fields too: one summary row holds every count but
# the risk grid's and the BPDE groups'. The certainty histogram is cumulative: for each k in -1 ..
# 100, the items with winner A or B and certainty >= GRID[k] (k = -1: any certainty), how many are
# labelled, how many correct. A split at GRID[k] then reads 3 fields, not 100 bins.
ECE_FIELDS = tuple(f"ece_{name}_{b}" for b in range(ECE_BINS) for name in ("n", "correct"))
_CERTAINTY_NAMES = ("n", "labelled", "correct")
CERTAINTY_FIELDS = tuple(f"cert_{name}_ge_{_bin_name(k)}" for k in range(-1, len(CERTAINTY_GRID))
                         for name in _CERTAINTY_NAMES)
INT_FIELDS = (*MAIN_FIELDS, *ECE_FIELDS, *CERTAINTY_FIELDS)
FLOAT_FIELDS = ("brier_sum", *(f"ece_confidence_{b}" for b in range(ECE_BINS)))
FIELD = {name: i for i, name in enumerate(INT_FIELDS)}
FLOAT_FIELD = {name: i for i, name in enumerate(FLOAT_FIELDS)}
_MAIN = slice(0, len(MAIN_FIELDS))
_CONFUSION = slice(FIELD["wa_la"], FIELD["wa_la"] + 16)
_ECE = slice(len(MAIN_FIELDS), len(MAIN_FIELDS) + len(ECE_FIELDS))
_CERTAINTY = slice(_ECE.stop, len(INT_FIELDS))

BpdeKey = tuple[bool, float]
"""(null, value) of a BPDE: null BPDEs rank above every number (SPEC 3.3)."""


def bpde_key(value: float | None) -> BpdeKey:
    """The HITL group of a BPDE: None and NaN together; -0.0 is 0.0 (numpy's sort ties them too)."""
    if value is None or math.isnan(value):
        return (True, 0.0)
    return (False, float(value) + 0.0)


def hitl_order(keys: Iterable[BpdeKey]) -> list[BpdeKey]:
    """BPDE groups in selection order: null first, then the highest BPDE (SPEC 3.3)."""
    return sorted(keys, key=lambda k: (not k[0], -k[1]))


def hitl_n_sent(beta: float, labelled: int) -> int:
    """floor(beta * n + 0.5) items go to humans (SPEC 3.3); round() first: 0.2 * 80 is
    16.000000000000004 in binary and must not round differently."""
    return math.floor(round(beta * labelled, 9) + 0.5)


def certainty_bin(certainty: FloatArray, grid: FloatArray = CERTAINTY_GRID) -> IntArray:
    """The bin of each certainty on a grid (-1 .. len(grid) - 1); NaN gives the last, mask it first."""
    return np.searchsorted(grid, certainty, side="right") - 1


def lambda_bin(confidence: FloatArray, grid: FloatArray = LAMBDA_GRID) -> IntArray:
    """The lambda bin of each confidence (-1 .. len(grid) - 1); NaN gives the last, mask it first."""
    return np.searchsorted(grid, confidence, side="right") - 1


def ece_bin(confidence: FloatArray, bins: int = ECE_BINS) -> IntArray:
    """The reliability bin of each confidence: equal-width bins over [0.5, 1], closed on the left,
    the last also on the right. Rounding before floor keeps a confidence of exactly 0.55 in bin 1
    despite binary fractions."""
    return np.clip(np.floor(np.round((confidence - 0.5) * 2 * bins, DECIMALS)), 0, bins - 1).astype(np.int64)


@functools.lru_cache(maxsize=256)  # every coverage curve asks for the same ten (a day's chart has hundreds)
def grid_index(threshold: float) -> int | None:
    """k with CERTAINTY_GRID[k] equal to the threshold as the statistics compare it, else None."""
    cut = round(threshold, DECIMALS)
    found = np.flatnonzero(CERTAINTY_GRID == cut)
    return int(found[0]) if found.size else None


def cut_bin(threshold: float) -> int:
    """The certainty bin the threshold (rounded as the statistics compare it) falls in: off the
    grid, the only bin whose items fall on both sides of it."""
    return int(certainty_bin(np.array([round(threshold, DECIMALS)], dtype=np.float64))[0])


def certainty_fields(threshold: float) -> tuple[str, ...]:
    """The certainty fields the statistics read at this threshold: any certainty, the coverage
    curve's thresholds, and the threshold itself when it is on the grid, else the grid point above
    it (`split_from_bin`)."""
    k = grid_index(threshold)
    above = cut_bin(threshold) + 1 if k is None else k  # past the grid's end (a threshold over 1): none
    ks = {-1, *(grid_index(t) for t in COVERAGE_THRESHOLDS), above if above < len(CERTAINTY_GRID) else None}
    return tuple(f"cert_{name}_ge_{_bin_name(k)}" for k in sorted(k for k in ks if k is not None)
                 for name in _CERTAINTY_NAMES)


def _zeros(*shape: int) -> IntArray:
    return np.zeros(shape, dtype=np.int64)


@dataclass
class Counts:
    """The sufficient statistics of one set of verdicts."""

    ints: IntArray = field(default_factory=lambda: _zeros(len(INT_FIELDS)))
    floats: FloatArray = field(default_factory=lambda: np.zeros(len(FLOAT_FIELDS)))
    # (lambda bin + 1) -> [decided items, errors], over finite confidences; only filled when asked
    # for (risk control), it is the one histogram too fine to be fields
    risk: IntArray = field(default_factory=lambda: _zeros(CANDIDATES + 1, 2))
    # BPDE group -> 4 x 3 winner x label counts of labelled items
    hitl: dict[BpdeKey, IntArray] = field(default_factory=dict)
    # The certainty split at an off-grid threshold, when the caller computed it:
    # ([n, labelled, correct] high, [n, labelled, correct] low).
    split: tuple[IntArray, IntArray] | None = None

    def __getitem__(self, name: str) -> int:
        return int(self.ints[FIELD[name]])

    # Views into `ints` (writable: adding to them adds to the fields).
    @property
    def confusion(self) -> IntArray:
        """4 x 4: judge winner A, B, tie, null x human label A, B, tie, none."""
        return self.ints[_CONFUSION].reshape(4, 4)

    @property
    def ece(self) -> IntArray:
        """reliability bin -> [decided items, correct]"""
        return self.ints[_ECE].reshape(ECE_BINS, 2)

    @property
    def certainty_ge(self) -> IntArray:
        """k + 1 -> [items with winner A or B and certainty >= CERTAINTY_GRID[k], ... labelled,
        ... correct] (k = -1: with any certainty). Counts read from summaries may hold only the
        rows `certainty_fields` names for the request's threshold."""
        return self.ints[_CERTAINTY].reshape(len(CERTAINTY_GRID) + 1, 3)

    @property
    def brier_sum(self) -> float:
        return float(self.floats[0])

    @property
    def ece_confidence(self) -> FloatArray:
        return self.floats[1:]

    def add(self, other: Counts, sign: int = 1) -> Counts:
        """Add (sign 1) or subtract (sign -1) another set's counts, in place."""
        self.ints += sign * other.ints
        self.floats += sign * other.floats
        self.risk += sign * other.risk
        for key, cells in other.hitl.items():
            self.hitl[key] = self.hitl.get(key, _zeros(4, 3)) + sign * cells
        if other.split is not None:
            high, low = self.split or (_zeros(3), _zeros(3))
            self.split = (high + sign * other.split[0], low + sign * other.split[1])
        return self

    def add_fields(self, names: Sequence[str], values: Sequence[Any]) -> None:
        """Add a summary row's named fields (INT_FIELDS or FLOAT_FIELDS; None as 0)."""
        for name, value in zip(names, values, strict=True):
            if name in FIELD:
                self.ints[FIELD[name]] += int(value or 0)
            else:
                self.floats[FLOAT_FIELD[name]] += float(value or 0.0)

    def add_hitl(self, key: BpdeKey, cells: IntArray) -> None:
        """Add 4 x 3 winner x label counts of labelled items with this BPDE."""
        self.hitl[key] = self.hitl.get(key, _zeros(4, 3)) + cells.reshape(4, 3)


# ---------------------------------------------------------------- per verdict

def _longer_code(len_a: FloatArray, len_b: FloatArray) -> IntArray:
    """0: lengths unknown or within LENGTH_MARGIN, 1: A longer, 2: B longer."""
    known = np.isfinite(len_a) & np.isfinite(len_b)
    with np.errstate(invalid="ignore"):
        differ = known & (np.abs(len_a - len_b) > LENGTH_MARGIN)
        return np.where(differ, np.where(len_a > len_b, 1, 2), 0).astype(np.int64)


def _position_code(first_ab: npt.NDArray[Any], first_ba: npt.NDArray[Any]) -> IntArray:
    """0: not judged in both orders, 1: the orders' first samples disagree (or one is unparsed),
    2: they agree as win/tie/lose for A."""
    both = (first_ab != ABSENT) & (first_ba != ABSENT)
    agree = both & (first_ab == first_ba) & (first_ab < UNPARSED)
    code: IntArray = (both.astype(np.int64) + agree).astype(np.int64)
    return code


@dataclass(frozen=True)
class StatColumns:
    """Each verdict's label-independent inputs to the statistics (store.models.VerdictRow keeps them
    as stat_* and calls_* columns). Missing floats are NaN; a missing bin is NO_BIN."""

    certainty: FloatArray
    certainty_bin: IntArray  # -1 .. 100 on CERTAINTY_GRID
    confidence: FloatArray
    lambda_bin: IntArray  # -1 .. 4999 on LAMBDA_GRID
    ece_bin: IntArray  # 0 .. 9
    p_a: FloatArray
    position: IntArray  # _position_code
    longer: IntArray  # _longer_code
    calls_first: IntArray
    calls_second: IntArray
    calls_tie: IntArray

    def __len__(self) -> int:
        return int(self.position.shape[0])


def stat_columns(t: VerdictTable) -> StatColumns:
    """The stat columns of a table of verdicts."""
    certainty, confidence = t.certainty, confidence_of(t.p_a, t.certainty)
    has_certainty, has_confidence = np.isfinite(certainty), np.isfinite(confidence)
    return StatColumns(
        certainty=certainty,
        certainty_bin=np.where(has_certainty, certainty_bin(np.where(has_certainty, certainty, 0.0)), NO_BIN),
        confidence=confidence,
        lambda_bin=np.where(has_confidence, lambda_bin(np.where(has_confidence, confidence, 0.0)), NO_BIN),
        ece_bin=np.where(has_confidence, ece_bin(np.where(has_confidence, confidence, 0.5)), NO_BIN),
        p_a=t.p_a,
        position=_position_code(t.first_ab, t.first_ba),
        longer=_longer_code(t.len_a, t.len_b),
        calls_first=t.first_calls.astype(np.int64),
        calls_second=t.second_calls.astype(np.int64),
        calls_tie=t.tie_calls.astype(np.int64),
    )


# ---------------------------------------------------------------- the projection

def _bincount(index: IntArray, weights: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    return np.bincount(index, weights=weights, minlength=size)[:size]


def _int_sums(group: IntArray, groups: int, columns: Sequence[npt.NDArray[Any]]) -> IntArray:
    """(groups, len(columns)) integer sums of each column by group."""
    if groups == 1:
        return np.array([[int(np.sum(c)) for c in columns]], dtype=np.int64).reshape(1, len(columns))
    return np.stack([np.rint(_bincount(group, np.asarray(c, dtype=np.float64), groups)) for c in columns],
                    axis=1).astype(np.int64)


def add_main(out: Sequence[Counts], group: IntArray, winner: npt.NDArray[Any], label: npt.NDArray[Any],
             n: IntArray, abstained: IntArray, position: IntArray, longer: IntArray, calls_first: IntArray,
             calls_second: IntArray, calls_tie: IntArray, p_n: IntArray, p_sum: FloatArray,
             p_squares: FloatArray) -> None:
    """MAIN_FIELDS and the Brier sum. Per row: `n` verdicts with this winner, label, position and
    longer code; how many of them are abstained; their calls by position; how many have a p_a, and
    the sum of those p_a and of their squares."""
    o = Outcomes.of(winner, label)
    differ = n * (longer > 0)
    winner_longer = n * (((winner == A) & (longer == 1)) | ((winner == B) & (longer == 2)))
    label_longer = n * (((label == A) & (longer == 1)) | ((label == B) & (longer == 2)))
    kept = np.where(o.decided, n - abstained, 0)
    columns: list[npt.NDArray[Any]] = [n]
    for w in range(4):
        for lb in range(4):
            columns.append(np.where((winner == w) & (label == lb), n, 0))
    columns += [
        np.where(o.label_ab, p_n, 0), n * (position >= 1), n * (position == 2), calls_first, calls_second,
        calls_tie, np.where(o.ab_winner, differ, 0), np.where(o.ab_winner, winner_longer, 0),
        np.where(o.decided, differ, 0), np.where(o.decided, winner_longer, 0), np.where(o.label_ab, differ, 0),
        np.where(o.label_ab, label_longer, 0), abstained, kept, np.where(o.correct, kept, 0),
    ]
    sums = _int_sums(group, len(out), columns)
    # Brier: (p_a - 1[label = A])^2 summed as sum p^2 - 2 t sum p + t n over the labelled A or B.
    target = (label == A).astype(np.float64)
    brier = np.where(o.label_ab, p_squares - 2.0 * target * p_sum + target * p_n, 0.0)
    brier_sums = _bincount(group, brier, len(out))
    for g, counts in enumerate(out):
        counts.ints[_MAIN] += sums[g]
        counts.floats[0] += brier_sums[g]


def certainty_histogram(group: IntArray, groups: int, winner: npt.NDArray[Any], label: npt.NDArray[Any],
                        n: IntArray, bins: IntArray, size: int) -> IntArray:
    """(groups, size + 1, 3) cumulative [n, labelled, correct] of the items with winner A or B by
    certainty bin (-1 .. size - 1; NO_BIN: no certainty): row k + 1 counts those in bins >= k."""
    o = Outcomes.of(winner, label)
    pool = o.ab_winner & (bins >= -1)
    index = group[pool] * (size + 1) + bins[pool] + 1
    n_pool = n[pool]
    hist = np.stack([_bincount(index, n_pool * flag[pool], groups * (size + 1))
                     for flag in (np.ones_like(o.labelled), o.labelled, o.correct)], axis=-1)
    hist = np.rint(hist).reshape(groups, size + 1, 3).astype(np.int64)
    return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]


def add_certainty(out: Sequence[Counts], group: IntArray, winner: npt.NDArray[Any], label: npt.NDArray[Any],
                  n: IntArray, bins: IntArray) -> None:
    """The cumulative certainty histogram (certainty bins on CERTAINTY_GRID)."""
    hist = certainty_histogram(group, len(out), winner, label, n, bins, len(CERTAINTY_GRID))
    for g, counts in enumerate(out):
        counts.certainty_ge[...] += hist[g]


def split_histogram(group: IntArray, groups: int, winner: npt.NDArray[Any], label: npt.NDArray[Any],
                    n: IntArray, high: npt.NDArray[Any], known: npt.NDArray[Any]) -> list[tuple[IntArray, IntArray]]:
    """Per group, [n, labelled, correct] (high, low) of the items with a known certainty split by
    `high` (certainty >= the threshold): the histogram above with one bin."""
    bins = np.where(known, np.asarray(high, dtype=np.int64) - 1, NO_BIN)
    hist = certainty_histogram(group, groups, winner, label, n, bins, 1)
    return [(hist[g, 1], hist[g, 0] - hist[g, 1]) for g in range(groups)]


def split_from_bin(c: Counts, threshold: float, in_bin_high: IntArray) -> tuple[IntArray, IntArray]:
    """The split at an off-grid threshold from the cumulative certainty histogram and the items of
    the one bin the threshold cuts (`cut_bin`): every item in a higher bin is on the high side,
    every item in a lower bin on the low side, so only that bin's items are compared with the
    threshold (`in_bin_high`: [n, labelled, correct] of those at or above it, split_histogram's
    high side). `c` needs the fields `certainty_fields(threshold)` names."""
    above = cut_bin(threshold) + 2
    high = (c.certainty_ge[above] if above < len(c.certainty_ge) else _zeros(3)) + in_bin_high
    return high, c.certainty_ge[0] - high


def add_reliability(out: Sequence[Counts], group: IntArray, winner: npt.NDArray[Any], label: npt.NDArray[Any],
                    n: IntArray, bins: IntArray, confidence_sum: FloatArray) -> None:
    """The reliability bins of decided items with a confidence: [n, correct] and the confidence sum."""
    o = Outcomes.of(winner, label)
    pool = o.decided & (bins >= 0)
    index = group[pool] * ECE_BINS + bins[pool]
    size = len(out) * ECE_BINS
    n_bin = _bincount(index, n[pool], size).reshape(-1, ECE_BINS)
    correct = _bincount(index, n[pool] * o.correct[pool], size).reshape(-1, ECE_BINS)
    conf = _bincount(index, confidence_sum[pool], size).reshape(-1, ECE_BINS)
    for g, counts in enumerate(out):
        counts.ece[:, 0] += n_bin[g].astype(np.int64)
        counts.ece[:, 1] += correct[g].astype(np.int64)
        counts.ece_confidence[...] += conf[g]


def risk_histogram(group: IntArray, groups: int, winner: npt.NDArray[Any], label: npt.NDArray[Any],
                   n: IntArray, bins: IntArray, size: int) -> IntArray:
    """(groups, size + 1, 2): [decided items, errors] with a confidence by lambda bin + 1 (bins
    -1 .. size - 1 of a candidate grid; NO_BIN: no confidence)."""
    o = Outcomes.of(winner, label)
    pool = o.decided & (bins >= -1)
    index = group[pool] * (size + 1) + bins[pool] + 1
    decided = _bincount(index, n[pool], groups * (size + 1))
    errors = _bincount(index, n[pool] * ~o.correct[pool], groups * (size + 1))
    cells: IntArray = np.rint(np.stack([decided, errors], axis=-1)).astype(np.int64).reshape(groups, size + 1, 2)
    return cells


def add_risk(out: Sequence[Counts], group: IntArray, winner: npt.NDArray[Any], label: npt.NDArray[Any],
             n: IntArray, bins: IntArray) -> None:
    """The lambda histogram (SPEC 4's grid) of decided items with a confidence."""
    hist = risk_histogram(group, len(out), winner, label, n, bins, CANDIDATES)
    for g, counts in enumerate(out):
        counts.risk += hist[g]


def hitl_cells(group: IntArray, winner: npt.NDArray[Any], label: npt.NDArray[Any], n: IntArray,
               bpde: FloatArray, chunk: IntArray | None = None) -> dict[tuple[int, BpdeKey, int], IntArray]:
    """{(group, BPDE group, chunk): 4 x 3 winner x label counts} of the labelled rows (chunk 0 when
    not given): the HITL table, and store.summaries' finer one by chunk of positions."""
    o = Outcomes.of(winner, label)
    pool = o.labelled & (n != 0)
    if not pool.any():
        return {}
    null = np.isnan(bpde[pool])
    value = np.where(null, 0.0, bpde[pool]) + 0.0  # -0.0 is 0.0
    chunks = np.zeros(int(pool.sum()), dtype=np.int64) if chunk is None else chunk[pool]
    keys = np.stack([group[pool].astype(np.float64), null.astype(np.float64), value, chunks.astype(np.float64)])
    unique, inverse = np.unique(keys, axis=1, return_inverse=True)
    inverse = inverse.reshape(-1)
    cells = _bincount(inverse * 12 + winner[pool].astype(np.int64) * 3 + label[pool].astype(np.int64),
                      n[pool], unique.shape[1] * 12).astype(np.int64).reshape(-1, 4, 3)
    return {(int(g), (bool(nl), float(v)), int(c)): cells[i]
            for i, (g, nl, v, c) in enumerate(unique.T.tolist())}


def add_hitl(out: Sequence[Counts], group: IntArray, winner: npt.NDArray[Any], label: npt.NDArray[Any],
             n: IntArray, bpde: FloatArray) -> None:
    """The HITL table: labelled items by BPDE group."""
    for (g, key, _), cells in hitl_cells(group, winner, label, n, bpde).items():
        out[g].add_hitl(key, cells)


@dataclass(frozen=True)
class Rows:
    """Verdicts (n = 1 each) as the projection reads them: codes, flags and stat columns."""

    winner: npt.NDArray[Any]
    label: npt.NDArray[Any]
    abstained: BoolArray
    bpde: FloatArray  # NaN when null
    stats: StatColumns

    @classmethod
    def of(cls, t: VerdictTable, stats: StatColumns | None = None) -> Rows:
        return cls(t.winner, t.label, t.abstained, t.bpde, stats or stat_columns(t))

    def __len__(self) -> int:
        return int(self.winner.shape[0])


def project(rows: Rows, group: IntArray | None = None, groups: int = 1, risk: bool = True,
            hitl: bool = True) -> list[Counts]:
    """The Counts of each group of verdicts (`group[i]`: row i's group, 0 .. groups - 1; all in
    group 0 by default). `risk`, `hitl`: fill those tables too."""
    n_rows = len(rows)
    g = np.zeros(n_rows, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
    out = [Counts() for _ in range(groups)]
    s = rows.stats
    ones = np.ones(n_rows, dtype=np.int64)
    has_p = np.isfinite(s.p_a)
    p = np.where(has_p, s.p_a, 0.0)
    add_main(out, g, rows.winner, rows.label, ones, rows.abstained.astype(np.int64), s.position, s.longer,
             s.calls_first, s.calls_second, s.calls_tie, has_p.astype(np.int64), p, p * p)
    add_certainty(out, g, rows.winner, rows.label, ones, s.certainty_bin)
    add_reliability(out, g, rows.winner, rows.label, ones, s.ece_bin,
                    np.where(np.isfinite(s.confidence), s.confidence, 0.0))
    if risk:
        add_risk(out, g, rows.winner, rows.label, ones, s.lambda_bin)
    if hitl:
        add_hitl(out, g, rows.winner, rows.label, ones, rows.bpde)
    return out


def counts_of(verdicts: Sequence[Verdict] | VerdictTable, risk: bool = True, hitl: bool = True) -> Counts:
    """The Counts of a list (or table) of verdicts."""
    return project(Rows.of(build_table(verdicts)), risk=risk, hitl=hitl)[0]
