"""Prometheus text exposition (format 0.0.4) without a client library: a handful of counters.

HTTP counters live in the process that served the requests (each server process reports its
own; Prometheus sums them). Job, verdict and call totals are read from the database, so they are
the same whichever process is scraped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled", "budget_exhausted")


class HttpMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = {}
        self._seconds: dict[tuple[str, str], float] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, str(status))
            self._requests[key] = self._requests.get(key, 0) + 1
            self._seconds[(method, route)] = self._seconds.get((method, route), 0.0) + seconds

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], float]]:
        with self._lock:
            return dict(self._requests), dict(self._seconds)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: int | float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(http: HttpMetrics, jobs_by_status: Mapping[str, int], totals: Mapping[str, float]) -> str:
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

    statuses = sorted(set(JOB_STATUSES) | set(jobs_by_status))
    family("pjudge_jobs", "gauge", "Jobs by status.",
           [(_labels([("status", s)]), jobs_by_status.get(s, 0)) for s in statuses])
    family("pjudge_job_items_total", "counter", "Items of all jobs.", [("", totals.get("items", 0))])
    family("pjudge_verdicts_total", "counter", "Verdicts stored.", [("", totals.get("verdicts", 0))])
    family("pjudge_calls_total", "counter", "Judge calls made.", [("", totals.get("calls", 0))])
    family("pjudge_failed_calls_total", "counter", "Judge calls that failed or could not be parsed.",
           [("", totals.get("failed_calls", 0))])
    family("pjudge_failed_items_total", "counter", "Items without a parsed winner.",
           [("", totals.get("failed_items", 0))])
    family("pjudge_cost_usd_total", "counter", "Provider cost of all calls, in US dollars.",
           [("", float(totals.get("cost_usd", 0.0)))])
    requests, seconds = http.snapshot()
    family("pjudge_http_requests_total", "counter", "HTTP requests by method, route and status.",
           [(_labels([("method", m), ("route", r), ("status", s)]), n) for (m, r, s), n in sorted(requests.items())])
    family("pjudge_http_request_seconds_total", "counter", "Time spent answering HTTP requests, by route.",
           [(_labels([("method", m), ("route", r)]), t) for (m, r), t in sorted(seconds.items())])
    return "\n".join(lines) + "\n"
