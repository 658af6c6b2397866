"""Prompt caching (issue 15): the shared prefix, what the SDKs send for it, how the simulator and
the runner count cached tokens, and their price, pinned on hand-computed cases."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.caching import figures, judge_with_sim, make_items, provider_price
from judge.cache import SqliteCallCache
from judge.profiles import Price, load_profile
from judge.records import Call, PairItem
from judge.runner import Judge, new_event_loop
from judge.templates import get_template
from llm_sim.prompt_cache import PromptCaches
from llm_sim.server import ServerSettings, SimServerThread


@pytest.fixture(autouse=True)
def _sim_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sim-key")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sim-key")


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(ServerSettings(record_requests=1000)) as server:
        yield server


def recorded(sim: SimServerThread) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sim.url}/requests", timeout=10) as response:
        requests: list[dict[str, Any]] = json.loads(response.read())
        return requests


def judge(items: list[PairItem], cache: Any = None, **profile: Any) -> list[Call]:
    async def run() -> list[Call]:
        async with Judge(load_profile("persona-certainty", model="sim-judge", **profile), cache=cache,
                         max_in_flight=1) as j:
            return [c for item in items for c in (await j.judge_item(item)).calls]

    loop = new_event_loop()
    try:
        return loop.run_until_complete(run())
    finally:
        loop.close()


LONG = make_items(4, 2, persona_chars=5000)  # two personas of about 1,250 tokens each, two items each


# Prices --------------------------------------------------------------------------------------

def test_anthropic_cache_reads_cost_a_tenth_and_writes_a_quarter_more_of_the_input_price() -> None:
    price = Price(input_per_mtok=3.0, output_per_mtok=15.0).for_provider("anthropic")
    assert (price.cached_input_per_mtok, price.cache_write_per_mtok) == pytest.approx((0.3, 3.75))
    # 2,000 input tokens of which 1,500 read: 500 x 3 + 1,500 x 0.3 + 10 x 15 = 2,100 per million.
    assert price.cost(2000, 10, cached_input_tokens=1500) == pytest.approx(0.0021)
    # ... of which 1,500 written: 500 x 3 + 1,500 x 3.75 + 10 x 15 = 7,275 per million.
    assert price.cost(2000, 10, cache_write_tokens=1500) == pytest.approx(0.007275)
    assert price.cost(2000, 10) == pytest.approx(0.00615)  # the same tokens without caching


def test_openai_cached_input_is_priced_from_the_table_and_unset_means_no_discount() -> None:
    gpt4o = load_profile("persona-certainty").price  # OpenAI's table: 2.50 input, 1.25 cached, 10 output
    assert (gpt4o.input_per_mtok, gpt4o.cached_input_per_mtok, gpt4o.output_per_mtok) == (2.5, 1.25, 10.0)
    # 1,408 prompt tokens of which 1,280 cached: 128 x 2.5 + 1,280 x 1.25 + 9 x 10 = 2,010 per million.
    assert gpt4o.for_provider("openai").cost(1408, 9, cached_input_tokens=1280) == pytest.approx(0.00201)
    unset = Price(input_per_mtok=2.5, output_per_mtok=10.0)
    assert unset.for_provider("openai").cost(1408, 9, 1280) == unset.cost(1408, 9)
    assert unset.model_dump() == {"input_per_mtok": 2.5, "output_per_mtok": 10.0}  # unset fields stay out


def test_the_server_price_table_carries_the_cached_price() -> None:
    from judge.prices import price_table

    table = price_table('{"claude-sonnet-4-5": {"input_per_mtok": 3, "output_per_mtok": 15}}')
    assert table.price_for("gpt-4o-2024-08-06") == Price(input_per_mtok=2.5, output_per_mtok=10.0,
                                                         cached_input_per_mtok=1.25)
    claude = table.price_for("claude-sonnet-4-5")
    assert claude is not None and claude.for_provider("anthropic").cache_write_per_mtok == pytest.approx(3.75)


# The prompt's layout ---------------------------------------------------------------------------

def test_the_rubric_and_persona_are_a_prefix_shared_by_both_orders_and_all_items_of_a_persona() -> None:
    template = get_template("persona-certainty")
    a, b = LONG[0], next(i for i in LONG[1:] if i.persona == LONG[0].persona)
    prefixes = set()
    for item in (a, b):
        for order in ("AB", "BA"):
            messages, end = template.render_with_prefix(item, order)  # type: ignore[arg-type]
            assert messages == template.render(item, order)  # type: ignore[arg-type]
            head = messages[-1]["content"][:end]
            assert head.startswith("Given the user profile")
            assert head.endswith(f"[User Profile]\n{item.persona}\n\n[User Question]\n")  # up to {question}
            prefixes.add(head)
    assert len(prefixes) == 1


def test_faireval_keeps_its_published_layout_and_shares_the_system_prompt_and_persona_only() -> None:
    template = get_template("faireval-scores")
    messages, end = template.render_with_prefix(LONG[0], "AB")
    assert messages[0]["role"] == "system"
    assert messages[1]["content"][:end] == f"[User Profile]\n{LONG[0].persona}\n\n[Question]\n"
    assert "[System]" in messages[1]["content"][end:]  # the rubric stays after the answers


# The simulator's caches ------------------------------------------------------------------------

def test_the_simulator_caches_openai_prompts_by_prefix_in_128_token_steps_from_1024() -> None:
    caches = PromptCaches()
    shared = "x" * (4 * 1300)  # 1,300 tokens at 4 characters a token
    assert caches.automatic("m", "y" * (4 * 1100)) == 0  # first seen
    assert caches.automatic("m", "y" * (4 * 1100)) == 1024  # the same again: 1,024 (then steps of 128)
    assert caches.automatic("m", shared + "a" * 800) == 0
    assert caches.automatic("m", shared + "b" * 800) == 1280  # the shared 1,300 tokens, in whole steps
    assert caches.automatic("other-model", shared + "b" * 800) == 0
    assert caches.automatic("m", "z" * (4 * 1000)) == caches.automatic("m", "z" * (4 * 1000)) == 0  # too short


def test_the_simulator_writes_an_anthropic_prefix_once_then_reads_it_and_skips_short_ones() -> None:
    caches = PromptCaches(anthropic_min_tokens=1024)
    assert caches.explicit("m", "p" * (4 * 1023)) == (0, 0)
    assert caches.explicit("m", "p" * (4 * 1023)) == (0, 0)
    assert caches.explicit("m", "q" * (4 * 1500)) == (0, 1500)
    assert caches.explicit("m", "q" * (4 * 1500)) == (1500, 0)
    assert caches.explicit("m", None) == (0, 0)


# What the SDKs send, and what the calls record ----------------------------------------------------

def test_anthropic_requests_mark_the_prefix_and_calls_record_and_price_reads_and_writes(
        sim: SimServerThread) -> None:
    price = Price(input_per_mtok=3.0, output_per_mtok=15.0)
    calls = judge(LONG, provider="anthropic", base_url=sim.url, price=price)
    bodies = [r["body"] for r in recorded(sim)]
    assert len(bodies) == 8
    for body, item in zip(bodies, [i for i in LONG for _ in (0, 1)], strict=True):
        first, rest = body["messages"][0]["content"]
        assert first["cache_control"] == {"type": "ephemeral"} and "cache_control" not in rest
        assert first["text"].endswith(f"{item.persona}\n\n[User Question]\n") and rest["text"].startswith(item.prompt)
    writes = [c for c in calls if c.cache_write_tokens]
    reads = [c for c in calls if c.cached_input_tokens]
    assert len(writes) == 2 and len(reads) == 6  # one write per persona, then reads
    resolved = price.for_provider("anthropic")
    for call in calls:
        fresh = call.input_tokens - (call.cached_input_tokens or 0) - (call.cache_write_tokens or 0)  # type: ignore[operator]
        expected = (fresh * 3.0 + (call.cached_input_tokens or 0) * 0.3 + (call.cache_write_tokens or 0) * 3.75
                    + call.output_tokens * 15.0) / 1e6  # type: ignore[operator]
        assert call.cost_usd == pytest.approx(expected, abs=1e-9)
        assert call.cost_usd == resolved.cost(call.input_tokens, call.output_tokens, call.cached_input_tokens,
                                              call.cache_write_tokens)
    stats = json.loads(urllib.request.urlopen(f"{sim.url}/stats", timeout=10).read())
    assert stats["cached_input_tokens"] == sum(c.cached_input_tokens or 0 for c in calls)
    assert stats["cache_write_tokens"] == sum(c.cache_write_tokens or 0 for c in calls)
    assert stats["input_tokens"] == sum(c.input_tokens or 0 for c in calls)


def test_openai_requests_carry_a_prompt_cache_key_per_persona_and_calls_record_cached_tokens(
        sim: SimServerThread) -> None:
    calls = judge(LONG, provider="openai", base_url=f"{sim.url}/v1")
    requests = recorded(sim)
    keys = [r["body"]["prompt_cache_key"] for r in requests]
    by_persona: dict[str, set[str]] = {}
    for request, item in zip(requests, [i for i in LONG for _ in (0, 1)], strict=True):
        assert request["headers"].get("x-stainless-lang") == "python"  # the official SDK sent it
        by_persona.setdefault(str(item.persona), set()).add(request["body"]["prompt_cache_key"])
    assert all(len(k) == 1 for k in by_persona.values()) and len(set(keys)) == 2
    assert all(str(item.persona)[:40] not in key for key in keys for item in LONG)
    # The persona's later calls read its rubric and persona (about 1,630 tokens): 1,536 in steps of 128.
    assert [c.cached_input_tokens for c in calls].count(0) == 2
    assert all(c.cached_input_tokens in (0, 1536) for c in calls)
    for call in calls:
        assert call.cost_usd == pytest.approx(Price(input_per_mtok=2.5, output_per_mtok=10.0).cost(
            call.input_tokens, call.output_tokens) - (call.cached_input_tokens or 0) * 1.25 / 1e6, abs=1e-9)


def test_the_direct_transport_sends_the_same_key_and_compatible_servers_get_none_by_default(
        sim: SimServerThread) -> None:
    judge(LONG[:1], provider="openai-compatible", base_url=f"{sim.url}/v1")
    judge(LONG[:1], provider="openai-compatible", base_url=f"{sim.url}/v1", prompt_caching=True)
    judge(LONG[:1], provider="openai", base_url=f"{sim.url}/v1")
    plain, direct, sdk = (recorded(sim)[i:i + 2] for i in (0, 2, 4))
    assert all("prompt_cache_key" not in r["body"] for r in plain)
    assert [r["body"]["prompt_cache_key"] for r in direct] == [r["body"]["prompt_cache_key"] for r in sdk]
    assert load_profile("persona-certainty", provider="anthropic").prompt_caching is True


def test_prompt_caching_off_sends_no_marks(sim: SimServerThread) -> None:
    calls = judge(LONG[:1], provider="anthropic", base_url=sim.url, prompt_caching=False)
    assert all(isinstance(r["body"]["messages"][0]["content"], str) for r in recorded(sim))
    assert all(c.cached_input_tokens == 0 and c.cache_write_tokens == 0 for c in calls)


def test_a_replayed_call_claims_no_provider_cache_savings(sim: SimServerThread, tmp_path: Path) -> None:
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    first = judge(LONG, cache, provider="anthropic", base_url=sim.url)
    again = judge(LONG, cache, provider="anthropic", base_url=sim.url)
    assert sum(c.cached_input_tokens or 0 for c in first) > 0
    assert all(c.cached and c.cost_usd == 0 and c.cached_input_tokens is None and c.cache_write_tokens is None
               for c in again)
    assert [c.input_tokens for c in again] == [c.input_tokens for c in first]
    dumped = again[0].model_dump(mode="json")
    assert "cached_input_tokens" not in dumped and "cache_write_tokens" not in dumped  # SPEC 1.2 as it was
    assert first[0].model_dump(mode="json")["cache_write_tokens"] > 0


def test_a_small_job_over_personas_shows_the_share_and_the_saving() -> None:
    items = make_items(40, 4, persona_chars=5000)
    for provider in ("openai", "anthropic"):
        result = figures(judge_with_sim(provider, items), provider_price(provider))
        assert result.calls == 80 and 0.5 < result.cached_share < 0.8
        assert 0 < result.cost_usd < result.cost_without_caching_usd
    short = figures(judge_with_sim("anthropic", make_items(40, 4, persona_chars=600)), provider_price("anthropic"))
    assert short.cached_input_tokens == short.cache_write_tokens == 0  # the prefix is under 1,024 tokens
    assert short.cost_usd == pytest.approx(short.cost_without_caching_usd)


# Through the service ----------------------------------------------------------------------------

def test_the_api_and_worker_store_cached_tokens_and_bill_them(tmp_path: Path, start_sim, redis_server) -> None:
    from api.client import Client
    from judge.jsonl import read_verdicts
    from pjudge.commands.submit import download_verdicts
    from tests.support.services import Process, Service, free_port, wait_for_port

    sim = start_sim("--record-requests", "200")
    service = Service(tmp_path, f"sqlite:///{tmp_path}/service.sqlite", redis_server)
    api_key = "pj-test-api-key-" + "cache" * 5
    service.env["PJUDGE_API_KEYS"] = api_key
    port = free_port()
    try:
        service.workers.append(Process(["serve", "--port", str(port)], service.env, tmp_path / "api.log").start())
        service.start_worker()
        wait_for_port(port)
        items = make_items(40, 4, persona_chars=5000)
        profile = {"profile": "persona-certainty", "provider": "anthropic", "model": "sim-judge",
                   "base_url": sim.url, "price": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
        with Client(f"http://127.0.0.1:{port}", api_key) as client:
            submitted = client.submit(items, profile)
            job = submitted.wait(progress=False, poll=0.3).model_dump(mode="json")
            assert job["status"] == "done", job
            out = tmp_path / "verdicts.jsonl"
            download_verdicts(submitted, out)
    finally:
        service.stop()
    calls = [c for v in read_verdicts(out) for c in v.calls]
    assert len(calls) == 80 and sum(bool(c.cache_write_tokens) for c in calls) == 4  # one write per persona
    stats = sim.stats()
    assert stats["cached_input_tokens"] == sum(c.cached_input_tokens or 0 for c in calls) > 0
    assert stats["cache_write_tokens"] == sum(c.cache_write_tokens or 0 for c in calls)
    assert job["cost_usd"] == pytest.approx(sum(c.cost_usd or 0 for c in calls), abs=1e-6)
    without = sum(Price(input_per_mtok=3.0, output_per_mtok=15.0).cost(c.input_tokens, c.output_tokens) for c in calls)
    assert job["cost_usd"] < 0.6 * without
