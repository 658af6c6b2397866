"""Prometheus metrics of the judging processes (prometheus_client), counted exactly once.

What a call cost, how long it took and how it ended is counted when its verdict is stored, from
what the store really inserted (`observe_stored`, fed by store.repo.store_new_verdicts through
the worker): a task retried after a database error, a redelivered message or a batch handed back
and judged again from the call cache counts each call once, exactly as the `calls` table holds
it. So `pjudge_judge_calls_total` equals the rows of `calls`, `..._cost_usd_total` their cost,
and the latency histogram's count the calls that were not answered from the cache.

Counted as they happen instead (nothing in the database to agree with): the providers' HTTP
retries, batch durations and task retries.

Processes: the metrics live in this module's REGISTRY. Worker processes under `pjudge worker`
run in prometheus_client's multiprocess mode when PJUDGE_WORKER_METRICS_PORT is set: the
supervisor (worker.processes) gives its children PROMETHEUS_MULTIPROC_DIR before they import
prometheus_client and serves the sum of their files on that port (`serve_multiprocess`). The
API's own metrics are in api.metrics.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from judge.records import Call, Verdict

# No *_created series: they double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable, read at its import

# Seconds. Calls: from a cached simulator's milliseconds to a slow model's minutes.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Distinct (provider, model) label pairs a process keeps; later ones count as model="other". A
# profile sent over HTTP may name any model: its names must not grow the series without bound.
MAX_MODELS = 100

REGISTRY = CollectorRegistry()
_MODEL = ("provider", "model")

CALLS = Counter("pjudge_judge_calls", "Judge calls stored with their verdicts, by outcome: ok, cached (answered "
                "from the call cache), parse_error (no parseable answer after the re-asks), provider_error.",
                [*_MODEL, "outcome"], registry=REGISTRY)
CALL_LATENCY = Histogram("pjudge_judge_call_latency_seconds", "Latency of the calls made (not answered from "
                         "the cache), re-asks and HTTP retries included.", _MODEL, buckets=CALL_BUCKETS,
                         registry=REGISTRY)
REASKS = Counter("pjudge_judge_reasks", "Re-asks after an answer that could not be parsed.", _MODEL,
                 registry=REGISTRY)
CACHE_HITS = Counter("pjudge_judge_cache_hits", "Calls answered from the call cache.", _MODEL, registry=REGISTRY)
INPUT_TOKENS = Counter("pjudge_judge_input_tokens", "Input tokens of the stored calls.", _MODEL, registry=REGISTRY)
OUTPUT_TOKENS = Counter("pjudge_judge_output_tokens", "Output tokens of the stored calls.", _MODEL,
                        registry=REGISTRY)
COST = Counter("pjudge_judge_cost_usd", "Provider cost of the stored calls, in US dollars.", _MODEL,
               registry=REGISTRY)
VERDICTS = Counter("pjudge_judge_verdicts", "Verdicts stored by workers, by outcome: decided, abstained, failed "
                   "(no parsed winner).", [*_MODEL, "outcome"], registry=REGISTRY)
BATCH_DURATION = Histogram("pjudge_batch_duration_seconds", "Duration of a batch task, by outcome: stored, "
                           "retried, requeued (handed back), cancelled, failed.", ["outcome"],
                           buckets=BATCH_BUCKETS, registry=REGISTRY)
BATCH_RETRIES = Counter("pjudge_batch_retries", "Batch tasks retried, by reason: error (judging failed), "
                        "database (the verdicts could not be stored).", ["reason"], registry=REGISTRY)
HTTP_RETRIES = Counter("pjudge_provider_http_retries", "HTTP requests to providers sent again (connection "
                       "errors, timeouts, 408/409/429/5xx), by provider.", ["provider"], registry=REGISTRY)

CALL_OUTCOMES = ("ok", "cached", "parse_error", "provider_error")
VERDICT_OUTCOMES = ("decided", "abstained", "failed")
BATCH_OUTCOMES = ("done", "retried", "requeued", "failed")
RETRY_REASONS = ("error", "database")
# Every series a dashboard reads exists from the start, at 0 (rate() of a series that appears at
# its first event misses that event; in multiprocess mode a series never touched is not served).
for _outcome in BATCH_OUTCOMES:
    BATCH_DURATION.labels(_outcome)
for _reason in RETRY_REASONS:
    BATCH_RETRIES.labels(_reason)
for _provider in ("openai", "openai-compatible", "anthropic"):
    HTTP_RETRIES.labels(_provider)

_models: set[tuple[str, str]] = set()
_models_lock = threading.Lock()


def model_labels(provider: str, model: str) -> tuple[str, str]:
    """The (provider, model) labels, at most MAX_MODELS distinct pairs per process (then
    model="other"); a new pair's series start at 0."""
    pair = (provider[:64], model[:128])
    with _models_lock:
        if pair in _models:
            return pair
        if len(_models) >= MAX_MODELS:
            pair = (pair[0], "other")
        if pair not in _models:
            _models.add(pair)
            _start_series(pair)
    return pair


