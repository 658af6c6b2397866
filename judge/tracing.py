"""OpenTelemetry spans for a job, its batches and their provider calls (the `otel` extra).

Off unless configured: PJUDGE_OTEL=1 or OTEL_EXPORTER_OTLP_ENDPOINT set, and opentelemetry
installed (`pip install 'persona-judge[otel]'`). Then the process exports its spans over OTLP/HTTP
(the OTEL_EXPORTER_OTLP_* variables configure the exporter), unless the application installed a
tracer provider of its own first (tests install one with an in-memory exporter).

One trace per job, whose trace id is the job's id (a UUID is 128 bits, like a trace id): the
POST's `pjudge.job` span and every `pjudge.batch` span, in whichever worker and however often a
batch is redelivered or re-sent by the sweeper, are children of the job's (virtual) root, with no
trace context carried in the task messages. A batch's `pjudge.call` spans (one per provider
request, re-asks included) are its children: the worker's event loop runs a batch's calls in
the context of the thread that submitted them. So in a trace viewer, search the job id and follow
a call's latency from the POST to its verdict.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from judge.providers.base import CallRequest, CallResult, Provider

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

TRACER_NAME = "persona-judge"
_lock = threading.Lock()
_tracer: Tracer | None = None
_checked = False


def configured() -> bool:
    from judge.settings import settings

    return settings().otel or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def tracer() -> Tracer | None:
    """This process's tracer, or None when tracing is off (or opentelemetry is not installed)."""
    global _tracer, _checked
    if _checked:
        return _tracer
    with _lock:
        if not _checked:
            _tracer = _make_tracer() if configured() else None
            _checked = True
    return _tracer


def reset() -> None:
    """Read the configuration again on next use (tests)."""
    global _tracer, _checked
    with _lock:
        _tracer, _checked = None, False


def _make_tracer() -> Tracer | None:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    if not _has_sdk_provider(trace.get_tracer_provider()):
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            return None
        provider = TracerProvider(resource=Resource.create({"service.name": "persona-judge"}))
        with contextlib.suppress(ImportError):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    return trace.get_tracer(TRACER_NAME)


def _has_sdk_provider(provider: object) -> bool:
    # The API's default is a proxy (or no-op) provider: anything else was installed on purpose.
    return type(provider).__name__ not in ("ProxyTracerProvider", "NoOpTracerProvider")


def _job_context(job_id: str) -> Any:
    """The job's virtual root span, as a remote parent: trace id from the job id."""
    from opentelemetry import trace

    try:
        trace_id = uuid.UUID(job_id).int
    except ValueError:
        trace_id = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:16], "big")
    span_id = int.from_bytes(hashlib.sha256(b"span:" + job_id.encode()).digest()[:8], "big") or 1
    root = trace.SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True,
                             trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.set_span_in_context(trace.NonRecordingSpan(root))


def job_posted(job_id: str, started_ns: int, attributes: dict[str, Any]) -> None:
    """The `pjudge.job` span of a POST that made (or replayed) job `job_id`, from `started_ns`
    (time.time_ns() when the request came in) to now."""
    found = tracer()
    if found is None:
        return
    span = found.start_span("pjudge.job", context=_job_context(job_id), start_time=started_ns,
                            attributes={"pjudge.job_id": job_id, **attributes})
    span.end()


@contextlib.contextmanager
def batch_span(job_id: str, label: str) -> Iterator[None]:
    """The current span while a batch runs: `pjudge.batch`, a child of its job's root."""
    found = tracer()
    if found is None:
        yield
        return
    with found.start_as_current_span("pjudge.batch", context=_job_context(job_id),
                                     attributes={"pjudge.job_id": job_id, "pjudge.batch": label}):
        yield


class TracedProvider:
    """A provider whose every request is a `pjudge.call` span (child of the current batch)."""

    def __init__(self, inner: Provider, tracer: Tracer):
        self.inner, self._tracer = inner, tracer
        self.name = inner.name

    async def complete(self, request: CallRequest) -> CallResult:
        attributes: dict[str, str | int] = {"pjudge.item_id": request.item_id, "pjudge.order": request.order,
                      "pjudge.sample": request.sample, "pjudge.attempt": request.attempt,
                      "gen_ai.request.model": request.model, "gen_ai.system": self.name}
        with self._tracer.start_as_current_span("pjudge.call", attributes=attributes) as span:
            result = await self.inner.complete(request)
            if result.input_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", result.input_tokens)
            if result.output_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", result.output_tokens)
            return result

    async def aclose(self) -> None:
        await self.inner.aclose()


def traced(provider: Provider) -> Provider:
    """`provider` with call spans when tracing is on; else itself."""
    found = tracer()
    return provider if found is None else TracedProvider(provider, found)
