"""Verdicts as columns of numpy arrays, so that every statistic is a vectorised expression.

Converting once (one pass over the pydantic objects) and then slicing by masks is what keeps a report
of 100,000 verdicts within seconds, including per-group reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from judge.aggregation import outcome
from judge.records import Call, Verdict

# Integer codes for winners and labels. NONE marks a null winner / a missing human label.
A, B, TIE, NONE = 0, 1, 2, 3
CODES: dict[str | None, int] = {"A": A, "B": B, "tie": TIE, None: NONE}
NAMES = ("A", "B", "tie")

# Per-item outcome of the first sample of an order, as win/tie/lose for A (aggregation.outcome).
# UNPARSED: the first sample exists but was not parsed; ABSENT: no call in that order.
WIN, DRAW, LOSE, UNPARSED, ABSENT = 0, 1, 2, 3, 4
_OUTCOMES = {"win": WIN, "tie": DRAW, "lose": LOSE}

DECIMALS = 9  # SPEC 3.1: p_a and certainty are compared after rounding to 9 decimals

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class VerdictTable:
    """One row per verdict, in input order. Missing floats are NaN; missing codes are NONE."""

    winner: np.ndarray  # int8 codes
    label: np.ndarray  # int8 codes
    p_a: np.ndarray  # float64, NaN when null
    certainty: np.ndarray  # float64; |2 p_a - 1| when the verdict leaves it null but has p_a
    bpde: np.ndarray  # float64, NaN when null
    abstained: np.ndarray  # bool
    len_a: np.ndarray  # float64, NaN when unknown
    len_b: np.ndarray
    first_ab: np.ndarray  # int8 outcome code of the first AB sample (or ABSENT)
    first_ba: np.ndarray  # int8 outcome code of the first BA sample (or ABSENT)
    first_calls: np.ndarray  # int64: parsed calls choosing the answer shown first
    second_calls: np.ndarray  # int64: parsed calls choosing the answer shown second
    tie_calls: np.ndarray  # int64: parsed calls with an order that chose neither
    simulated: np.ndarray  # bool: the judge model is a `sim-` model

    def __len__(self) -> int:
        return int(self.winner.shape[0])

    def subset(self, mask: np.ndarray) -> VerdictTable:
        return VerdictTable(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    # SPEC 4's vocabulary (`Outcomes`), as masks over the rows.
    @property
    def outcomes(self) -> Outcomes:
        return Outcomes.of(self.winner, self.label)

    @property
    def labelled(self) -> np.ndarray:
        return self.outcomes.labelled

    @property
    def ab_winner(self) -> np.ndarray:
        """Winner A or B, labelled or not."""
        return self.outcomes.ab_winner

    @property
    def decided(self) -> np.ndarray:
        """SPEC 4 `decided`: labelled items with winner A or B."""
        return self.outcomes.decided

    @property
    def correct(self) -> np.ndarray:
        """Winner equals the label (False where either is missing)."""
        return self.outcomes.correct

    @property
    def confidence(self) -> np.ndarray:
        return confidence_of(self.p_a, self.certainty)


@dataclass(frozen=True)
class Outcomes:
    """SPEC 4's vocabulary as masks over winner and label codes (calibration.table's): the one
    definition of labelled, decided and correct."""

    labelled: BoolArray  # a human label
    ab_winner: BoolArray  # winner A or B, labelled or not
    decided: BoolArray  # SPEC 4 `decided`: labelled items with winner A or B
    correct: BoolArray  # winner equals the label (False where either is missing)
    label_ab: BoolArray  # labelled A or B (Brier, the humans' length preference)

    @classmethod
    def of(cls, winner: npt.NDArray[Any], label: npt.NDArray[Any]) -> Outcomes:
        labelled = label != NONE
        ab_winner = (winner == A) | (winner == B)
        return cls(labelled=labelled, ab_winner=ab_winner, decided=labelled & ab_winner,
                   correct=labelled & (winner == label), label_ab=(label == A) | (label == B))


def confidence_of(p_a: FloatArray, certainty: FloatArray) -> FloatArray:
    """max(p_a, 1 - p_a), falling back on (1 + certainty) / 2 when p_a is null; rounded (SPEC 3.1)."""
    conf = np.maximum(p_a, 1.0 - p_a)
    conf = np.where(np.isnan(conf), (1.0 + certainty) / 2.0, conf)
    return np.asarray(np.round(conf, DECIMALS), dtype=np.float64)


def _call_columns(calls: Sequence[Call]) -> tuple[int, int, int, int, int]:
    """(first AB outcome, first BA outcome, first, second, tie) of one verdict's calls, in one pass.

    The first sample of an order is its lowest sample number; its outcome is win/tie/lose for A
    (judge.aggregation.outcome), UNPARSED, or ABSENT when the order has no call. first/second/tie
    count parsed calls with an order by the position of the answer they chose.
    """
    firsts: dict[str, Call] = {}
    first = second = tie = 0
    for call in calls:
        order = call.order
        if order is None:
            continue
        current = firsts.get(order)
        if current is None or call.sample < current.sample:
            firsts[order] = call
        if not call.parsed:
            continue
        result = outcome(call)
        if result == "tie":
            tie += 1
        elif (result == "win") == (order == "AB"):
            first += 1  # A won while shown first, or B won while shown first
        else:
            second += 1
    codes = []
    for shown in ("AB", "BA"):
        first_call = firsts.get(shown)
        if first_call is None:
            codes.append(ABSENT)
        elif not first_call.parsed:
            codes.append(UNPARSED)
        else:
            codes.append(_OUTCOMES[outcome(first_call)])
    return codes[0], codes[1], first, second, tie


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def build_table(verdicts: Sequence[Verdict] | VerdictTable) -> VerdictTable:
    """Columns of a list of verdicts (a table is returned unchanged)."""
    if isinstance(verdicts, VerdictTable):
        return verdicts
    n = len(verdicts)
    winner = np.empty(n, dtype=np.int8)
    label = np.empty(n, dtype=np.int8)
    p_a = np.empty(n)
    certainty = np.empty(n)
    bpde = np.empty(n)
    abstained = np.empty(n, dtype=bool)
    len_a = np.empty(n)
    len_b = np.empty(n)
    first_ab = np.empty(n, dtype=np.int8)
    first_ba = np.empty(n, dtype=np.int8)
    first_calls = np.empty(n, dtype=np.int64)
    second_calls = np.empty(n, dtype=np.int64)
    tie_calls = np.empty(n, dtype=np.int64)
    simulated = np.empty(n, dtype=bool)
    for i, v in enumerate(verdicts):
        winner[i] = CODES[v.winner]
        label[i] = CODES[v.human_label]
        p_a[i] = _float(v.p_a)
        certainty[i] = _float(v.certainty)
        bpde[i] = _float(v.bpde)
        abstained[i] = bool(v.abstained)
        len_a[i] = _float(v.len_a)
        len_b[i] = _float(v.len_b)
        first_ab[i], first_ba[i], first_calls[i], second_calls[i], tie_calls[i] = _call_columns(v.deciding_calls())
        simulated[i] = v.judge.model.startswith("sim-")
    p_a = np.round(p_a, DECIMALS)
    certainty = np.where(np.isnan(certainty), np.abs(2.0 * p_a - 1.0), certainty)
    certainty = np.round(certainty, DECIMALS)
    return VerdictTable(
        winner=winner,
        label=label,
        p_a=p_a,
        certainty=certainty,
        bpde=bpde,
        abstained=abstained,
        len_a=len_a,
        len_b=len_b,
        first_ab=first_ab,
        first_ba=first_ba,
        first_calls=first_calls,
        second_calls=second_calls,
        tie_calls=tie_calls,
        simulated=simulated,
    )


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, or None (JSON null) when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else None
