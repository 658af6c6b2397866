"""Batch mode (profile mode "batch", issue 15.1): provider batches against the simulator's files,
batches and message-batches endpoints through the real SDKs, in the CLI (resumable from its cache
file) and in the service (the batches in the database: a killed worker or Redis loses nothing).
The verdicts equal the interactive ones and cost half."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from judge.batch_sqlite import SqliteBatchStore
from judge.batching import BatchJudge, TickResult
from judge.cache import SqliteCallCache
from judge.paths import cache_path
from judge.profiles import JudgeProfile, load_profile
from judge.providers.batch_api import create_batch_provider
from judge.records import PairItem, Verdict
from judge.runner import Judge, judge_all
from judge.settings import reset_settings
from llm_sim.server import ServerSettings, SimServerThread
from store import repo
from store.models import ProviderBatch, ProviderBatchRequest
from tests.support.services import Service, many_items

# service: every test runs the LLM simulator's HTTP server (and some the CLI or worker processes)
pytestmark = [pytest.mark.service]

PRICE = {"input_per_mtok": 2.5, "output_per_mtok": 10.0}
FIELDS = ("winner", "p_a", "certainty", "consistent", "bpde", "abstained")


@pytest.fixture(autouse=True)
def enough_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenth of the simulator's batch requests fail: 8 batches make a request fail for good one
    time in 10^8, so that the verdicts equal the interactive ones."""
    monkeypatch.setenv("PJUDGE_BATCH_MAX_TRIES", "8")
    reset_settings()


@pytest.fixture
def sim() -> Iterator[SimServerThread]:
    with SimServerThread(ServerSettings(batch_delay_s=0.2, noise=0.2, first_bias=0.1, malformed_rate=0.1,
                                        batch_fail_rate=0.1, seed=4)) as server:
        yield server


def _profile(sim: Any, provider: str = "openai-compatible", **overrides: Any) -> JudgeProfile:
    base_url = sim.url if provider == "anthropic" else f"{sim.url}/v1"
    return load_profile("persona-certainty", provider=provider, model="sim-judge", base_url=base_url, price=PRICE,
                        **overrides)


def _same(interactive: list[Verdict], batch: list[Verdict]) -> int:
    by_id = {v.id: v for v in batch}
    return sum(tuple(getattr(v, f) for f in FIELDS) == tuple(getattr(by_id[v.id], f) for f in FIELDS)
               for v in interactive)


