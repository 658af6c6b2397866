"""The runner in-process: `Judge` around the scripted MockProvider (judge/providers/mock.py), no
simulator, no subprocess. Re-asks, the cache, provider errors, the call deadline, the raw-answer
cap, cancellation, and both orders and k samples aggregated into verdicts, against expectations
computed by hand from SPEC 3."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from judge.attempts import REASK
from judge.cache import SqliteCallCache
from judge.profiles import JudgeProfile, load_profile
from judge.providers.base import CallRequest, CallResult, ProviderError, create_provider
from judge.providers.mock import MockProvider, ScriptExhausted
from judge.records import Call, PairItem, Verdict
from judge.runner import Judge
from judge.settings import reset_settings

ITEM = PairItem(id="q1", prompt="How should I start saving?", response_a="Open a savings account.",
                response_b="Track your spending first.", persona="The person is 25 years old.", human_label="A")


def profile(name: str = "persona-certainty", **overrides: Any) -> JudgeProfile:
    return load_profile(name, **overrides)


def judge_one(judge_profile: JudgeProfile, script: Any, item: PairItem = ITEM, **options: Any
              ) -> tuple[Verdict, MockProvider]:
    provider = MockProvider(script, **{k: options.pop(k) for k in ("delay_s", "usage") if k in options})

    async def run() -> Verdict:
        async with Judge(judge_profile, provider=provider, **options) as judge:
            return await judge.judge_item(item)

    return asyncio.run(run()), provider


def by_request(answers: dict[tuple[str, int, int], Any]) -> Callable[[CallRequest], Any]:
    """A script keyed by (order, sample, attempt)."""
    return lambda request: answers[(request.order, request.sample, request.attempt)]


def user_text(request: CallRequest) -> str:
    return "\n".join(m["content"] for m in request.messages if m["role"] == "user")


# ---------------------------------------------------------------- both orders, k samples, aggregation

def test_both_orders_and_two_samples_aggregate_as_spec_3() -> None:
    script = by_request({
        ("AB", 0, 0): "[[A]] [[80]]",   # A shown first: A, u = 0.8 -> v = 0.9
        ("AB", 1, 0): "[[A]] [[60]]",   # A, u = 0.6 -> v = 0.8
        ("BA", 0, 0): "[[B]] [[100]]",  # B shown first, so [[B]] is A: u = 1.0 -> v = 1.0
        ("BA", 1, 0): "[[A]] [[40]]",   # [[A]] is B: u = 0.4 -> v = 0.3
    })
    verdict, provider = judge_one(profile(samples=2), script)

    assert [(c.order, c.sample, c.choice, c.certainty) for c in verdict.calls] == [
        ("AB", 0, "A", 0.8), ("AB", 1, "A", 0.6), ("BA", 0, "A", 1.0), ("BA", 1, "B", 0.4)]
    # p_A = mean over orders of the mean vote: ((0.9 + 0.8) / 2 + (1.0 + 0.3) / 2) / 2 = 0.75
    assert verdict.p_a == 0.75 and verdict.certainty == 0.5 and verdict.winner == "A"
    assert verdict.consistent is True  # the first samples of both orders pick A
    # outcomes win, win, win, lose: H = -(3/4 ln 3/4 + 1/4 ln 1/4)
    assert verdict.bpde == round(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), 9)
    assert verdict.abstained is False and verdict.error is None
    assert (verdict.human_label, verdict.len_a, verdict.len_b) == ("A", 23, 26)

    assert sorted((r.order, r.sample) for r in provider.requests) == [("AB", 0), ("AB", 1), ("BA", 0), ("BA", 1)]
    for request in provider.requests:
        assert request.extra == {"x-pjudge-sample": str(request.sample)} and request.attempt == 0
        text = user_text(request)
        first, second = ((ITEM.response_a, ITEM.response_b) if request.order == "AB"
                         else (ITEM.response_b, ITEM.response_a))
        assert text.index(first) < text.index(second)
        assert "The person is 25 years old." in text


def test_orders_that_disagree_are_inconsistent_and_the_threshold_abstains() -> None:
    script = by_request({("AB", 0, 0): "[[A]] [[90]]",   # A: v = 0.95
                         ("BA", 0, 0): "[[A]] [[50]]"})  # B shown first: B, v = 0.25
    verdict, _ = judge_one(profile(certainty_threshold=0.6), script)
    # p_A = (0.95 + 0.25) / 2 = 0.6, certainty |2 * 0.6 - 1| = 0.2 < 0.6
    assert (verdict.winner, verdict.p_a, verdict.certainty) == ("A", 0.6, 0.2)
    assert verdict.consistent is False and verdict.abstained is True
    assert verdict.bpde == round(math.log(2), 9)


def test_one_order_without_swap_is_neither_consistent_nor_inconsistent() -> None:
    verdict, provider = judge_one(profile(swap=False), "[[B]] [[70]]")
    assert [r.order for r in provider.requests] == ["AB"]
    assert (verdict.winner, verdict.p_a, verdict.certainty, verdict.consistent) == ("B", 0.15, 0.7, None)


def test_a_tie_votes_one_half_and_a_missing_certainty_counts_as_one_half() -> None:
    script = by_request({("AB", 0, 0): "[[C]]", ("BA", 0, 0): "[[B]]"})  # tie: 0.5; A without certainty: 0.75
    verdict, _ = judge_one(profile("persona-tie"), script)
    assert [(c.choice, c.certainty) for c in verdict.calls] == [("tie", None), ("A", None)]
    assert (verdict.winner, verdict.p_a, verdict.certainty) == ("A", 0.625, 0.25)


def test_scores_in_both_orders_average_in_the_items_own_labels() -> None:
    script = by_request({("AB", 0, 0): "A is concise.\nAssistant 1: 8\nAssistant 2: 6",
                         ("BA", 0, 0): "B is vague.\n7\n9"})  # B shown first: B 7, A 9
    verdict, _ = judge_one(profile("faireval-scores", samples=1), script)
    assert [c.scores for c in verdict.calls] == [[8.0, 6.0], [9.0, 7.0]]
    # cs_A = (8 + 9) / 2 = 8.5, cs_B = (6 + 7) / 2 = 6.5; certainty 2 / 9, p_A = 0.5 + 2 / 18
    assert verdict.winner == "A"
    assert verdict.certainty == round(2 / 9, 9) and verdict.p_a == round(0.5 + 2 / 18, 9)
    assert verdict.consistent is True and verdict.bpde == 0.0


def test_tokens_and_cost_are_summed_over_attempts() -> None:
    script = by_request({("AB", 0, 0): "no idea", ("AB", 0, 1): "[[A]] [[80]]"})
    verdict, _ = judge_one(profile(swap=False), script, usage=(1000, 100))
    (call,) = verdict.calls
    # two attempts of 1000 input and 100 output tokens at 2.5 and 10 USD per million
    assert (call.input_tokens, call.output_tokens, call.attempts) == (2000, 200, 2)
    assert call.cost_usd == round(2 * (1000 * 2.5 + 100 * 10.0) / 1e6, 9) == 0.007
    assert call.cached is False and call.latency_s is not None and call.latency_s >= 0


# ---------------------------------------------------------------- re-asks

def test_an_unparseable_answer_is_re_asked_with_the_parser_s_error() -> None:
    script = by_request({("AB", 0, 0): "I would rather not say.", ("AB", 0, 1): "[[B]] [[90]]"})
    verdict, provider = judge_one(profile(swap=False), script)
    (call,) = verdict.calls
    assert (call.choice, call.certainty, call.error, call.attempts, call.raw) == ("B", 0.9, None, 2, "[[B]] [[90]]")
    assert (verdict.winner, verdict.p_a) == ("B", 0.05)

    first, second = provider.requests
    assert second.attempt == 1 and second.messages[:len(first.messages)] == first.messages
    error = Judge(profile(), provider=MockProvider()).parse("I would rather not say.").error
    assert error and second.messages[len(first.messages):] == [
        {"role": "assistant", "content": "I would rather not say."},
        {"role": "user", "content": REASK.format(error=error)}]


def test_an_empty_answer_is_re_asked_as_empty() -> None:
    verdict, provider = judge_one(profile(swap=False), ["", "[[A]] [[80]]"])
    assert verdict.calls[0].attempts == 2 and verdict.winner == "A"
    assert provider.requests[1].messages[-2] == {"role": "assistant", "content": "(empty)"}


def test_re_asks_stop_at_max_reasks_and_keep_the_last_answer() -> None:
    answers = iter(["nope", "still no", "never"])
    verdict, provider = judge_one(profile(swap=False, max_reasks=2), lambda request: next(answers))
    (call,) = verdict.calls
    assert [r.attempt for r in provider.requests] == [0, 1, 2]
    assert call.attempts == 3 and call.raw == "never" and call.choice is None
    assert call.error is not None and call.error.startswith("unparseable: ")
    assert verdict.winner is None and verdict.p_a is None and verdict.certainty is None
    assert verdict.error == f"no call could be parsed: {call.error}"


def test_no_re_ask_when_max_reasks_is_zero() -> None:
    verdict, provider = judge_one(profile(swap=False, max_reasks=0), "nope")
    assert len(provider.requests) == 1 and verdict.calls[0].attempts == 1 and verdict.winner is None


# ---------------------------------------------------------------- provider errors

def test_a_provider_error_is_kept_on_its_call_and_the_other_order_still_counts() -> None:
    script = by_request({("AB", 0, 0): "[[A]] [[60]]", ("BA", 0, 0): ProviderError("HTTP 429: rate limited")})
    verdict, provider = judge_one(profile(), script)
    ab, ba = verdict.calls
    assert ab.error is None and ab.choice == "A"
    assert ba.error == "provider: HTTP 429: rate limited"
    assert (ba.raw, ba.choice, ba.attempts, ba.cached, ba.cost_usd) == (None, None, 1, False, 0.0)
    assert len(provider.requests) == 2  # a provider error is not re-asked
    # p_A from AB alone: 0.5 + 0.6 / 2; the missing order makes the verdict inconsistent
    assert (verdict.winner, verdict.p_a, verdict.consistent, verdict.error) == ("A", 0.8, False, None)


def test_a_provider_error_after_an_unparseable_answer_keeps_that_answer() -> None:
    verdict, _ = judge_one(profile(swap=False), ["garbled", ProviderError("HTTP 500: server error")])
    (call,) = verdict.calls
    assert call.raw == "garbled" and call.error == "provider: HTTP 500: server error" and call.attempts == 2


def test_when_every_call_fails_the_verdict_says_why() -> None:
    verdict, _ = judge_one(profile(), ProviderError("authentication failed"))
    assert [c.error for c in verdict.calls] == ["provider: authentication failed"] * 2
    assert verdict.winner is None and verdict.error == "no call could be parsed: provider: authentication failed"


def test_an_exception_that_is_not_a_provider_error_propagates() -> None:
    with pytest.raises(ValueError, match="a bug"):
        judge_one(profile(), ValueError("a bug"))


# ---------------------------------------------------------------- the call cache

def test_a_second_run_reads_every_answer_from_the_cache(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    script = by_request({("AB", 0, 0): "hmm", ("AB", 0, 1): "[[A]] [[80]]", ("BA", 0, 0): "[[B]] [[60]]"})
    first, provider = judge_one(profile(), script, cache=cache, usage=(100, 10))
    assert len(provider.requests) == 3 and len(cache) == 3  # the unparseable first attempt too
    assert [c.cached for c in first.calls] == [False, False]

    again, provider = judge_one(profile(), lambda request: pytest.fail("called"), cache=cache)
    assert provider.requests == []
    assert [c.cached for c in again.calls] == [True, True]
    assert [c.cost_usd for c in again.calls] == [0.0, 0.0]  # cached answers cost nothing
    assert [c.input_tokens for c in again.calls] == [200, 100]  # but keep their tokens
    assert [c.attempts for c in again.calls] == [2, 1]
    strip = {"cached", "cost_usd", "latency_s"}
    assert [c.model_dump(exclude=strip) for c in again.calls] == [c.model_dump(exclude=strip) for c in first.calls]
    assert (again.winner, again.p_a) == (first.winner, first.p_a) == ("A", 0.85)


def test_the_cache_keys_are_those_of_the_first_attempts(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    judge = Judge(profile(samples=2), provider=MockProvider())
    keys = judge.cache_keys([ITEM])
    assert len(keys) == len(set(keys)) == 4 and all(cache.get(key) is None for key in keys)
    judge_one(profile(samples=2), "[[A]] [[80]]", cache=cache)
    assert all(cache.get(key) == CallResult(text="[[A]] [[80]]") for key in keys)


def test_failed_calls_are_not_cached(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    judge_one(profile(swap=False), ProviderError("HTTP 503: server error"), cache=cache)
    assert len(cache) == 0
    verdict, provider = judge_one(profile(swap=False), "[[A]] [[80]]", cache=cache)
    assert len(provider.requests) == 1 and verdict.calls[0].cached is False and verdict.winner == "A"


def test_a_profile_that_changes_the_prompt_misses_the_cache(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    judge_one(profile(swap=False), "[[A]] [[80]]", cache=cache)
    _, provider = judge_one(profile(swap=False, temperature=0.5), "[[A]] [[80]]", cache=cache)
    assert len(provider.requests) == 1


# ---------------------------------------------------------------- the raw-answer cap

def test_a_long_answer_is_cut_parsed_as_cut_and_not_cached(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    answer = "[[A]] [[80]]" + " because" * 100
    verdict, _ = judge_one(profile(swap=False), answer, cache=cache, raw_max_chars=12)
    (call,) = verdict.calls
    assert call.raw == "[[A]] [[80]]" and call.raw_truncated_from == len(answer) == 812
    assert call.choice == "A" and call.certainty == 0.8
    assert len(cache) == 0
    again, provider = judge_one(profile(swap=False), answer, cache=cache, raw_max_chars=12)
    assert len(provider.requests) == 1 and again.calls[0].cached is False


def test_a_cut_that_breaks_the_format_is_re_asked_and_the_call_keeps_the_last_answer() -> None:
    answer = "Let me think it over first. [[B]] [[70]]"
    verdict, provider = judge_one(profile(swap=False), [answer, "[[B]] [[70]]"], raw_max_chars=20)
    (call,) = verdict.calls
    assert provider.requests[1].messages[-2] == {"role": "assistant", "content": answer[:20]}
    # the re-ask's answer fits: whole, so the call records no cut
    assert (call.attempts, call.raw, call.raw_truncated_from, call.choice) == (2, "[[B]] [[70]]", None, "B")


def test_an_answer_the_provider_already_cut_keeps_its_full_length_and_is_not_cached(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    verdict, _ = judge_one(profile(swap=False), CallResult(text="[[B]] [[60]]", truncated_from=5_000_000),
                           cache=cache)
    assert verdict.calls[0].raw_truncated_from == 5_000_000 and verdict.winner == "B"
    assert len(cache) == 0


def test_the_cap_defaults_to_pjudge_raw_max_chars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PJUDGE_RAW_MAX_CHARS", "256")
    reset_settings()
    verdict, _ = judge_one(profile(swap=False), "[[A]] [[80]]" + "." * 300)
    assert len(verdict.calls[0].raw or "") == 256 and verdict.calls[0].raw_truncated_from == 312


# ---------------------------------------------------------------- the call deadline

def test_a_call_past_its_deadline_fails_like_a_provider_error() -> None:
    started = time.monotonic()
    verdict, provider = judge_one(profile(), "[[A]] [[80]]", delay_s=30, call_deadline_s=0.05)
    assert time.monotonic() - started < 10
    assert [c.error for c in verdict.calls] == ["provider: no answer within the call's deadline "
                                                "(0.05 s, retries included)"] * 2
    assert provider.cancelled == 2 and provider.in_flight == 0
    assert verdict.winner is None


def test_the_deadline_defaults_to_pjudge_call_deadline_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PJUDGE_CALL_DEADLINE_S", "0.1")
    reset_settings()
    assert Judge(profile(), provider=MockProvider()).call_deadline_s == 0.1
    verdict, _ = judge_one(profile(swap=False), "[[A]] [[80]]", delay_s=30)
    assert verdict.calls[0].error == "provider: no answer within the call's deadline (0.1 s, retries included)"


def test_an_answer_within_the_deadline_is_kept() -> None:
    verdict, _ = judge_one(profile(swap=False), "[[A]] [[80]]", delay_s=0.01, call_deadline_s=5)
    assert verdict.calls[0].error is None and verdict.winner == "A"


def test_a_timeout_of_the_provider_s_own_is_not_taken_for_the_deadline() -> None:
    with pytest.raises(TimeoutError):
        judge_one(profile(swap=False), TimeoutError("the provider's own"), call_deadline_s=5)


# ---------------------------------------------------------------- streams and cancellation

def items(n: int) -> list[PairItem]:
    return [ITEM.model_copy(update={"id": f"q{i}"}) for i in range(n)]


def test_judge_stream_yields_every_verdict_once_with_a_bounded_number_in_flight() -> None:
    provider = MockProvider("[[A]] [[80]]", delay_s=lambda request: 0.001 * (int(request.item_id[1:]) % 7))

    async def run() -> list[Verdict]:
        async with Judge(profile(), provider=provider) as judge:
            return [v async for v in judge.judge_stream(items(30), max_items_in_flight=3)]

    verdicts = asyncio.run(run())
    assert sorted(v.id for v in verdicts) == sorted(f"q{i}" for i in range(30))
    assert len(provider.requests) == 60 and provider.max_in_flight <= 3 * 2  # 3 items, 2 orders each
    assert provider.closed  # the judge owns its provider


def test_max_in_flight_bounds_the_calls_across_items() -> None:
    provider = MockProvider("[[A]] [[80]]", delay_s=0.005)

    async def run() -> list[Verdict]:
        async with Judge(profile(samples=3), provider=provider, max_in_flight=4) as judge:
            return [v async for v in judge.judge_stream(items(10), max_items_in_flight=10)]

    assert len(asyncio.run(run())) == 10
    assert provider.max_in_flight == 4


def test_leaving_a_stream_cancels_the_calls_in_flight() -> None:
    provider = MockProvider("[[A]] [[80]]", delay_s=lambda request: 0 if request.item_id == "q0" else 60)

    async def run() -> list[str]:
        async with Judge(profile(), provider=provider) as judge:
            stream = judge.judge_stream(items(5), max_items_in_flight=5)
            first = await anext(stream)
            await stream.aclose()  # what leaving `async for` early does, at once
            return [first.id]

    started = time.monotonic()
    assert asyncio.run(run()) == ["q0"]
    assert time.monotonic() - started < 10
    assert provider.cancelled == 8 and provider.in_flight == 0  # 4 items left, 2 orders each


def test_a_failing_item_ends_the_stream_and_cancels_the_others() -> None:
    def script(request: CallRequest) -> str:
        if request.item_id == "q2":
            raise ScriptExhausted("boom")
        return "[[A]] [[80]]"

    provider = MockProvider(script, delay_s=lambda request: 0 if request.item_id == "q2" else 60)

    async def run() -> None:
        async with Judge(profile(), provider=provider) as judge:
            async for _ in judge.judge_stream(items(4)):
                pass

    started = time.monotonic()
    with pytest.raises(ScriptExhausted, match="boom"):
        asyncio.run(run())
    assert time.monotonic() - started < 10
    assert provider.cancelled == 6 and provider.in_flight == 0


def test_cancelling_the_task_that_reads_a_stream_cancels_its_calls() -> None:
    provider = MockProvider("[[A]] [[80]]", delay_s=60)

    async def run() -> None:
        async with Judge(profile(), provider=provider) as judge:
            async def consume() -> list[Verdict]:
                return [v async for v in judge.judge_stream(items(3))]

            task = asyncio.create_task(consume())
            while provider.in_flight < 6:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    assert provider.cancelled == 6 and provider.in_flight == 0


# ---------------------------------------------------------------- the mock itself

def test_on_call_sees_every_call() -> None:
    seen: list[Call] = []
    verdict, _ = judge_one(profile(samples=2), "[[A]] [[80]]", on_call=seen.append)
    assert sorted((c.order, c.sample) for c in seen) == [("AB", 0), ("AB", 1), ("BA", 0), ("BA", 1)]
    assert len(verdict.calls) == 4


def test_a_list_script_that_runs_out_fails_the_test_not_the_call() -> None:
    with pytest.raises(ScriptExhausted, match="no answer left"):
        judge_one(profile(), ["[[A]] [[80]]"])


@pytest.mark.parametrize("name", ["persona-certainty", "persona-tie", "faireval-scores"])
def test_the_registered_mock_answers_in_each_template_s_format(name: str) -> None:
    mock_profile = profile(name).model_copy(update={"provider": "mock"})  # not a profile choice: in-process only
    provider = create_provider(mock_profile)
    assert isinstance(provider, MockProvider)
    verdict = asyncio.run(Judge(profile(name), provider=provider).judge_item(ITEM))
    assert len(provider.requests) == len(verdict.calls) > 0
    # it always prefers the answer shown first: a tie once both orders are averaged
    assert all(call.error is None for call in verdict.calls)
    assert (verdict.winner, verdict.p_a, verdict.consistent) == ("tie", 0.5, False)
