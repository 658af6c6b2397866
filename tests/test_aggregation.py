"""Aggregation exactly as SPEC section 3, on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from judge.aggregation import aggregate, bpde
from judge.records import Call


def choice(order: str | None, c: str | None, u: float | None = None, sample: int = 0, error: str | None = None) -> Call:
    return Call(order=order, sample=sample, choice=c, certainty=u, error=error)  # type: ignore[arg-type]


def scores(order: str, a: float, b: float, sample: int = 0) -> Call:
    return Call(order=order, sample=sample, scores=[a, b])  # type: ignore[arg-type]


def test_balanced_choice_certainty() -> None:
    # AB: A at 0.8 -> v = 0.9; BA: B at 0.4 -> v = 0.3; p_a = (0.9 + 0.3) / 2 = 0.6
    result = aggregate([choice("AB", "A", 0.8), choice("BA", "B", 0.4)], "choice", swapped=True)
    assert result.p_a == 0.6
    assert result.certainty == 0.2
    assert result.winner == "A"
    assert result.consistent is False
    assert result.bpde == round(math.log(2), 9)


def test_each_order_weighs_the_same_however_many_samples_parsed() -> None:
    calls = [
        choice("AB", "A", 1.0, 0), choice("AB", "A", 1.0, 1), choice("AB", "A", 1.0, 2),  # mean v = 1.0
        choice("BA", "B", 0.6, 0),  # v = 0.2
        choice("BA", None, None, 1, error="unparseable: no choice"),
    ]
    result = aggregate(calls, "choice", swapped=True)
    assert result.p_a == 0.6  # (1.0 + 0.2) / 2, not the pooled mean 0.85
    assert result.winner == "A"


def test_missing_certainty_counts_as_half_and_tie_votes_half() -> None:
    result = aggregate([choice("AB", "A"), choice("BA", "tie")], "choice", swapped=True)
    assert result.p_a == 0.625  # (0.75 + 0.5) / 2
    assert result.winner == "A"


def test_exact_tie_after_rounding() -> None:
    result = aggregate([choice("AB", "A", 0.7), choice("BA", "B", 0.7)], "choice", swapped=True)
    assert result.p_a == 0.5 and result.winner == "tie" and result.certainty == 0.0


def test_recorded_certainty_ninety_is_exactly_point_nine() -> None:
    result = aggregate([choice("AB", "A", 0.9)], "choice", swapped=False)
    assert result.certainty == 0.9
    assert result.consistent is None


def test_no_parsed_call_means_no_winner_and_abstention_when_a_threshold_is_set() -> None:
    calls = [choice("AB", None, error="unparseable"), choice("BA", None, error="provider: 500")]
    result = aggregate(calls, "choice", swapped=True, certainty_threshold=0.5)
    assert result.winner is None and result.p_a is None and result.certainty is None
    assert result.abstained is True and result.consistent is False and result.bpde is None


def test_abstain_below_threshold_only() -> None:
    calls = [choice("AB", "A", 0.6), choice("BA", "A", 0.6)]
    assert aggregate(calls, "choice", True, certainty_threshold=0.6).abstained is False
    assert aggregate(calls, "choice", True, certainty_threshold=0.61).abstained is True
    assert aggregate(calls, "choice", True, certainty_threshold=None).abstained is False


def test_faireval_scores_plain_mean_over_both_orders() -> None:
    # k = 3 per order, one invalid sample left out: CS_A = (8+9+7+6+8)/5 = 7.6, CS_B = (7+7+9+8+6)/5 = 7.4
    calls = [scores("AB", 8, 7, 0), scores("AB", 9, 7, 1), scores("AB", 7, 9, 2),
             scores("BA", 6, 8, 0), scores("BA", 8, 6, 1), Call(order="BA", sample=2, error="unparseable")]
    result = aggregate(calls, "scores", swapped=True)
    assert result.winner == "A"
    assert result.certainty == pytest.approx(0.2 / 9, abs=1e-9)
    assert result.p_a == round(0.5 + 0.2 / 18, 9)
    # outcomes: win, win, lose, lose, win -> p = 3/5, 2/5
    assert result.bpde == round(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)), 9)
    assert result.consistent is False  # first samples: AB says A wins, BA says B wins


def test_scores_exact_equality_is_a_tie() -> None:
    result = aggregate([scores("AB", 9.5, 9), scores("BA", 9, 9.5)], "scores", swapped=True)
    assert result.winner == "tie" and result.p_a == 0.5 and result.certainty == 0.0


def test_bpde_of_unanimous_and_split_calls() -> None:
    assert bpde([choice("AB", "A", 0.9), choice("BA", "A", 0.2)]) == 0.0
    three_way = [choice("AB", "A"), choice("BA", "B"), choice("AB", "tie", sample=1)]
    assert bpde(three_way) == round(math.log(3), 9)


def test_scores_certainty_from_the_exact_means_not_rounded_ones() -> None:
    # k = 6, one order: CS_A = 53/6 = 8.8333.., CS_B = 52/6 = 8.6666..; CS_A - CS_B = 1/6 exactly, so
    # certainty = round(1/54, 9) = 0.018518519 and p_a = round(0.5 + 1/108, 9) = 0.509259259. Rounding
    # the means first (8.833333333 - 8.666666667 = 0.166666666) gave 0.018518518.
    a_scores, b_scores = [9, 9, 9, 9, 9, 8], [9, 9, 9, 9, 8, 8]
    calls = [scores("AB", a, b, i) for i, (a, b) in enumerate(zip(a_scores, b_scores, strict=True))]
    result = aggregate(calls, "scores", swapped=False)
    assert result.winner == "A"
    assert result.certainty == 0.018518519
    assert result.p_a == 0.509259259
