"""judge.batching.ended: the one reading of an ended provider batch's outcomes (both batch stores)."""

from __future__ import annotations

from judge.batching import ended
from judge.providers.base import CallResult
from judge.providers.batch_api import BatchOutcome


def test_each_request_is_answered_or_failed_and_requests_without_an_outcome_failed_with_no_result() -> None:
    whole, cut = CallResult(text="[[A]]"), CallResult(text="[[B", truncated_from=9)
    end = ended(["a", "b", "c", "d", "e"], [
        BatchOutcome("a", whole), BatchOutcome("b", cut), BatchOutcome("c", error="expired"),
        BatchOutcome("d"), BatchOutcome("zz", whole)])
    assert end.answered == {"a": whole, "b": cut}
    assert end.failed == {"c": "expired", "d": "failed", "e": "no result"}
    assert end.whole == {"a": whole}  # the call cache keeps whole answers only


def test_of_two_outcomes_of_one_request_the_first_counts() -> None:
    first, second = CallResult(text="[[A]]"), CallResult(text="[[B]]")
    assert ended(["a"], [BatchOutcome("a", first), BatchOutcome("a", second)]).answered == {"a": first}
    assert ended(["a"], [BatchOutcome("a", error="x"), BatchOutcome("a", second)]).failed == {"a": "x"}
