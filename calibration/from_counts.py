"""The SPEC 4 report from sufficient statistics (counts) instead of verdicts.

Every SPEC 4 number depends on the verdicts only through a few tables of counts: the judge x human
confusion table (accuracy, counts, Cohen's kappa, Krippendorff's alpha and their bootstrap, which
already resamples the table), a cumulative certainty histogram at 0.01 steps (high/low certainty,
coverage curve), the reliability bins (ECE), a confidence histogram on SPEC 4's own lambda grid
(risk control), sums (Brier, position, length, abstention) and, for the HITL selection, the
confusion of labelled items per BPDE value. Counts add up, so stored per-job summaries summed in SQL give the statistics of
any set of jobs; this module turns such counts into the same dict as `report.statistics`, with the
same code where the step is shared (bootstrap, reliability, risk control).

Exactness: equal to `report.statistics` (floating sums aside) with two documented limits, both
resolved by the caller: the certainty split at a threshold off the 0.01 grid needs the split
itself (`Counts.split`), and the HITL selection at a BPDE value shared across the cut needs the
first m items of that value in input order (`Cut`, `Boundaries`). `coverage_auc` needs every
distinct certainty level and is not produced.

No import of store/ or api/: the caller (store.stats) fetches the counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.agreement import alpha_of_tables, kappa_of_tables
from calibration.bias import position_figures
from calibration.bootstrap import value_with_interval
from calibration.certainty import COVERAGE_THRESHOLDS, ECE_BINS, reliability_from_bins
from calibration.report import BOOTSTRAP_METHOD, DEFAULT_DELTA, json_safe
from calibration.risk import CANDIDATES, MIN_ACCEPTED, risk_from_candidates
from calibration.table import DECIMALS, NAMES, ratio

# Rows of the confusion table: judge winner A, B, tie, null; columns: human label A, B, tie, none.
CODES: dict[str | None, int] = {"A": 0, "B": 1, "tie": 2, None: 3}
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
# SPEC 4's candidate lambdas, rounded as calibration.risk compares them. Lambda bin i holds the
# confidences c with LAMBDA_GRID[i] <= c < LAMBDA_GRID[i + 1], so "confidence >= lambda_i" is
# exactly "bin >= i".
LAMBDA_GRID = np.round(np.linspace(0.0, 1.0, CANDIDATES), DECIMALS)
assert all(round(t, DECIMALS) in CERTAINTY_GRID for t in COVERAGE_THRESHOLDS)


def _bin(k: int) -> str:
    return "m1" if k < 0 else str(k)


# The reliability bins (decided items: n, correct; and the confidence sum, a float) and the
# certainty histogram are fixed-size, so they are fields too: one summary row holds every count but
# the risk grid's and the BPDE groups'. The certainty histogram is cumulative: for each k in -1 ..
# 100, the items with winner A or B and certainty >= GRID[k] (k = -1: any certainty), how many are
# labelled, how many correct. A split at GRID[k] then reads 3 fields, not 100 bins: a query sums
# only the fields its thresholds need (summing all 375 fields costs PostgreSQL more to plan than to run).
ECE_FIELDS = tuple(f"ece_{name}_{b}" for b in range(ECE_BINS) for name in ("n", "correct"))
_CERTAINTY_NAMES = ("n", "labelled", "correct")
CERTAINTY_FIELDS = tuple(f"cert_{name}_ge_{_bin(k)}" for k in range(-1, len(CERTAINTY_GRID))
                         for name in _CERTAINTY_NAMES)
INT_FIELDS = (*MAIN_FIELDS, *ECE_FIELDS, *CERTAINTY_FIELDS)
FLOAT_FIELDS = ("brier_sum", *(f"ece_confidence_{b}" for b in range(ECE_BINS)))
FIELD = {name: i for i, name in enumerate(INT_FIELDS)}
FLOAT_FIELD = {name: i for i, name in enumerate(FLOAT_FIELDS)}
_CONFUSION = slice(FIELD["wa_la"], FIELD["wa_la"] + 16)
_ECE = slice(len(MAIN_FIELDS), len(MAIN_FIELDS) + len(ECE_FIELDS))
_CERTAINTY = slice(_ECE.stop, len(INT_FIELDS))

BpdeKey = tuple[bool, float]
"""(null, value) of a BPDE: null BPDEs rank above every number (calibration.hitl)."""
Cut = tuple[BpdeKey, int]
"""Where a HITL selection cuts through the labelled items sharing a BPDE value: (the value, m), the
selection takes the first m of them in input order."""
Boundaries = Callable[[Mapping[str | None, Cut]], Mapping[str | None, np.ndarray]]
"""{set (None: all the verdicts, else a group name): its cut} -> {set: the 4 x 3 winner x label
counts of the m items the cut takes}. One call for every set of a report, so that the caller can
resolve them together."""


def certainty_bin(certainty: np.ndarray) -> np.ndarray:
    """The certainty bin of each value (-1 .. 100); NaN gives 100, mask it first."""
    return np.searchsorted(CERTAINTY_GRID, certainty, side="right") - 1


def lambda_bin(confidence: np.ndarray) -> np.ndarray:
    """The lambda bin of each confidence (-1 .. CANDIDATES - 1); NaN gives the last, mask it first."""
    return np.searchsorted(LAMBDA_GRID, confidence, side="right") - 1


def certainty_fields(threshold: float) -> tuple[str, ...]:
    """The certainty fields the statistics read at this threshold: any certainty, the coverage
    curve's thresholds, and the threshold itself when it is on the grid."""
    ks = {-1, *(grid_index(t) for t in COVERAGE_THRESHOLDS), grid_index(threshold)}
    return tuple(f"cert_{name}_ge_{_bin(k)}" for k in sorted(k for k in ks if k is not None)
                 for name in _CERTAINTY_NAMES)


