"""Adaptive sampling (profile `adaptive`, issue 15.3) in-process, around the scripted MockProvider:
how many calls agreeing, contradicting and uncertain answers take, the cap at `samples`, the
verdict left as SPEC 3 aggregates the calls made, and the cache shared with fixed k. Expectations
are computed by hand from SPEC 3.1/3.2 and the rule (judge/aggregation.py `settled`): after round
r (r samples per order) the verdict is settled when it has a winner and either no two orders'
own verdicts are A and B with certainty >= adaptive_margin, or r >= 2 and round r left the winner
as it was. Last, the issue's acceptance on the replayed FairEval 2025 runs (skipped without
../shared/data)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from judge.aggregation import aggregate, settled
from judge.cache import SqliteCallCache
from judge.profiles import JudgeProfile, ProfileError, load_profile
from judge.providers.base import CallRequest
from judge.providers.mock import MockProvider
from judge.records import Call, Choice, Order, PairItem, Verdict
from judge.runner import Judge

ITEM = PairItem(id="q1", prompt="How should I start saving?", response_a="Open a savings account.",
                response_b="Track your spending first.", persona="The person is 25 years old.", human_label="A")


def adaptive(name: str = "persona-certainty", **overrides: Any) -> JudgeProfile:
    return load_profile(name, **{"adaptive": True, "samples": 3, **overrides})


def by_request(answers: dict[tuple[str, int], str]) -> Callable[[CallRequest], str]:
    """A script keyed by (order, sample); first attempts only."""
    def answer(request: CallRequest) -> str:
        assert request.attempt == 0
        return answers[(request.order, request.sample)]

    return answer


def judge_one(judge_profile: JudgeProfile, script: Any, **options: Any) -> tuple[Verdict, MockProvider]:
    provider = MockProvider(script)

    async def run() -> Verdict:
        async with Judge(judge_profile, provider=provider, **options) as judge:
            return await judge.judge_item(ITEM)

    return asyncio.run(run()), provider


def asked(provider: MockProvider) -> list[tuple[str | None, int]]:
    return sorted((r.order, r.sample) for r in provider.requests)


# In order AB the first shown is A; in order BA the first shown is B, so "[[B]]" there means A.
A80_AB, A80_BA = "[[A]] [[80]]", "[[B]] [[80]]"  # A, u = 0.8: v = 0.9
B60_BA = "[[A]] [[60]]"                           # in BA: B, u = 0.6: v = 0.2


# ---------------------------------------------------------------- the profile and the CLI

def test_adaptive_is_off_by_default_and_its_margin_is_a_certainty() -> None:
    profile = load_profile()
    assert profile.adaptive is False and profile.adaptive_margin == 0.05
    assert load_profile({"profile": "faireval-scores", "adaptive": True}).adaptive is True
    with pytest.raises(ProfileError, match="adaptive_margin"):
        load_profile(adaptive_margin=1.5)


def test_the_cli_flags_set_the_profile_fields() -> None:
    from pjudge.commands.judging import resolve_profile

    profile = resolve_profile("faireval-scores", adaptive=True, adaptive_margin=0.2, samples=5)
    assert (profile.adaptive, profile.adaptive_margin, profile.samples) == (True, 0.2, 5)


# ---------------------------------------------------------------- how many calls

def test_orders_that_agree_with_a_clear_margin_take_one_sample_per_order() -> None:
    verdict, provider = judge_one(adaptive(), by_request({("AB", 0): A80_AB, ("BA", 0): A80_BA}))
    assert asked(provider) == [("AB", 0), ("BA", 0)]
    # p_A = (0.9 + 0.9) / 2 = 0.9, certainty 0.8 >= 0.05, both orders A
    assert (verdict.winner, verdict.p_a, verdict.certainty, verdict.consistent) == ("A", 0.9, 0.8, True)
    assert [(c.order, c.sample) for c in verdict.calls] == [("AB", 0), ("BA", 0)]


def test_orders_that_contradict_take_a_second_round_which_settles_when_the_winner_stays() -> None:
    answers = {("AB", 0): A80_AB, ("BA", 0): B60_BA, ("AB", 1): A80_AB, ("BA", 1): B60_BA}
    verdict, provider = judge_one(adaptive(), by_request(answers))
    # round 1: p_A = (0.9 + 0.2) / 2 = 0.55, A; AB says A and BA says B: unsettled.
    # round 2: the same means, A again: settled (4 calls, not 6).
    assert asked(provider) == [("AB", 0), ("AB", 1), ("BA", 0), ("BA", 1)]
    assert (verdict.winner, verdict.p_a, verdict.certainty, verdict.consistent) == ("A", 0.55, 0.1, False)


def test_a_winner_that_changes_while_the_orders_contradict_runs_to_the_cap() -> None:
    answers = {("AB", 0): A80_AB, ("BA", 0): B60_BA,
               ("AB", 1): "[[A]] [[20]]",   # A, v = 0.6: AB mean 0.75
               ("BA", 1): "[[A]] [[100]]",  # in BA: B, v = 0.0: BA mean 0.1
               ("AB", 2): A80_AB, ("BA", 2): B60_BA}
    verdict, provider = judge_one(adaptive(), by_request(answers))
    # round 1: A at 0.55, orders contradict. round 2: p_A = (0.75 + 0.1) / 2 = 0.425, B: changed,
    # orders still contradict. round 3 is the last (samples = 3): p_A = (0.8 + 0.4/3) / 2.
    assert len(provider.requests) == 6
    assert [(c.order, c.sample) for c in verdict.calls] == [
        ("AB", 0), ("AB", 1), ("AB", 2), ("BA", 0), ("BA", 1), ("BA", 2)]
    assert verdict.p_a == round((0.8 + 0.4 / 3) / 2, 9) and verdict.winner == "B"

    capped, provider = judge_one(adaptive(samples=2), by_request(answers))
    assert len(provider.requests) == 4 and (capped.winner, capped.p_a) == ("B", 0.425)


def test_samples_one_is_fixed_k_one_whatever_the_answers() -> None:
    _, provider = judge_one(adaptive(samples=1), by_request({("AB", 0): A80_AB, ("BA", 0): B60_BA}))
    assert asked(provider) == [("AB", 0), ("BA", 0)]


def test_agreeing_orders_under_the_margin_are_uncertain_until_the_winner_holds() -> None:
    low = {("AB", 0): "[[A]] [[4]]", ("BA", 0): "[[B]] [[4]]",  # A, u = 0.04: v = 0.52 in both orders
           ("AB", 1): "[[A]] [[4]]", ("BA", 1): "[[B]] [[4]]"}
    verdict, provider = judge_one(adaptive(), by_request(low))
    # certainty |2 * 0.52 - 1| = 0.04 < 0.05: a second round, whose winner A is the first's
    assert len(provider.requests) == 4 and (verdict.winner, verdict.certainty) == ("A", 0.04)

    _, provider = judge_one(adaptive(adaptive_margin=0.04), by_request(low))
    assert len(provider.requests) == 2  # 0.04 >= 0.04: settled at once


def test_an_order_without_a_parsed_call_leaves_the_round_unsettled() -> None:
    answers = {("AB", 0): A80_AB, ("BA", 0): "no idea", ("AB", 1): A80_AB, ("BA", 1): "no idea"}
    verdict, provider = judge_one(adaptive(max_reasks=0), by_request(answers))
    # round 1: p_A = 0.9 from AB alone, but BA has no verdict of its own; round 2: A holds
    assert len(provider.requests) == 4 and (verdict.winner, verdict.p_a) == ("A", 0.9)
    assert [c.error is None for c in verdict.calls] == [True, True, False, False]


def test_a_balanced_tie_is_uncertain_at_any_margin_above_zero() -> None:
    tie = "Even.\nScore of the Assistant 1: 7\nScore of the Assistant 2: 7"
    verdict, provider = judge_one(adaptive("faireval-scores"), tie)
    # CS_A = CS_B: tie, certainty 0 < 0.05; round 2 ties again: settled on the held winner
    assert len(provider.requests) == 4 and (verdict.winner, verdict.certainty) == ("tie", 0.0)
    _, provider = judge_one(adaptive("faireval-scores", adaptive_margin=0), tie)
    assert len(provider.requests) == 2  # no order says A or B, and 0 >= 0


def test_scores_that_agree_by_a_point_settle_in_one_round() -> None:
    answers = {("AB", 0): "Score of the Assistant 1: 8\nScore of the Assistant 2: 7",
               ("BA", 0): "Score of the Assistant 1: 7\nScore of the Assistant 2: 8"}  # B shown first: A 8, B 7
    verdict, provider = judge_one(adaptive("faireval-scores"), by_request(answers))
    # CS_A - CS_B = 1, certainty 1/9 >= 0.05, both orders A
    assert len(provider.requests) == 2
    assert (verdict.winner, verdict.certainty) == ("A", round(1 / 9, 9))


def test_without_swap_only_the_margin_and_the_held_winner_count() -> None:
    _, provider = judge_one(adaptive(swap=False), "[[B]] [[70]]")
    assert asked(provider) == [("AB", 0)]
    _, provider = judge_one(adaptive(swap=False), "[[B]] [[2]]")  # certainty 0.02: once more, B holds
    assert asked(provider) == [("AB", 0), ("AB", 1)]


def test_the_verdict_is_spec_3_over_the_calls_made() -> None:
    answers = {("AB", 0): A80_AB, ("BA", 0): B60_BA, ("AB", 1): "[[A]] [[20]]", ("BA", 1): "[[A]] [[100]]",
               ("AB", 2): A80_AB, ("BA", 2): B60_BA}
    made, _ = judge_one(adaptive(), by_request(answers))
    fixed, _ = judge_one(load_profile(samples=3), by_request(answers))
    assert made.model_dump(exclude={"calls"}) == fixed.model_dump(exclude={"calls"})
    strip = {"latency_s"}
    assert [c.model_dump(exclude=strip) for c in made.calls] == [c.model_dump(exclude=strip) for c in fixed.calls]


def test_the_service_accepts_and_keeps_adaptive_in_a_job_profile(engine: Engine) -> None:
    from store import repo
    from tests.support.api import make_items, new_app, post_job

    sent: list[Any] = []
    client = new_app(engine, sent.append, PJUDGE_ENDPOINTS="openai-compatible=http://127.0.0.1:9/v1|SIM_API_KEY",
                     PJUDGE_API_KEY_ENVS="SIM_API_KEY").test_client()
    profile = {"profile": "faireval-scores", "provider": "openai-compatible", "model": "sim-judge",
               "base_url": "http://127.0.0.1:9/v1", "api_key_env": "SIM_API_KEY", "adaptive": True,
               "adaptive_margin": 0.1}
    response = post_job(client, make_items(3), profile=profile)
    assert response.status_code == 202, response.get_json()
    stored = repo.job_profile(sent[0])
    assert (stored.adaptive, stored.adaptive_margin, stored.samples) == (True, 0.1, 3)
    # The worker judges with Judge.judge_item on the stored profile: adaptively.
    agree = "Score of the Assistant 1: 8\nScore of the Assistant 2: 8.5"  # A 8 / B 8.5 in AB, A 8.5 / B 8 in BA
    verdict, provider = judge_one(stored, agree)
    assert len(provider.requests) == 4 and verdict.winner == "tie"  # a tie twice: settled on round 2
    bad = post_job(client, make_items(1), profile={**profile, "adaptive_margin": -1})
    assert bad.status_code == 422 and "adaptive_margin" in bad.get_data(as_text=True)


# ---------------------------------------------------------------- the rule on its own

def call(order: Order, sample: int, choice: Choice, certainty: float) -> Call:
    return Call(order=order, sample=sample, raw="x", choice=choice, certainty=certainty)


def test_settled_reads_the_balanced_verdict_and_each_order_s_own() -> None:
    agree = [call("AB", 0, "A", 0.8), call("BA", 0, "A", 0.8)]
    contradict = [call("AB", 0, "A", 0.8), call("BA", 0, "B", 0.6)]
    half_tie = [call("AB", 0, "A", 0.8), call("BA", 0, "tie", 0.0)]  # persona-tie's [[C]] votes 0.5
    assert settled(agree, "choice", True, 0.05) is True
    assert settled(agree, "choice", True, 0.81) is False
    assert settled(contradict, "choice", True, 0.0) is False
    assert settled(contradict, "choice", True, 0.0, previous_winner="A") is True
    assert settled(contradict, "choice", True, 0.0, previous_winner="B") is False
    assert settled(half_tie, "choice", True, 0.05) is True  # a tie contradicts nothing; p_A 0.7
    assert aggregate(half_tie, "choice", True).p_a == 0.7
    assert settled([], "choice", True, 0.0) is False


def test_next_sample_resumes_from_the_calls_alone() -> None:
    judge = Judge(adaptive(), provider=MockProvider())
    contradict = [call("AB", 0, "A", 0.8), call("BA", 0, "B", 0.6)]  # A at p_A 0.55
    flipped = [*contradict, call("AB", 1, "B", 0.2), call("BA", 1, "B", 1.0)]  # (0.65 + 0.1) / 2: B
    assert judge.next_sample([]) == 0
    assert judge.next_sample([call("AB", 0, "A", 0.8), call("BA", 0, "A", 0.8)]) is None
    assert judge.next_sample(contradict) == 1
    assert judge.next_sample([*contradict, call("AB", 1, "A", 0.8), call("BA", 1, "B", 0.6)]) is None  # A held
    assert judge.next_sample(flipped) == 2
    assert judge.next_sample([*flipped, call("AB", 2, "B", 0.2), call("BA", 2, "A", 0.2)]) is None  # the cap


# ---------------------------------------------------------------- the cache, shared with fixed k

def test_adaptive_reads_the_answers_fixed_k_cached(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    answers = {("AB", 0): A80_AB, ("BA", 0): B60_BA, ("AB", 1): A80_AB, ("BA", 1): B60_BA,
               ("AB", 2): A80_AB, ("BA", 2): B60_BA}
    fixed, provider = judge_one(load_profile(samples=3), by_request(answers), cache=cache)
    assert len(provider.requests) == 6 and len(cache) == 6

    again, provider = judge_one(adaptive(), lambda request: pytest.fail("called"), cache=cache)
    assert provider.requests == [] and [c.cached for c in again.calls] == [True] * 4
    assert [c.raw for c in again.calls] == [c.raw for c in fixed.calls if c.sample < 2]


def test_fixed_k_asks_only_the_samples_adaptive_did_not(tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    judge_one(adaptive(), by_request({("AB", 0): A80_AB, ("BA", 0): A80_BA}), cache=cache)
    assert len(cache) == 2

    fixed, provider = judge_one(load_profile(samples=3), A80_AB, cache=cache)
    assert asked(provider) == [("AB", 1), ("AB", 2), ("BA", 1), ("BA", 2)]
    assert [c.cached for c in fixed.calls] == [True, False, False, True, False, False]
    keys = Judge(adaptive(), provider=MockProvider()).cache_keys([ITEM])
    assert keys == Judge(load_profile(samples=3), provider=MockProvider()).cache_keys([ITEM])
    assert all(cache.get(key) is not None for key in keys)


# ---------------------------------------------------------------- the acceptance (issue 15)

@pytest.mark.shared_data
def test_adaptive_matches_fixed_k3_kappa_with_at_most_half_its_calls(shared_data: Path) -> None:
    """FairEval 2025 re-runs replayed through the runner: adaptive (samples = 3, default margin)
    against fixed k = 3 in both orders, means over the four runs per judge model."""
    from bench import cost

    if not cost.run_files(shared_data / "faireval-2025-runs"):
        pytest.skip(f"no FairEval 2025 runs in {shared_data / 'faireval-2025-runs'}")
    rows = cost.measure(shared_data, chosen=(cost.FIXED, cost.adaptive_default()))
    verdicts = cost.acceptance(rows)
    assert {v["judge_model"] for v in verdicts} == {"gpt-3.5-turbo", "gpt-4"}
    assert {r["run"] for r in rows} == {"1", "2", "3", "4"}
    for verdict in verdicts:
        assert verdict["fixed_calls"] == 480  # 80 items, 3 samples, 2 orders
        assert verdict["kappa_holds"] and verdict["calls_hold"], verdict
