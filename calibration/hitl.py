"""BPDE human-in-the-loop (SPEC 3.3): what accuracy would we get if humans labelled the items the
judge was least sure of (highest entropy of its calls' win/tie/lose outcomes)?

The statistic is calibration.from_counts.hitl; this module selects rows in memory: the rows a
selection sends (`hitl_selection`, for the HTML report's queue) and the items it takes from the
BPDE value it cuts through (`cut_items`, what store.stats reads from SQL instead)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from calibration import from_counts
from calibration.counts import counts_of, hitl_n_sent
from calibration.from_counts import Cut
from calibration.table import VerdictTable, build_table
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable


def hitl_selection(verdicts: Verdicts, beta: float) -> np.ndarray:
    """Row indices of the floor(beta * n + 0.5) labelled items with the highest BPDE, most uncertain
    first. The sort is stable, so equal BPDE keeps input order. A null BPDE (no call parsed) ranks
    above every number: the judge said nothing, so that item needs a human most (the order of
    calibration.counts.hitl_order)."""
    t = build_table(verdicts)
    labelled = np.flatnonzero(t.labelled)
    n_sent = hitl_n_sent(beta, labelled.size)
    key = np.where(np.isnan(t.bpde[labelled]), np.inf, t.bpde[labelled])
    order = np.argsort(-key, kind="stable")
    return labelled[order[:n_sent]]


def with_human_labels(verdicts: Verdicts, rows: np.ndarray) -> VerdictTable:
    """The table with the given rows' winners replaced by their human labels."""
    t = build_table(verdicts)
    winner = t.winner.copy()
    winner[rows] = t.label[rows]
    return dataclasses.replace(t, winner=winner)


def cut_items(t: VerdictTable, rows: np.ndarray | None, cut: Cut) -> np.ndarray:
    """The 4 x 3 winner x label counts of the first m labelled rows (among `rows`, all when None)
    with the cut's BPDE value, in input order."""
    (null, value), m = cut
    members = np.arange(len(t)) if rows is None else rows
    bpde = t.bpde[members]
    same = np.isnan(bpde) if null else (bpde == value)
    taken = members[same & t.labelled[members]][:m]
    cells = np.zeros((4, 3), dtype=np.int64)
    np.add.at(cells, (t.winner[taken].astype(np.int64), t.label[taken].astype(np.int64)), 1)
    return cells


def resolve_cuts(t: VerdictTable, members: Mapping[str | None, np.ndarray | None]) -> from_counts.Boundaries:
    """The in-memory `Boundaries` of a table: {set: its rows (None: all)}."""
    def resolve(cuts: Mapping[str | None, Cut]) -> dict[str | None, np.ndarray]:
        return {name: cut_items(t, members[name], cut) for name, cut in cuts.items()}
    return resolve


def hitl(verdicts: Verdicts, beta: float = 0.2, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{beta, n_sent, accuracy, cohen_kappa} after the BPDE selection got their human labels
    (calibration.from_counts.hitl)."""
    t = build_table(verdicts)
    c = counts_of(t, risk=False)
    cut = from_counts.hitl_cut(c, beta)
    taken = None if cut is None else cut_items(t, None, cut)
    return from_counts.hitl(c, beta, taken, resamples, seed)