def grid_index(threshold: float) -> int | None:
    """k with CERTAINTY_GRID[k] equal to the threshold as the statistics compare it, else None."""
    cut = round(threshold, DECIMALS)
    found = np.flatnonzero(CERTAINTY_GRID == cut)
    return int(found[0]) if found.size else None


def bpde_key(value: float | None) -> BpdeKey:
    """The HITL group of a BPDE: None and NaN together; -0.0 is 0.0 (numpy's sort ties them too)."""
    if value is None or math.isnan(value):
        return (True, 0.0)
    return (False, float(value) + 0.0)


def _zeros(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.int64)


@dataclass
class Counts:
    """The sufficient statistics of one set of verdicts."""

    ints: np.ndarray = field(default_factory=lambda: _zeros(len(INT_FIELDS)))
    floats: np.ndarray = field(default_factory=lambda: np.zeros(len(FLOAT_FIELDS)))
    # (lambda bin + 1) -> [decided items, errors], over finite confidences; only filled when asked
    # for (risk control), it is the one histogram too fine to be fields
    risk: np.ndarray = field(default_factory=lambda: _zeros(CANDIDATES + 1, 2))
    # BPDE group -> 4 x 3 winner x label counts of labelled items
    hitl: dict[BpdeKey, np.ndarray] = field(default_factory=dict)
    # The certainty split at an off-grid threshold, when the caller computed it:
    # ([n, labelled, correct] high, [n, labelled, correct] low).
    split: tuple[np.ndarray, np.ndarray] | None = None

    def __getitem__(self, name: str) -> int:
        return int(self.ints[FIELD[name]])

    # Views into `ints` (writable: adding to them adds to the fields).
    @property
    def confusion(self) -> np.ndarray:
        return self.ints[_CONFUSION].reshape(4, 4)

    @property
    def ece(self) -> np.ndarray:
        """reliability bin -> [decided items, correct]"""
        return self.ints[_ECE].reshape(ECE_BINS, 2)

    @property
    def certainty_ge(self) -> np.ndarray:
        """k + 1 -> [items with winner A or B and certainty >= CERTAINTY_GRID[k], ... labelled,
        ... correct] (k = -1: with any certainty). Counts read from summaries may hold only the
        rows `certainty_fields` names for the request's threshold."""
        return self.ints[_CERTAINTY].reshape(len(CERTAINTY_GRID) + 1, 3)

    def add_certainty_bin(self, k: int, values: Sequence[int]) -> None:
        """Add [n, labelled, correct] of items whose certainty is in bin k (-1 .. 100)."""
        self.certainty_ge[:k + 2] += np.asarray(values, dtype=np.int64)

    @property
    def brier_sum(self) -> float:
        return float(self.floats[0])

    @property
    def ece_confidence(self) -> np.ndarray:
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

    def add_main(self, values: Sequence[Any], brier_sum: float) -> None:
        """Add MAIN_FIELDS counts (None as 0) and a Brier sum."""
        self.ints[:len(MAIN_FIELDS)] += np.fromiter((int(v or 0) for v in values), dtype=np.int64,
                                                    count=len(MAIN_FIELDS))
        self.floats[0] += float(brier_sum or 0.0)

    def add_hitl(self, key: BpdeKey, cells: Iterable[Any]) -> None:
        values = np.fromiter((int(v or 0) for v in cells), dtype=np.int64, count=12).reshape(4, 3)
        self.hitl[key] = self.hitl.get(key, _zeros(4, 3)) + values


