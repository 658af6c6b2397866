"""/metrics of the API (prometheus_client): its requests, and the database's facts.

- The API's own: `pjudge_http_requests_total` and the `pjudge_http_request_duration_seconds`
  histogram by method, route template and status, kept per app (`ApiMetrics`), so several apps in
  one process (tests) count apart. Under a multi-process server with PROMETHEUS_MULTIPROC_DIR set,
  every process's files are summed instead (judge.metrics).
- The database's facts, computed when scraped (`DatabaseCollector`), the same whichever API
  process answers: jobs by status, the counters of all jobs (items, verdicts, calls, failed calls,
  failed items, cost), the human queue (abstained verdicts without a human label), and the
  batches waiting in the broker's queues (worker.lanes). With several API replicas scraped,
  aggregate these with max(), not sum() (deploy/grafana-dashboard.json does).

The workers' call, token, cost, latency and batch metrics are theirs (judge.metrics), served by
`pjudge worker` on PJUDGE_WORKER_METRICS_PORT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from judge import metrics as judge_metrics
from store import repo
from store.db import reading
from store.models import WAITING, VerdictRow
from store.queries import totals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "budget_exhausted")
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
log = logging.getLogger("pjudge.api")
QueueLengths = Callable[[], dict[str, int]]  # queue name -> waiting messages; raises when unreachable


class ApiMetrics:
    """One app's request metrics (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter("pjudge_http_requests", "HTTP requests by method, route template and status.",
                                labels, registry=self.registry)
        self.latency = Histogram("pjudge_http_request_duration_seconds", "Time to answer an HTTP request, by "
                                 "method, route template and status.", labels, buckets=REQUEST_BUCKETS,
                                 registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)


def human_queue_size(engine: Engine) -> int:
    """Verdicts waiting for a human: abstained, no human label yet (store.models.WAITING, whose
    partial index ix_verdicts_waiting serves this count). Over all jobs, a cascade's with `then:
    abstain` included (store.queue leaves those out of a job's queue)."""
    with reading(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(VerdictRow).where(WAITING)).scalar_one())


class DatabaseCollector(Collector):
    """The database's facts (and the broker's queues), read at scrape time."""

    def __init__(self, engine: Engine, queue_lengths: QueueLengths | None = None):
        self.engine, self.queue_lengths = engine, queue_lengths

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("pjudge_jobs", "Jobs by status.", labels=["status"])
        counts = repo.job_counts(self.engine)
        for status in sorted(set(JOB_STATUSES) | set(counts)):
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        sums = totals(self.engine)
        for key, name, text in (
            ("items", "pjudge_job_items", "Items of all jobs."),
            ("verdicts", "pjudge_verdicts", "Verdicts stored."),
            ("calls", "pjudge_calls", "Judge calls made."),
            ("failed_calls", "pjudge_failed_calls", "Judge calls that failed or could not be parsed."),
            ("failed_items", "pjudge_failed_items", "Items without a parsed winner."),
            ("cost_usd", "pjudge_cost_usd", "Provider cost of all calls, in US dollars."),
        ):
            yield CounterMetricFamily(name, text[:-1] + " (database).", value=float(sums.get(key, 0)))
        yield GaugeMetricFamily("pjudge_human_queue_items", "Verdicts waiting for a human label (abstained, "
                                "not labelled).", value=human_queue_size(self.engine))
        if self.queue_lengths is None:
            return
        up = GaugeMetricFamily("pjudge_broker_up", "Whether the broker answered this scrape.")
        try:
            lengths = self.queue_lengths()
        except Exception as exc:  # noqa: BLE001 - a broker away must not fail the database's metrics
            log.info("queue lengths not read (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queued = GaugeMetricFamily("pjudge_queue_batches", "Batch tasks waiting in the broker, by queue "
                                   "(the shared queue and the tenants' lanes).", labels=["queue"])
        for queue, length in sorted(lengths.items()):
            queued.add_metric([queue], length)
        yield queued


def redis_queue_lengths(url: str, legacy: str) -> QueueLengths:
    """Queue lengths from the broker at `url` (one pipelined round trip, 1 s timeouts)."""
    import redis

    from worker import lanes

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)

    def read() -> dict[str, int]:
        names = lanes.all_queues(legacy)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))

    return read


def registry_for(api: ApiMetrics, database: DatabaseCollector) -> CollectorRegistry:
    """What one scrape reads: every process's files in multiprocess mode, else this app's own
    registry; and the database's facts."""
    directory = judge_metrics.multiprocess_dir()
    registry = judge_metrics.multiprocess_registry(directory) if directory is not None else CollectorRegistry()
    if directory is None:
        registry.register(_Forward(api.registry))
    registry.register(database)
    return registry


class _Forward(Collector):
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def render(api: ApiMetrics, database: DatabaseCollector) -> bytes:
    return generate_latest(registry_for(api, database))
