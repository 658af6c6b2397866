"""BPDE human-in-the-loop (SPEC 3.3): what accuracy would we get if humans labelled the items the
judge was least sure of (highest entropy of its calls' win/tie/lose outcomes)?"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.agreement import accuracy, cohen_kappa
from calibration.table import VerdictTable, build_table
from judge.records import Verdict

Verdicts = Sequence[Verdict] | VerdictTable


def hitl_selection(verdicts: Verdicts, beta: float) -> np.ndarray:
    """Row indices of the floor(beta * n + 0.5) labelled items with the highest BPDE, most uncertain
    first. The sort is stable, so equal BPDE keeps input order. A null BPDE (no call parsed) ranks
    above every number: the judge said nothing, so that item needs a human most."""
    t = build_table(verdicts)
    labelled = np.flatnonzero(t.labelled)
    # round() first: 0.2 * 80 is 16.000000000000004 in binary and must not round differently
    n_sent = math.floor(round(beta * labelled.size, 9) + 0.5)
    key = np.where(np.isnan(t.bpde[labelled]), np.inf, t.bpde[labelled])
    order = np.argsort(-key, kind="stable")
    return labelled[order[:n_sent]]


def with_human_labels(verdicts: Verdicts, rows: np.ndarray) -> VerdictTable:
    """The table with the given rows' winners replaced by their human labels."""
    t = build_table(verdicts)
    winner = t.winner.copy()
    winner[rows] = t.label[rows]
    return dataclasses.replace(t, winner=winner)


def hitl(verdicts: Verdicts, beta: float = 0.2, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{beta, n_sent, accuracy, cohen_kappa} after the BPDE selection got their human labels.

    accuracy is SPEC 4's `accuracy` (over all labelled items) and cohen_kappa has the same shape as the
    report's top-level one ({"value", "ci95"})."""
    t = build_table(verdicts)
    rows = hitl_selection(t, beta)
    replaced = with_human_labels(t, rows)
    return {
        "beta": beta,
        "n_sent": int(rows.size),
        "accuracy": accuracy(replaced),
        "cohen_kappa": cohen_kappa(replaced, resamples=resamples, seed=seed),
    }