def hitl_order(keys: Iterable[BpdeKey]) -> list[BpdeKey]:
    """BPDE groups in selection order: null first, then the highest BPDE."""
    return sorted(keys, key=lambda k: (not k[0], -k[1]))


def statistics_from_counts(
    c: Counts,
    cut_items: np.ndarray | None = None,
    threshold: float = 0.8,
    hitl: float = 0.2,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """What `report.statistics` gives for the verdicts these counts summarize (without
    coverage_auc). `cut_items`: the 4 x 3 counts of the items the HITL selection takes from the
    BPDE value it cuts through (see `hitl_cut`), when it cuts through one."""
    confusion = c.confusion
    table = confusion[:3, :3]  # labelled items with a winner: kappa, alpha, confusion
    counts = {
        "items": c["items"],
        "labelled": int(confusion[:, :3].sum()),
        "decided": int(confusion[:2, :3].sum()),
        "correct": int(np.trace(table)),
        "correct_no_tie": int(confusion[0, 0] + confusion[1, 1]),
    }
    high, low = _certainty_split(c, threshold)
    ece, reliability_table = reliability_from_bins(c.ece[:, 0], c.ece_confidence, c.ece[:, 1])
    out: dict[str, Any] = {
        "accuracy": ratio(counts["correct"], counts["labelled"]),
        "accuracy_no_tie": ratio(counts["correct_no_tie"], counts["decided"]),
        "counts": counts,
        "cohen_kappa": value_with_interval(table, kappa_of_tables, bootstrap_resamples, seed),
        # The closed form on the table is what the krippendorff package computes for two coders
        # who rated every unit (tests/test_calibration_agreement.py); equal to rounding.
        "krippendorff_alpha": value_with_interval(table, alpha_of_tables, bootstrap_resamples, seed),
        "high_certainty": high,
        "low_certainty": low,
        "coverage_curve": _coverage_curve(c, counts["decided"]),
        "ece": ece,
        "brier": c.brier_sum / c["brier_n"] if c["brier_n"] else None,
        "position_consistency": ratio(c["pos_agree"], c["pos_both"]),
        "first_position_rate": None,
        "prefers_longer": ratio(c["len_decided_longer"], c["len_decided"]),
        "hitl": _hitl(c, hitl, cut_items, bootstrap_resamples, seed),
    }
    first = _position_counts(c)
    out["first_position_rate"] = first["rate"]
    if target_accuracy is not None:
        out["risk_control"] = _risk_control(c, counts["decided"], target_accuracy,
                                            DEFAULT_DELTA if delta is None else delta)
    out["reliability"] = reliability_table
    out["first_position"] = first
    out["length"] = {
        "pairs": c["len_pairs"],
        "judge_prefers_longer": ratio(c["len_pairs_longer"], c["len_pairs"]),
        "labelled_pairs": c["len_labelled"],
        "human_prefers_longer": ratio(c["len_labelled_longer"], c["len_labelled"]),
    }
    out["abstention"] = {
        "abstained": c["abstained"],
        "coverage": ratio(c["kept"], counts["decided"]),
        "accuracy": ratio(c["kept_correct"], c["kept"]),
    }
    out["confusion"] = {judge: {human: int(table[i, j]) for j, human in enumerate(NAMES)}
                        for i, judge in enumerate(NAMES)}
    return out


def _side(threshold: float, n_labelled_correct: np.ndarray) -> dict[str, Any]:
    n, labelled, correct = (int(v) for v in n_labelled_correct)
    return {"threshold": threshold, "n": n, "labelled": labelled, "correct": correct,
            "accuracy": ratio(correct, labelled)}


def _certainty_split(c: Counts, threshold: float) -> tuple[dict[str, Any], dict[str, Any]]:
    if c.split is not None:
        high, low = c.split
    else:
        k = grid_index(threshold)
        if k is None:
            raise ValueError(f"threshold {threshold} is not on the certainty grid; pass Counts.split")
        high = c.certainty_ge[k + 1]
        low = c.certainty_ge[0] - high
    return _side(threshold, high), _side(threshold, low)


def _coverage_curve(c: Counts, decided: int) -> list[dict[str, Any]]:
    out = []
    for threshold in COVERAGE_THRESHOLDS:
        k = grid_index(threshold)
        assert k is not None
        kept = c.certainty_ge[k + 1]
        n, correct = int(kept[1]), int(kept[2])
        out.append({"threshold": threshold, "coverage": ratio(n, decided), "accuracy": ratio(correct, n), "n": n})
    return out


def _position_counts(c: Counts) -> dict[str, Any]:
    return position_figures(c["calls_first"], c["calls_second"], c["calls_tie"])


def _risk_control(c: Counts, decided: int, target: float, delta: float) -> dict[str, Any]:
    # Candidate i accepts the confidences in lambda bins >= i: suffix sums over bins 0 .. 4999
    # (index 0 is bin -1, confidences below 0, never accepted).
    suffix = np.cumsum(c.risk[1:][::-1], axis=0)[::-1]
    return risk_from_candidates(suffix[:, 0], suffix[:, 1], decided, target, delta, MIN_ACCEPTED)


def _hitl_walk(c: Counts, beta: float) -> tuple[int, int, np.ndarray, Cut | None]:
    """(labelled, n_sent, counts of the whole BPDE values selected, the cut or None): the selection
    of calibration.hitl.hitl_selection, by BPDE value."""
    confusion = c.confusion
    labelled = int(confusion[:, :3].sum())
    n_sent = math.floor(round(beta * labelled, 9) + 0.5)  # as calibration.hitl.hitl_selection
    selected = np.zeros((4, 3), dtype=np.int64)
    remaining = n_sent
    for key in hitl_order(c.hitl):
        if remaining <= 0:
            break
        cells = c.hitl[key]
        size = int(cells.sum())
        if size > remaining:
            return labelled, n_sent, selected, (key, remaining)
        selected += cells
        remaining -= size
    return labelled, n_sent, selected, None


def hitl_cut(c: Counts, beta: float) -> Cut | None:
    """Where the HITL selection at beta cuts through a BPDE value, if it does."""
    return _hitl_walk(c, beta)[3]


def _hitl(c: Counts, beta: float, cut_items: np.ndarray | None, resamples: int, seed: int) -> dict[str, Any]:
    """calibration.hitl.hitl from counts: the selected items' winners become their labels."""
    labelled, n_sent, selected, cut = _hitl_walk(c, beta)
    if cut is not None:
        if cut_items is None or int(cut_items.sum()) != cut[1]:
            raise ValueError(f"the HITL cut at BPDE {cut[0]} needs its first {cut[1]} items")
        selected = selected + cut_items
    confusion = c.confusion
    table = confusion[:3, :3] - selected[:3] + np.diag(selected.sum(axis=0))
    correct = int(np.trace(confusion[:3, :3]) - np.trace(selected[:3]) + selected.sum())
    return {
        "beta": beta,
        "n_sent": n_sent,
        "accuracy": ratio(correct, labelled),
        "cohen_kappa": value_with_interval(table, kappa_of_tables, resamples, seed),
    }


def report_from_counts(
    total: Counts,
    boundaries: Boundaries,
    models: Iterable[str],
    by_group: Mapping[str, Counts] | None = None,
    group_by: str | None = None,
    threshold: float = 0.8,
    hitl: float = 0.2,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """`report.build_report` from counts: `total` for everything, `by_group` per group name (groups
    without items are left out, as build_report never sees them), `boundaries` the resolver of the
    HITL cuts (see `Boundaries`). `models`: the judge models of the verdicts."""
    options: dict[str, Any] = {"threshold": threshold, "hitl": hitl, "target_accuracy": target_accuracy,
                               "delta": delta, "bootstrap_resamples": bootstrap_resamples, "seed": seed}
    sets: dict[str | None, Counts] = {None: total}
    if group_by is not None:
        sets.update((name, counts) for name, counts in sorted((by_group or {}).items()) if counts["items"] > 0)
    cuts = {name: cut for name, counts in sets.items() if (cut := hitl_cut(counts, hitl)) is not None}
    taken = boundaries(cuts) if cuts else {}
    report = statistics_from_counts(total, taken.get(None), **options)
    if group_by is not None:
        report["by_group"] = {name: statistics_from_counts(counts, taken.get(name), **options)
                              for name, counts in sets.items() if name is not None}
        report["group_by"] = group_by
    names = sorted(set(models))
    report["simulated"] = any(name.startswith("sim-") for name in names)
    report["models"] = names
    report["bootstrap"] = {"resamples": bootstrap_resamples, "seed": seed, "method": BOOTSTRAP_METHOD}
    return json_safe(report)  # type: ignore[no-any-return]
