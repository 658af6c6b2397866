"""High/low certainty, coverage curve and its area, ECE, Brier (SPEC 4), by hand."""

from __future__ import annotations

import pytest

from calibration.certainty import brier, certainty_split, coverage_auc, coverage_curve, ece, reliability
from tests.support.verdicts import verdict


def test_certainty_split_inclusive_on_the_high_side() -> None:
    vs = [
        verdict("A", "A", p_a=0.9),  # certainty 0.8: high, correct
        verdict("B", "A", p_a=0.05),  # 0.9: high, wrong
        verdict("A", "A", p_a=0.895),  # 0.79: low, correct
        verdict("B", None, p_a=0.4),  # 0.2: low, unlabelled
        verdict("tie", "tie"),  # no winner A/B: on neither side
        verdict(None, "A"),
    ]
    high, low = certainty_split(vs, 0.8)
    assert high == {"threshold": 0.8, "n": 2, "labelled": 2, "correct": 1, "accuracy": 0.5}
    assert low == {"threshold": 0.8, "n": 2, "labelled": 1, "correct": 1, "accuracy": 1.0}


def test_threshold_comparison_is_not_fooled_by_binary_fractions() -> None:
    # 0.1 * 3 = 0.30000000000000004 > 0.3: the cut is rounded to 9 decimals like the certainty
    vs = [verdict("A", "A", p_a=0.65)]  # certainty 0.3
    high, _ = certainty_split(vs, 0.1 * 3)
    assert high["n"] == 1
    assert coverage_curve(vs)[3] == {"threshold": 0.3, "coverage": 1.0, "accuracy": 1.0, "n": 1}


def test_coverage_curve_by_hand() -> None:
    vs = [
        verdict("A", "A", p_a=0.525),  # certainty 0.05, correct
        verdict("B", "A", p_a=0.425),  # 0.15, wrong
        verdict("A", "A", p_a=0.675),  # 0.35, correct
        verdict("B", "B", p_a=0.025),  # 0.95, correct
        verdict("A", None, p_a=0.99),  # unlabelled: not a decided item
    ]
    curve = coverage_curve(vs)
    assert [p["threshold"] for p in curve] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert [p["coverage"] for p in curve] == [1.0, 0.75, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]
    assert curve[0]["accuracy"] == pytest.approx(0.75)
    assert curve[1]["accuracy"] == pytest.approx(2 / 3)
    assert curve[2]["accuracy"] == 1.0
    # Selective accuracy from the most certain down: 1, 1, 2/3, 3/4, each over a quarter of coverage
    assert coverage_auc(vs) == pytest.approx(0.25 * (1 + 1 + 2 / 3 + 3 / 4))


def test_coverage_auc_takes_tied_certainties_together() -> None:
    vs = [verdict("A", "A", p_a=0.95), verdict("A", "A", p_a=0.75), verdict("A", "B", p_a=0.75)]
    # levels: 0.9 -> coverage 1/3, accuracy 1; 0.5 -> coverage 1, accuracy 2/3
    assert coverage_auc(vs) == pytest.approx(1 / 3 + (2 / 3) * (2 / 3))
    assert coverage_auc([verdict("A", None)]) is None


def test_empty_curve_is_null_not_nan() -> None:
    curve = coverage_curve([verdict("A", None)])
    assert curve[0] == {"threshold": 0.0, "coverage": None, "accuracy": None, "n": 0}


def test_ece_and_reliability_table_by_hand() -> None:
    vs = [
        verdict("A", "A", p_a=0.55),  # confidence 0.55 -> bin 1 (0.55-0.60), correct
        verdict("B", "A", p_a=0.45),  # 0.55 -> bin 1, wrong
        verdict("A", "A", p_a=0.95),  # 0.95 -> bin 9, correct
        verdict("B", "B", p_a=0.0),  # 1.00 -> bin 9 (closed on the right), correct
        verdict("tie", "A"),  # not decided
    ]
    value, table = reliability(vs)
    # bin 1: accuracy 0.5 vs confidence 0.55; bin 9: accuracy 1 vs confidence 0.975
    assert value == pytest.approx(0.5 * 0.05 + 0.5 * 0.025)
    assert ece(vs) == value
    assert len(table) == 10
    assert table[1] == {"lo": 0.55, "hi": 0.6, "n": 2, "confidence": pytest.approx(0.55), "accuracy": 0.5}
    assert table[9]["n"] == 2 and table[9]["confidence"] == pytest.approx(0.975)
    assert table[0] == {"lo": 0.5, "hi": 0.55, "n": 0, "confidence": None, "accuracy": None}
    assert ece([verdict("A", None)]) is None


def test_brier_by_hand() -> None:
    vs = [
        verdict("A", "A", p_a=0.9),  # (0.9 - 1)^2 = 0.01
        verdict("B", "B", p_a=0.3),  # (0.3 - 0)^2 = 0.09
        verdict("tie", "tie"),  # tie label: excluded
        verdict(None, "A"),  # no p_a: excluded
        verdict("A", None, p_a=0.2),  # unlabelled: excluded
    ]
    assert brier(vs) == pytest.approx(0.05)
    assert brier([verdict("A", None)]) is None
