"""Issue 17's metrics, logs and traces in one process: the API's /metrics, the workers' counters
counted once per stored call (a redelivered batch adds nothing), JSON log lines with their ids
and no secret, and the spans of a job, its batches and their calls."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import case, func, select

from judge import logs, metrics, tracing
from judge.profiles import JudgeProfile
from judge.settings import reset_settings
from store import repo
from store.db import get_engine
from store.models import CallRow
from tests.support.api import AUTH_A, KEY_A, judge_all, make_items, new_app, post_job
from tests.support.services import many_items, sim_profile


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def registry_total(name: str, **labels: str) -> float:
    from prometheus_client import generate_latest

    found = samples(generate_latest(metrics.REGISTRY).decode())
    return sum(v for (n, ls), v in found.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


# ---------------------------------------------------------------- the API's /metrics

def test_the_api_serves_request_latency_by_route_template_and_the_databases_facts(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/db.sqlite")
    client = new_app(engine, lambda job: None).test_client()
    job_id = post_job(client, make_items(10)).get_json()["job_id"]
    judge_all(engine, job_id, lambda p, _: ("A", 0.55, True) if p < 6 else ("B", 0.1, False))
    client.get(f"/v1/jobs/{job_id}", headers=AUTH_A)
    found = samples(client.get("/metrics").get_data(as_text=True))
    route = (("method", "GET"), ("route", "/v1/jobs/<job_id>"), ("status", "200"))
    assert found[("pjudge_http_request_duration_seconds_count", route)] == 1
    assert found[("pjudge_http_requests_total", route)] == 1
    waiting = [v for v in repo.all_verdicts(engine, job_id) if v.abstained and v.human_label is None]
    assert found[("pjudge_human_queue_items", ())] == len(waiting) > 0
    assert found[("pjudge_jobs", (("status", "done"),))] == 1
    assert found[("pjudge_calls_total", ())] == 20
    # No REDIS_URL: a scrape neither reaches for nor starts a broker.
    assert not any(name.startswith(("pjudge_queue_batches", "pjudge_broker_up")) for name, _ in found)


def test_a_broker_that_is_away_is_a_zero_not_a_failed_scrape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # nothing listens there
    reset_settings()
    engine = get_engine(f"sqlite:///{tmp_path}/db.sqlite")
    response = new_app(engine, lambda job: None).test_client().get("/metrics")
    assert response.status_code == 200
    assert samples(response.get_data(as_text=True))[("pjudge_broker_up", ())] == 0


# ---------------------------------------------------------------- counted once, when stored

@pytest.fixture
def worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A database for judge_batch run in this process (no broker)."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/worker.sqlite")
    monkeypatch.setenv("REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:9/0"))  # never reached
    monkeypatch.setenv("PJUDGE_ALLOW_PRIVATE_ENDPOINTS", "true")
    reset_settings()
    yield get_engine()
    reset_settings()


def test_a_call_is_counted_once_when_its_verdict_is_stored_however_often_its_batch_runs(
        worker_env: Any, start_sim: Any) -> None:
    from worker.tasks import judge_batch

    engine = worker_env
    sim = start_sim("--malformed-rate", "0.2", "--seed", "5")
    profile = sim_profile(sim, temperature=0.31, max_reasks=1)  # a model label no other test uses
    labels = {"provider": "openai-compatible", "model": "sim-judge"}
    names = ("pjudge_judge_calls_total", "pjudge_judge_cache_hits_total", "pjudge_judge_reasks_total",
             "pjudge_judge_call_latency_seconds_count", "pjudge_judge_input_tokens_total",
             "pjudge_judge_cost_usd_total", "pjudge_judge_verdicts_total")
    before = {name: registry_total(name, **labels) for name in names}
    items = many_items(24, seed=9)
    jobs = [repo.create_job(engine, "owner-m", items, profile, batch_size=8).job,
            repo.create_job(engine, "owner-m", items[:8], profile, batch_size=8).job]  # from the cache
    for job in jobs:
        for start, end in repo.batches(job):
            judge_batch.apply(args=(job.id, start, end))
            judge_batch.apply(args=(job.id, start, end))  # delivered again: stores and counts nothing
    counted = {name: registry_total(name, **labels) - before[name] for name in names}
    with engine.connect() as conn:
        calls, cached, made, reasks, tokens, cost = conn.execute(select(
            func.count(), func.sum(case((CallRow.cached, 1), else_=0)), func.sum(case((CallRow.cached, 0), else_=1)),
            func.sum(CallRow.attempts - 1), func.sum(CallRow.input_tokens), func.sum(CallRow.cost_usd))).one()
    assert counted["pjudge_judge_verdicts_total"] == 32
    assert counted["pjudge_judge_calls_total"] == calls == 64
    assert counted["pjudge_judge_cache_hits_total"] == cached and cached >= 12
    assert counted["pjudge_judge_call_latency_seconds_count"] == made
    assert counted["pjudge_judge_reasks_total"] == reasks and reasks > 0
    assert counted["pjudge_judge_input_tokens_total"] == tokens
    assert counted["pjudge_judge_cost_usd_total"] == pytest.approx(cost)


# ---------------------------------------------------------------- JSON logs

def test_json_log_lines_carry_the_job_and_batch_and_never_a_key(
        worker_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The failure of test_fairness's exhausted batch, whose traceback holds a key, as JSON lines.
    secret = "sk-test-provider-" + "hidden" * 4
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    from worker.tasks import MAX_TASK_RETRIES, judge_batch

    profile = JudgeProfile(provider="openai-compatible", model="m", base_url="http://127.0.0.1:9/v1",
                           template=f"removed-{secret}")
    job = repo.create_job(worker_env, "owner-1", many_items(3), profile, batch_size=2).job
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("pjudge.worker")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        judge_batch.apply(args=(job.id, 0, 2), retries=MAX_TASK_RETRIES)
        try:
            raise RuntimeError(f"the provider refused Authorization: Bearer {secret}")
        except RuntimeError:
            with logs.bound(job_id=job.id, batch="b1"):
                logger.exception("a call failed", extra={"item_id": "item-7"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert secret not in stream.getvalue() and "hidden" * 4 not in stream.getvalue()
    failed = [line for line in lines if line["level"] == "error" and "failed" in line["message"]]
    assert failed[0]["job_id"] == job.id and failed[0]["batch"] == f"{job.id}[0:2]"
    assert "Traceback (most recent call last)" in failed[0]["message"] and "***" in failed[0]["message"]
    last = lines[-1]
    assert (last["job_id"], last["batch"], last["item_id"], last["logger"]) == (job.id, "b1", "item-7", "pjudge.worker")
    assert "RuntimeError" in last["error"] and "***" in last["error"]
    assert set(last) == {"time", "level", "logger", "message", "job_id", "batch", "item_id", "error"}


def test_pjudge_log_format_json_makes_the_root_handler_write_json(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        logs.configure(logging.INFO, "json", stream)
        logging.getLogger("pjudge.test").info("hello %s", "world")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert json.loads(stream.getvalue())["message"] == "hello world"


# ---------------------------------------------------------------- traces

@pytest.fixture(scope="module")
def spans() -> Any:
    """An in-memory span exporter behind this process's tracer provider (set once per process)."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def test_a_calls_span_is_the_child_of_its_batch_in_the_trace_of_its_job(
        spans: Any, worker_env: Any, start_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.tasks import judge_batch

    monkeypatch.setenv("PJUDGE_OTEL", "1")
    reset_settings()
    tracing.reset()
    sim = start_sim()
    spans.clear()
    try:
        client = new_app(worker_env, lambda job: None, PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true").test_client()
        profile = {"provider": "openai-compatible", "model": "sim-judge", "base_url": sim.openai_base_url,
                   "temperature": 0.37}  # a judge of its own (the worker keeps judges per profile)
        response = post_job(client, make_items(3), profile=profile)
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["job_id"]
        judge_batch.apply(args=(job_id, 0, 3))
    finally:
        monkeypatch.delenv("PJUDGE_OTEL")
        reset_settings()
        tracing.reset()
    finished = spans.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    (job,), (batch,), calls = by_name["pjudge.job"], by_name["pjudge.batch"], by_name["pjudge.call"]
    assert len(calls) == 6  # 3 items in both orders
    trace_id = int(job_id.replace("-", ""), 16)
    assert {s.context.trace_id for s in finished} == {trace_id}  # the job's id is its trace's
    assert job.attributes["pjudge.job_id"] == batch.attributes["pjudge.job_id"] == job_id
    assert batch.parent.span_id == job.parent.span_id  # both under the job's root
    assert all(call.parent.span_id == batch.context.span_id for call in calls)
    assert {call.attributes["pjudge.item_id"] for call in calls} == {"item-00000", "item-00001", "item-00002"}
    assert all(call.attributes["gen_ai.usage.input_tokens"] > 0 for call in calls)
    assert KEY_A not in json.dumps([dict(s.attributes) for s in finished])


def test_tracing_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("PJUDGE_OTEL", raising=False)
    reset_settings()
    tracing.reset()
    try:
        assert tracing.tracer() is None
        provider = object()
        assert tracing.traced(provider) is provider  # type: ignore[arg-type]
    finally:
        tracing.reset()


def test_a_cascades_calls_count_under_their_stages_model_and_its_verdict_under_the_cascade() -> None:
    from judge.records import JudgeInfo, PairItem, StageVerdict
    from tests.support.api import make_verdict

    item = PairItem.model_validate(make_items(1)[0])
    single = make_verdict(item, "A", 0.9, model="stage-one-model")
    stages = [StageVerdict(profile="cheap", provider="openai", model="cheap-model-x", winner=None, p_a=0.5,
                           certainty=0.0),
              StageVerdict(profile="strong", provider="anthropic", model="strong-model-y", winner="A", p_a=0.9,
                           certainty=0.8)]
    calls = [call.model_copy(update={"stage": stage}) for stage in (0, 1) for call in single.calls]
    cascade = single.model_copy(update={"calls": calls, "stage": 1, "stages": stages,
                                        "judge": JudgeInfo(profile="c", provider="cascade", model="cascade-xy")})
    before = [registry_total("pjudge_judge_calls_total", model=m) for m in ("cheap-model-x", "strong-model-y")]
    verdicts_before = registry_total("pjudge_judge_verdicts_total", provider="cascade", model="cascade-xy")
    metrics.observe_stored([cascade])
    after = [registry_total("pjudge_judge_calls_total", model=m) for m in ("cheap-model-x", "strong-model-y")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2]
    assert registry_total("pjudge_judge_calls_total", provider="anthropic", model="strong-model-y") >= 2
    assert registry_total("pjudge_judge_verdicts_total", provider="cascade", model="cascade-xy") - verdicts_before == 1