def _start_series(pair: tuple[str, str]) -> None:
    for outcome in CALL_OUTCOMES:
        CALLS.labels(*pair, outcome)
    for outcome in VERDICT_OUTCOMES:
        VERDICTS.labels(*pair, outcome)
    for metric in (CALL_LATENCY, REASKS, CACHE_HITS, INPUT_TOKENS, OUTPUT_TOKENS, COST):
        metric.labels(*pair)


def call_outcome(call: Call) -> str:
    if call.error is not None:
        return "provider_error" if call.error.startswith("provider:") else "parse_error"
    return "cached" if call.cached else "ok"


def verdict_outcome(verdict: Verdict) -> str:
    if verdict.winner is None:
        return "failed"
    return "abstained" if verdict.abstained else "decided"


def call_labels(verdict: Verdict, call: Call) -> tuple[str, str]:
    """A call's (provider, model): a cascade's call is its stage's (SPEC 2.1), not the cascade's."""
    stages = verdict.stages or []
    if call.stage is not None and call.stage < len(stages):
        return model_labels(stages[call.stage].provider, stages[call.stage].model)
    return model_labels(verdict.judge.provider, verdict.judge.model)


def observe_stored(verdicts: Iterable[Verdict]) -> None:
    """Count the verdicts a store inserted, and their calls. Call it once per insert, after the
    transaction committed, with only the verdicts that were new (store.repo.store_new_verdicts)."""
    for verdict in verdicts:
        VERDICTS.labels(*model_labels(verdict.judge.provider, verdict.judge.model), verdict_outcome(verdict)).inc()
        for call in verdict.calls:
            labels = call_labels(verdict, call)
            CALLS.labels(*labels, call_outcome(call)).inc()
            if call.cached:
                CACHE_HITS.labels(*labels).inc()
            elif call.latency_s is not None:
                CALL_LATENCY.labels(*labels).observe(call.latency_s)
            if call.attempts > 1:
                REASKS.labels(*labels).inc(call.attempts - 1)
            if call.input_tokens:
                INPUT_TOKENS.labels(*labels).inc(call.input_tokens)
            if call.output_tokens:
                OUTPUT_TOKENS.labels(*labels).inc(call.output_tokens)
            if call.cost_usd:
                COST.labels(*labels).inc(call.cost_usd)


def observe_http_retry(provider: str) -> None:
    """A provider's HTTP request sent again (judge.providers.retries)."""
    HTTP_RETRIES.labels(provider[:64]).inc()


# ---------------------------------------------------------------- multiprocess mode

def multiprocess_dir() -> Path | None:
    """PROMETHEUS_MULTIPROC_DIR when this process runs in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    return Path(value) if value else None


def prepare_multiprocess_dir(directory: Path) -> Path:
    """Make `directory` (owner-only) and remove the files of an earlier run: they would be summed
    with this run's (prometheus_client's rule: wipe the directory before the processes start)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that reads the metric files of every process of `directory`, live or dead
    (counters of a restarted process keep counting from their files)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    collector = multiprocess.MultiProcessCollector
    collector(registry, path=str(directory))  # type: ignore[no-untyped-call]  # unannotated in prometheus_client
    return registry


def serve_multiprocess(directory: Path, port: int, host: str) -> object:
    """Serve the sum of the processes' metrics on http://host:port/metrics (a daemon thread);
    returns the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=multiprocess_registry(directory))
    return server