def _cost(verdicts: list[Verdict]) -> float:
    return sum(c.cost_usd or 0.0 for v in verdicts for c in v.calls)


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
def test_pjudge_judge_batch_gives_the_interactive_verdicts_at_half_the_cost(
        sim: SimServerThread, provider: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pjudge.commands.batch_judging import run_batch_judging

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-key")
    profile = _profile(sim, provider, samples=2)
    items = many_items(60)
    interactive = asyncio.run(judge_all(profile, items))
    out = tmp_path / "batch.jsonl"
    batch, progress, interrupted = run_batch_judging(profile.model_copy(update={"mode": "batch"}), items, out,
                                                     show_progress=False, poll_s=0.1)
    assert not interrupted and [v.id for v in batch] == [i.id for i in items]
    assert _same(interactive, batch) == 60
    assert [len(v.calls) for v in batch] == [len(v.calls) for v in interactive]
    assert any(c.attempts > 1 for v in batch for c in v.calls)  # re-asks went in follow-up batches
    assert _cost(batch) == pytest.approx(_cost(interactive) / 2, rel=1e-9)
    assert progress.cost_usd == pytest.approx(_cost(batch))
    assert len(out.read_text().splitlines()) == 60


def test_pjudge_judge_batch_adaptive_asks_extra_samples_in_follow_up_batches(sim: SimServerThread,
                                                                             tmp_path: Path) -> None:
    from pjudge.commands.batch_judging import run_batch_judging

    profile = _profile(sim, samples=3, adaptive=True)
    items = many_items(40, seed=2)
    interactive = asyncio.run(judge_all(profile, items))
    batch, _, _ = run_batch_judging(profile.model_copy(update={"mode": "batch"}), items, tmp_path / "o.jsonl",
                                    show_progress=False, poll_s=0.1)
    assert _same(interactive, batch) == 40
    assert sorted((c.order, c.sample) for v in batch for c in v.calls) == sorted(
        (c.order, c.sample) for v in interactive for c in v.calls)


async def _one_tick(profile: JudgeProfile, items: list[PairItem],
                    store_class: type[SqliteBatchStore] = SqliteBatchStore) -> tuple[TickResult, SqliteBatchStore]:
    """One tick of `pjudge judge --batch` (poll, plan, send) in the CLI's cache file, and its store,
    left open: a run that stops after sending."""
    cache = SqliteCallCache(cache_path())
    store = store_class(cache)
    batches = create_batch_provider(profile)
    try:
        async with Judge(profile, cache=cache) as judge:
            return await BatchJudge(judge, batches, store, cache).tick(list(enumerate(items))), store
    finally:
        await batches.aclose()


def test_an_interrupted_batch_run_is_picked_up_by_the_next_run(tmp_path: Path) -> None:
    """The first run sends its batch and dies; the second polls that batch (the simulator answers
    each request once) and a third reads everything from the cache."""
    from pjudge.commands.batch_judging import run_batch_judging

    with SimServerThread(ServerSettings(batch_delay_s=0.5, seed=5)) as server:
        profile = _profile(server, mode="batch")
        items = many_items(30, seed=3)

        tick, store = asyncio.run(_one_tick(profile, items))
        assert tick.submitted == 60 and not tick.verdicts
        assert len(store.live_batch_ids()) == 1
        store.close()
        batch, progress, _ = run_batch_judging(profile, items, tmp_path / "o.jsonl", show_progress=False, poll_s=0.1)
        stats = json.load(urllib.request.urlopen(f"{server.url}/stats"))
        assert stats["completions"] == 60 and stats["by_endpoint"]["batches"] >= 2  # one batch, polled
        assert len(batch) == 30 and progress.cached_calls == 0 and progress.cost_usd > 0
        again, progress, _ = run_batch_judging(profile, items, tmp_path / "o2.jsonl", show_progress=False,
                                               poll_s=0.1)
        assert progress.cached_calls == 60 and progress.cost_usd == 0
        assert [v.winner for v in again] == [v.winner for v in batch]
        assert json.load(urllib.request.urlopen(f"{server.url}/stats"))["completions"] == 60


def test_a_batch_created_but_not_recorded_is_found_by_its_input_file(tmp_path: Path) -> None:
    """A process dies between the provider creating its batch and recording the batch id: the
    next run finds the batch by the input file's id (recorded before) and sends nothing again."""
    from pjudge.commands.batch_judging import run_batch_judging

    class DiesBeforeRecording(SqliteBatchStore):
        def set_batch(self, row: int, batch_id: str) -> None:
            raise RuntimeError("killed")

    with SimServerThread(ServerSettings(batch_delay_s=0.2, seed=6)) as server:
        profile = _profile(server, mode="batch")
        items = many_items(10, seed=4)

        with pytest.raises(RuntimeError, match="killed"):
            asyncio.run(_one_tick(profile, items, DiesBeforeRecording))
        verdicts, _, _ = run_batch_judging(profile, items, tmp_path / "o.jsonl", show_progress=False, poll_s=0.1)
        assert len(verdicts) == 10 and all(v.winner for v in verdicts)
        assert json.load(urllib.request.urlopen(f"{server.url}/stats"))["completions"] == 20


# ---------------------------------------------------------------- the service, in-process

def _tick_until_done(engine: Engine, job_id: str, timeout: float = 60) -> Any:
    from worker.provider_batches import tick_job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick_job(engine, job_id)
        job = repo.get_job(engine, job_id)
        if job is not None and job.status in repo.TERMINAL:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done in {timeout}s")


def test_a_batch_mode_job_stores_the_interactive_verdicts_exactly_once(engine: Engine, sim: SimServerThread,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PJUDGE_ALLOW_PRIVATE_ENDPOINTS", "true")
    profile = _profile(sim, samples=2, adaptive=True)
    items = many_items(80, seed=6)
    interactive = asyncio.run(judge_all(profile, items))
    job = repo.create_job(engine, "owner", items, profile.model_copy(update={"mode": "batch"})).job
    done = _tick_until_done(engine, job.id)
    stored = repo.all_verdicts(engine, job.id)
    assert (done.status, done.n_verdicts, len(stored)) == ("done", 80, 80)
    assert _same(interactive, stored) == 80
    assert done.n_calls == sum(len(v.calls) for v in interactive)
    assert done.cost_usd == pytest.approx(_cost(interactive) / 2, rel=1e-6)
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(ProviderBatch.status, func.count()).where(ProviderBatch.job_id == job.id)
                                     .group_by(ProviderBatch.status)).all())
    assert set(statuses) == {"ended"} and statuses["ended"] >= 2  # follow-ups for re-asks and extra samples

    # The same items again: every answer from the (tenant's) call cache, no batch sent.
    again = repo.create_job(engine, "owner", items, profile.model_copy(update={"mode": "batch"})).job
    done = _tick_until_done(engine, again.id)
    assert done.n_verdicts == 80 and done.cost_usd == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ProviderBatch)
                            .where(ProviderBatch.job_id == again.id)).scalar_one() == 0


