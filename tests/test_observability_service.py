"""Issue 17's metrics against a real fleet: Redis, `pjudge serve`, `pjudge worker` (two processes in
prometheus_client's multiprocess mode, one metrics port) and the LLM simulator with injected
failures and unparseable answers. After a 1,000-item job (and a second job of 200 of its items,
answered from the call cache) the workers' counters equal the database's sums, and every metric
the Grafana dashboard queries is in a real scrape."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import case, func, select

from llm_sim.process import SimProcess
from store import repo
from store.models import CallRow, VerdictRow
from tests.support.services import Process, RedisServer, Service, free_port, many_items, wait_for_port

pytestmark = pytest.mark.service
REPO = Path(__file__).resolve().parents[1]
API_KEY = "pj-metrics-test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@dataclass
class Fleet:
    service: Service
    api_url: str
    worker_url: str
    job_ids: list[str]
    seconds: float


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={**AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(tmp / "redis").start()
    sim = SimProcess("--fail-rate", "0.05", "--retry-after-ms", "1", "--malformed-rate", "0.05", "--seed", "17").start()
    service = Service(tmp, f"sqlite:///{tmp}/fleet.sqlite", redis)
    api_port, metrics_port = free_port(), free_port()
    service.env.update({"PJUDGE_API_KEYS": API_KEY, "PJUDGE_WORKER_PROCESSES": "2",
                        "PJUDGE_WORKER_METRICS_PORT": str(metrics_port), "PJUDGE_METRICS_DIR": str(tmp / "metrics")})
    try:
        service.workers.append(Process(["serve", "--port", str(api_port)], service.env, tmp / "api.log").start())
        service.start_worker(concurrency=8)
        wait_for_port(api_port)
        wait_for_port(metrics_port)
        api_url = f"http://127.0.0.1:{api_port}"
        items = [i.model_dump(exclude_none=True) for i in many_items(1000, seed=17)]
        # max_retries 1: some calls end in provider errors; max_reasks 1: some in parse errors.
        profile = {"provider": "openai-compatible", "model": "sim-judge", "base_url": sim.openai_base_url,
                   "max_retries": 1, "max_reasks": 1}
        started = time.monotonic()
        first = _post(f"{api_url}/v1/jobs", {"items": items, "profile": profile})["job_id"]
        service.wait_done(first, 300)
        seconds = time.monotonic() - started
        # The same tenant, 200 of the same items: their calls come from the call cache (the
        # calls that failed are asked again).
        second = _post(f"{api_url}/v1/jobs", {"items": items[:200], "profile": profile})["job_id"]
        service.wait_done(second, 120)
        yield Fleet(service, api_url, f"http://127.0.0.1:{metrics_port}", [first, second], seconds)
    finally:
        service.stop()
        sim.stop()
        redis.stop()


def database_sums(fleet: Fleet) -> dict[str, float]:
    with fleet.service.engine.connect() as conn:
        row = conn.execute(select(
            func.count(), func.sum(case((CallRow.cached, 1), else_=0)),
            func.sum(case((CallRow.error.like("provider:%"), 1), else_=0)),
            func.sum(case((CallRow.error.like("unparseable%"), 1), else_=0)),
            func.sum(CallRow.cost_usd), func.sum(CallRow.input_tokens), func.sum(CallRow.output_tokens),
            func.sum(case((CallRow.cached, 0), else_=1)), func.sum(CallRow.attempts - 1),
        )).one()
        verdicts = conn.execute(select(func.count()).select_from(VerdictRow)).scalar_one()
        failed_items = conn.execute(select(func.count()).select_from(VerdictRow)
                                    .where(VerdictRow.winner.is_(None))).scalar_one()
    names = ("calls", "cached", "provider_errors", "parse_errors", "cost", "input_tokens", "output_tokens",
             "made", "reasks")
    return {**dict(zip(names, (float(v or 0) for v in row), strict=True)), "verdicts": verdicts,
            "failed_items": failed_items}


def worker_sums(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {
        "calls": total(samples, "pjudge_judge_calls_total"),
        "cached": total(samples, "pjudge_judge_cache_hits_total"),
        "provider_errors": total(samples, "pjudge_judge_calls_total", outcome="provider_error"),
        "parse_errors": total(samples, "pjudge_judge_calls_total", outcome="parse_error"),
        "cost": total(samples, "pjudge_judge_cost_usd_total"),
        "input_tokens": total(samples, "pjudge_judge_input_tokens_total"),
        "output_tokens": total(samples, "pjudge_judge_output_tokens_total"),
        "made": total(samples, "pjudge_judge_call_latency_seconds_count"),
        "reasks": total(samples, "pjudge_judge_reasks_total"),
        "verdicts": total(samples, "pjudge_judge_verdicts_total"),
        "failed_items": total(samples, "pjudge_judge_verdicts_total", outcome="failed"),
    }


def test_after_a_1000_item_job_the_workers_counters_equal_the_database(fleet: Fleet) -> None:
    expected = database_sums(fleet)
    deadline = time.monotonic() + 10  # a batch counts just after its commit: let the last one land
    while True:
        scraped = worker_sums(scrape(f"{fleet.worker_url}/metrics"))
        if scraped["calls"] >= expected["calls"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    exact = ("calls", "cached", "provider_errors", "parse_errors", "input_tokens", "output_tokens", "made",
             "reasks", "verdicts", "failed_items")
    assert {k: scraped[k] for k in exact} == {k: expected[k] for k in exact}
    assert scraped["cost"] == pytest.approx(expected["cost"], rel=1e-9, abs=1e-12)
    # What the run exercised, so the equalities mean something.
    assert expected["verdicts"] == 1200 and expected["cached"] > 300 and expected["cost"] > 0
    assert expected["provider_errors"] > 0 and expected["parse_errors"] > 0 and expected["reasks"] > 0
    worker = scrape(f"{fleet.worker_url}/metrics")
    assert total(worker, "pjudge_provider_http_retries_total") > 0
    assert total(worker, "pjudge_batch_duration_seconds_count") >= 1200 / 32
    # The API's database collector reads the same database.
    api = scrape(f"{fleet.api_url}/metrics")
    assert total(api, "pjudge_calls_total") == expected["calls"]
    assert total(api, "pjudge_verdicts_total") == expected["verdicts"]
    assert total(api, "pjudge_cost_usd_total") == pytest.approx(expected["cost"])
    assert total(api, "pjudge_jobs", status="done") == 2 and total(api, "pjudge_broker_up") == 1
    assert total(api, "pjudge_http_request_duration_seconds_count", route="/v1/jobs", method="POST") == 2
    with fleet.service.engine.connect() as conn:
        queue = conn.execute(select(func.count()).select_from(VerdictRow).where(
            VerdictRow.abstained.is_(True), VerdictRow.human_label.is_(None))).scalar_one()
    assert total(api, "pjudge_human_queue_items") == queue
    jobs = [repo.get_job(fleet.service.engine, job_id) for job_id in fleet.job_ids]
    print(f"\n1000-item job in {fleet.seconds:.1f}s; database = workers' scrape: "
          + ", ".join(f"{k} {expected[k]:g}" for k in (*exact, "cost"))
          + f"; jobs {[(j.n_items, j.n_calls, round(j.cost_usd, 6)) for j in jobs if j is not None]}")


def promql_metric_names(expression: str) -> set[str]:
    """The metric names an expression selects, from its parsed syntax tree (promql-parser)."""
    import promql_parser

    def walk(node: Any) -> set[str]:
        if node is None:
            return set()
        if isinstance(node, promql_parser.VectorSelector):
            return {node.name}
        if isinstance(node, promql_parser.MatrixSelector):
            return walk(node.vector_selector)
        if isinstance(node, promql_parser.AggregateExpr):
            return walk(node.expr) | walk(node.param)
        if isinstance(node, promql_parser.Call):
            return set().union(*(walk(arg) for arg in node.args))
        if isinstance(node, promql_parser.BinaryExpr):
            return walk(node.lhs) | walk(node.rhs)
        if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr | promql_parser.SubqueryExpr):
            return walk(node.expr)
        assert isinstance(node, promql_parser.NumberLiteral | promql_parser.StringLiteral), type(node)
        return set()

    # Grafana's variables, as Grafana substitutes them.
    concrete = expression.replace("$__rate_interval", "1m").replace("$model", ".*")
    return walk(promql_parser.parse(concrete))


def test_every_metric_the_grafana_dashboard_queries_is_in_a_scrape_of_the_api_or_a_worker(fleet: Fleet) -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = set().union(*(promql_metric_names(e) for e in expressions))
    queried |= {"pjudge_judge_calls_total"}  # the $model variable's label_values()
    scraped = {name for name, _ in scrape(f"{fleet.api_url}/metrics")}
    scraped |= {name for name, _ in scrape(f"{fleet.worker_url}/metrics")}
    assert len(expressions) >= 20 and len(queried) >= 15
    assert sorted(queried - scraped) == []
