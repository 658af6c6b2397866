"""Position consistency, first-position rate and length preference (SPEC 4), by hand."""

from __future__ import annotations

import pytest

from calibration.bias import (
    first_position_rate,
    length_counts,
    position_consistency,
    position_counts,
    prefers_longer,
)
from tests.support.verdicts import call, verdict


def test_position_consistency_by_hand() -> None:
    vs = [
        verdict(calls=[call("AB", "A"), call("BA", "A")]),  # agree
        verdict(calls=[call("AB", "A"), call("BA", "B")]),  # disagree
        verdict(calls=[call("AB", "A"), call("BA", None, raw="??", error="unparsed")]),  # unparsed: disagree
        verdict(calls=[call("AB", "A")]),  # one order only: not counted
        # first samples (sample 0) agree though sample 1 of AB differs; listed out of order on purpose
        verdict(calls=[call("AB", "A", sample=1), call("BA", "B"), call("AB", "B", sample=0)]),
        # scores: AB says A wins, BA says tie: disagree
        verdict(calls=[call("AB", None, scores=[8, 6]), call("BA", None, scores=[7, 7])]),
    ]
    assert position_consistency(vs) == pytest.approx(2 / 5)
    assert position_consistency([verdict(calls=[call(None, "A")])]) is None


def test_first_position_rate_counts_calls() -> None:
    calls = [
        call("AB", "A"),  # A shown first and chosen: first
        call("AB", "B", sample=1),  # second
        call("BA", "B"),  # B shown first and chosen: first
        call("BA", "A", sample=1),  # second
        call("BA", "tie", sample=2),  # tie: denominator only
        call("BA", "B", sample=3),  # first
        call("AB", None, sample=2, error="unparsed"),  # not parsed: not counted
        call(None, "A"),  # no order: not counted
        call("AB", None, sample=3, scores=[9, 2]),  # scores, A wins shown first: first
    ]
    vs = [verdict(calls=calls)]
    assert position_counts(vs) == {
        "calls": 7,
        "first": 4,
        "second": 2,
        "tie": 1,
        "rate": pytest.approx(4 / 7),
        "rate_no_tie": pytest.approx(4 / 6),
    }
    assert first_position_rate(vs) == pytest.approx(4 / 7)
    assert first_position_rate([verdict()]) is None


def test_prefers_longer_by_hand() -> None:
    vs = [
        verdict("A", None, len_a=100, len_b=50),  # unlabelled: not decided, excluded
        verdict("B", "B", len_a=100, len_b=50),  # shorter chosen
        verdict("A", "A", len_a=60, len_b=40),  # differ by 20: excluded
        verdict("B", "A", len_a=10, len_b=200),  # longer chosen
        verdict("tie", "tie", len_a=100, len_b=10),  # no winner A/B: excluded
        verdict("A", "A"),  # lengths unknown: excluded
        verdict("A", "A", len_a=130, len_b=100),  # exactly 30: excluded
        verdict("A", "B", len_a=131, len_b=100),  # 31: longer chosen
    ]
    assert prefers_longer(vs) == pytest.approx(2 / 3)  # over decided (labelled) items, as SPEC 4 defines them
    lengths = length_counts(vs)
    assert lengths["pairs"] == 4 and lengths["labelled_pairs"] == 3
    # humans on labelled pairs: B (shorter), A (shorter), B (shorter)
    assert lengths["human_prefers_longer"] == 0.0
    assert prefers_longer([verdict()]) is None