def test_requests_failing_in_every_batch_end_as_error_calls(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PJUDGE_ALLOW_PRIVATE_ENDPOINTS", "true")
    monkeypatch.setenv("PJUDGE_BATCH_MAX_TRIES", "2")
    reset_settings()
    with SimServerThread(ServerSettings(batch_delay_s=0.1, batch_fail_rate=0.5, batch_expire_rate=0.5)) as server:
        job = repo.create_job(engine, "owner", many_items(10), _profile(server, mode="batch")).job
        done = _tick_until_done(engine, job.id)
    stored = repo.all_verdicts(engine, job.id)
    assert done.status == "done" and done.n_failed_items == 10 and done.n_failed_calls == 20
    assert all(v.error and "provider: batch request" in v.error and "(2 tries)" in v.error for v in stored)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ProviderBatchRequest)
                            .where(ProviderBatchRequest.job_id == job.id)).scalar_one() == 40


def test_cancelling_a_job_cancels_its_provider_batch(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.provider_batches import acquire, poll_once, release, tick_job

    monkeypatch.setenv("PJUDGE_ALLOW_PRIVATE_ENDPOINTS", "true")
    with SimServerThread(ServerSettings(batch_delay_s=60)) as server:
        job = repo.create_job(engine, "owner", many_items(5), _profile(server, mode="batch")).job
        tick = tick_job(engine, job.id)
        assert tick is not None and tick.submitted == 10
        assert acquire(engine, job.id) and not acquire(engine, job.id)  # one ticker at a time
        release(engine, job.id)
        assert repo.cancel_job(engine, job.id)
        poll_once(engine)
        with engine.connect() as conn:
            row = conn.execute(select(ProviderBatch.batch_id, ProviderBatch.status)
                               .where(ProviderBatch.job_id == job.id)).one()
        assert row.status == "cancelled"
        remote = json.load(urllib.request.urlopen(f"{server.url}/v1/batches/{row.batch_id}"))
        assert remote["status"] == "cancelled"


def test_a_batch_mode_job_whose_owner_spent_the_daily_quota_sends_no_batch(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batch mode must not be a way round PJUDGE_QUOTA_COST_PER_DAY: the quota is checked before a
    # round of provider batches is sent, as before an interactive batch.
    monkeypatch.setenv("PJUDGE_ALLOW_PRIVATE_ENDPOINTS", "true")
    with SimServerThread(ServerSettings(batch_delay_s=0.1)) as server:
        spent = repo.create_job(engine, "owner", many_items(4), _profile(server, mode="batch")).job
        _tick_until_done(engine, spent.id)
        assert repo.get_job(engine, spent.id).cost_usd > 0  # type: ignore[union-attr]  # the job exists
        monkeypatch.setenv("PJUDGE_QUOTA_COST_PER_DAY", "0.000001")
        reset_settings()
        fresh = [it.model_copy(update={"prompt": f"{it.prompt} (after the quota)"}) for it in many_items(6)]
        job = repo.create_job(engine, "owner", fresh, _profile(server, mode="batch")).job
        done = _tick_until_done(engine, job.id)
        created = json.load(urllib.request.urlopen(f"{server.url}/v1/batches"))["data"]
    reset_settings()
    stored = repo.all_verdicts(engine, job.id)
    assert done.status == "done" and len(stored) == 6 and done.cost_usd == 0
    assert all(v.error is not None and v.error.startswith("quota:") and not v.calls for v in stored)
    assert len(created) == 1  # the first job's batch only


def test_a_budget_on_a_batch_mode_job_is_refused(engine: Engine) -> None:
    from tests.support.api import make_items, new_app, post_job

    client = new_app(engine, lambda job: None, PJUDGE_ENDPOINTS="openai-compatible=http://127.0.0.1:9/v1|SIM_API_KEY",
                     PJUDGE_API_KEY_ENVS="SIM_API_KEY").test_client()
    profile = {"provider": "openai-compatible", "model": "sim-judge", "base_url": "http://127.0.0.1:9/v1",
               "api_key_env": "SIM_API_KEY", "mode": "batch"}
    response = post_job(client, make_items(2), profile=profile, max_cost_usd=1.0)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "max_cost_usd"
    assert post_job(client, make_items(2), profile={**profile, "mode": "interactive"}, max_cost_usd=1.0).status_code == 202


def test_the_api_takes_mode_batch_and_the_server_prices_it_at_its_batch_discount(engine: Engine) -> None:
    from tests.support.api import make_items, new_app, post_job
    from worker.provider_batches import is_batch_job

    sent: list[Any] = []
    client = new_app(engine, sent.append, PJUDGE_ENDPOINTS="openai-compatible=http://127.0.0.1:9/v1|SIM_API_KEY",
                     PJUDGE_API_KEY_ENVS="SIM_API_KEY").test_client()
    profile = {"provider": "openai-compatible", "model": "sim-judge", "base_url": "http://127.0.0.1:9/v1",
               "api_key_env": "SIM_API_KEY", "mode": "batch"}
    response = post_job(client, make_items(3), profile=profile)
    assert response.status_code == 202, response.get_json()
    stored = repo.job_profile(sent[0])
    assert stored.mode == "batch" and stored.price.cost(10**6, 0, batch=True) == stored.price.cost(10**6, 0) / 2 and is_batch_job(sent[0])
    assert post_job(client, make_items(1), profile={**profile, "mode": "later"}).status_code == 422
    interactive = post_job(client, make_items(3), profile={**profile, "mode": "interactive"})
    assert interactive.status_code == 202 and not is_batch_job(sent[1])


# ---------------------------------------------------------------- the service, real processes

@pytest.fixture
def service(sqlite_service: Service) -> Service:
    sqlite_service.env["PJUDGE_BATCH_POLL_S"] = "0.5"
    return sqlite_service


def _wait_live_batch(service: Service, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with service.engine.connect() as conn:
            if conn.execute(select(func.count()).select_from(ProviderBatch).where(
                    ProviderBatch.job_id == job_id, ProviderBatch.status == "live")).scalar_one():
                return
        time.sleep(0.1)
    raise AssertionError("no provider batch went live")


def _check_2000(service: Service, job_id: str, items: list[PairItem], interactive: list[Verdict]) -> Any:
    job = service.wait_done(job_id, 180)
    assert service.row_counts(job_id) == {"verdicts": 2000, "distinct_verdicts": 2000, "calls": 4000}
    assert (job.status, job.n_verdicts, job.n_calls) == ("done", 2000, 4000)
    stored = repo.all_verdicts(service.engine, job_id)
    assert _same(interactive, stored) == 2000
    assert job.cost_usd == pytest.approx(_cost(interactive) / 2, rel=1e-6)
    return job


@pytest.mark.parametrize("crash", ["kill -9 worker", "stop redis"])
def test_a_2000_item_batch_job_survives_a_crash_while_its_batch_is_pending(
        service: Service, start_sim: Any, crash: str) -> None:
    sim = start_sim("--batch-delay-s", "4", "--noise", "0.1", "--first-bias", "0.2", "--seed", "15")
    items = many_items(2000, seed=15)
    profile = _profile(sim)
    interactive = asyncio.run(judge_all(profile, items))
    worker = service.start_worker(concurrency=2)
    job_id = service.submit(items, profile.model_copy(update={"mode": "batch"}))
    _wait_live_batch(service, job_id)
    if crash == "kill -9 worker":
        worker.kill9()
        time.sleep(1)
        service.start_worker(concurrency=2)
    else:
        service.redis.stop()
        time.sleep(5)
        service.redis.start()
    started = time.monotonic()
    job = _check_2000(service, job_id, items, interactive)
    print(f"{crash}: done {time.monotonic() - started:.1f}s later; cost {job.cost_usd:.4f} USD "
          f"against {_cost(interactive):.4f} interactive")


def test_a_poll_ticks_owners_in_turns_so_many_batch_jobs_hold_back_no_other_tenant(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each tick waits on the provider: one tenant's ten batch jobs, made first, must not all be
    ticked before another tenant's one."""
    from worker import provider_batches

    profile = JudgeProfile(name="b", provider="openai", model="m", mode="batch")
    made = [(owner, repo.create_job(engine, owner, many_items(1), profile).job.id)
            for owner in ["many"] * 10 + ["one", "many"]]
    repo.create_job(engine, "one", many_items(1), JudgeProfile(name="i", provider="openai", model="m"))  # not batch
    ticked: list[str] = []
    monkeypatch.setattr(provider_batches, "tick_job", lambda engine, job_id: ticked.append(job_id))
    provider_batches.poll_once(engine)
    owner_of = dict((job_id, owner) for owner, job_id in made)
    assert sorted(ticked) == sorted(owner_of)  # every batch job once, no interactive one
    assert [owner_of[job_id] for job_id in ticked[:2]] == ["many", "one"]
    assert [job_id for job_id in ticked if owner_of[job_id] == "many"] == [j for o, j in made if o == "many"]
