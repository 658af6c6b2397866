"""A Python client of the HTTP API (SPEC 8): `Client` and `AsyncClient`, for training pipelines.

Importing it loads no Flask: only httpx2 (the HTTP client the openai and anthropic SDKs use),
pydantic and the API's own schemas (api.schemas), so the responses are the models the server
validates against and documents in /v1/openapi.json.

Every POST carries an Idempotency-Key (a fresh uuid4 unless the caller gives one), the same one on
each retry, so a retry after a lost connection never makes a second job. 429, 5xx and connection
errors are retried with exponential backoff, waiting the server's Retry-After where it gives one.
Every failure is one exception type, `ApiCallError`, carrying the server's
{"error": {code, message, details}} and the HTTP status.

What a call does is written once, as steps that yield requests and waits and are sent back the
responses ("sans-IO"); Client and AsyncClient are two thin drivers of the same steps.

    with Client("http://127.0.0.1:8000", key) as client:
        job = client.submit(items, profile="persona-certainty")
        job.wait()
        verdicts = list(job.verdicts())
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import io
import json
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, Literal, TypeVar, overload

import httpx2
from pydantic import BaseModel

from api.schemas import (
    CancelOut,
    DeliveryOut,
    DeliveryPage,
    DpoLine,
    ErrorDetail,
    EstimateOut,
    JobAccepted,
    JobOut,
    LabelsOut,
    QueueEntry,
    QueuePage,
    Report,
    VerdictPage,
    WebhookEventOut,
    WebhookSecretOut,
)
from judge.records import Label, PairItem, Verdict

if TYPE_CHECKING:  # rich is imported when a bar is shown; datasets when a Dataset is asked for
    from datasets import Dataset
    from rich.progress import Progress

__all__ = ["ApiCallError", "AsyncClient", "AsyncJob", "Client", "Job", "Retry", "TERMINAL"]

_R = TypeVar("_R")  # what a call's steps come to
_M = TypeVar("_M", bound=BaseModel)
_Page = TypeVar("_Page", VerdictPage, QueuePage, DeliveryPage)

TERMINAL = ("done", "failed", "cancelled", "budget_exhausted")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PAGE = 1000  # verdicts and queue entries asked for per page (the server's maximum)
# submit: items up to this many (and this many bytes of JSON) go in one POST /v1/jobs; more go to a
# staged job a page of this size at a time (POST /v1/jobs/{id}/items, then /start).
PAGE_ITEMS = 5000
PAGE_BYTES = 8 * 1024 * 1024

Items = Iterable[PairItem | Mapping[str, Any]] | str | Path
Labels = Mapping[str, Label | None] | Iterable[Mapping[str, Any]]
Persona = Literal["raw", "column", "fold"] | None


class ApiCallError(Exception):
    """A call that failed: the server's error document and HTTP status. Status 0 with code
    "connection_error" when the server could not be reached, retries included."""

    def __init__(self, status: int, code: str, message: str, details: Iterable[ErrorDetail] = (),
                 retry_after: float | None = None):
        super().__init__(f"HTTP {status} {code}: {message}" if status else message)
        self.status, self.code, self.message = status, code, message
        self.details = list(details)
        self.retry_after = retry_after

    def describe(self) -> str:
        """The message and the first field problems, one a line (what `pjudge submit` prints)."""
        text = f"HTTP {self.status} {self.code}: {self.message}"
        extra = [f"  {d.field or '-'}: {d.message}" for d in self.details[1:6]]
        return "\n".join([text, *extra])


@dataclass(frozen=True)
class Retry:
    """How failed calls are retried: `attempts` retries after the first try, waiting
    backoff_s * 2**n (at most max_backoff_s), or the server's Retry-After when it gives one. A
    Retry-After longer than max_retry_after_s (a daily quota used up) is raised at once."""

    attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 120.0

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `attempt` (from 1), or None to give up."""
        if attempt > self.attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))


# ---------------------------------------------------------------- request and response documents

def item_documents(items: Items) -> list[dict[str, Any]]:
    """Pair items as the API takes them: PairItems, mappings, or a JSONL file's path."""
    if isinstance(items, str | Path):
        from judge.jsonl import read_items

        items = read_items(Path(items))
    return [item.model_dump(mode="json", exclude_none=True) if isinstance(item, PairItem) else dict(item)
            for item in items]


def profile_document(profile: str | Mapping[str, Any] | BaseModel | None) -> Any:
    """A profile's name, or an object of the fields the caller set (ProfileOverrides, CascadeIn or a dict)."""
    if isinstance(profile, BaseModel):
        return profile.model_dump(mode="json", exclude_unset=True)
    return dict(profile) if isinstance(profile, Mapping) else profile


def label_documents(labels: Labels) -> list[dict[str, Any]]:
    if isinstance(labels, Mapping):
        return [{"id": item_id, "human_label": label} for item_id, label in labels.items()]
    return [dict(label) for label in labels]


def _query(options: Mapping[str, Any]) -> dict[str, str]:
    """Query parameters: None dropped, datetimes as ISO 8601, the rest as text."""
    query = {}
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        query[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return query


def _retry_after(response: httpx2.Response) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error(response: httpx2.Response) -> ApiCallError:
    status = response.status_code
    retry_after = _retry_after(response)
    try:
        error = response.json()["error"]
        details = [ErrorDetail.model_validate(d) for d in error.get("details") or []]
        failure = ApiCallError(status, str(error["code"]), str(error["message"]), details, retry_after)
    except (ValueError, KeyError, TypeError, AttributeError):  # not the API's error shape (a proxy's page)
        text = response.text[:200] or response.reason_phrase or "no body"
        failure = ApiCallError(status, "http_error", text, (), retry_after)
    if status == 413:
        failure.message += (" — a job is sent as one request body, which this server bounds by PJUDGE_MAX_BODY_MB "
                            "(and a job's stored items by PJUDGE_MAX_JOB_MB): split the job")
        failure.args = (f"HTTP 413 {failure.code}: {failure.message}",)
    return failure


def _unreachable(base: str, exc: Exception) -> ApiCallError:
    from judge.settings import shown_url  # never a password given in the URL

    return ApiCallError(0, "connection_error", f"cannot reach {shown_url(base)}: {str(exc) or type(exc).__name__}")


def _next_wait(retry: Retry, attempt: int, base: str, outcome: httpx2.Response | Exception) -> float:
    """The wait before retry `attempt` after a failed response or a transport error, or the error
    to raise when the call is not retried."""
    if isinstance(outcome, Exception):
        wait = retry.delay(attempt, None)
        if wait is None:
            raise _unreachable(base, outcome) from None
        return wait
    wait = retry.delay(attempt, _retry_after(outcome)) if outcome.status_code in RETRY_STATUSES else None
    if wait is None:
        raise _error(outcome)
    return wait


def _http_options(url: str, key: str, timeout: float) -> dict[str, Any]:
    """httpx2.Client's and AsyncClient's settings. The key goes only into the Authorization header:
    never into messages or repr."""
    return {"base_url": url, "timeout": timeout,
            "headers": {"Authorization": f"Bearer {key}", "Accept": "application/json"}}


def _headers(method: str, idempotency_key: str | None, body: bytes | None) -> dict[str, str]:
    headers = {}
    if method == "POST":
        headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
    if body is not None:
        headers["Content-Type"] = "application/json"
    return headers


def _encode(document: Any) -> bytes | None:
    return None if document is None else json.dumps(document, ensure_ascii=False).encode("utf-8")


def _submit_body(items: Items, profile: Any, labels: Labels | None, max_cost_usd: float | None,
                 webhook_url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"items": item_documents(items), "profile": profile_document(profile)}
    if labels is not None:
        body["labels"] = label_documents(labels)
    return body | _job_options(max_cost_usd, webhook_url)


def _job_options(max_cost_usd: float | None, webhook_url: str | None) -> dict[str, Any]:
    """The optional fields of a job's POST that every way of submitting it carries."""
    options: dict[str, Any] = {}
    if max_cost_usd is not None:
        options["max_cost_usd"] = max_cost_usd
    if webhook_url is not None:
        options["webhook_url"] = webhook_url
    return options


def _export_query(persona: Persona, conversational: bool, min_certainty: float | None, consistent_only: bool,
                  parquet: bool = False) -> dict[str, str]:
    """GET /v1/jobs/{id}/export's parameters (judge.exports says what each does)."""
    return _query({"format": "dpo", "as": "parquet" if parquet else None, "persona": persona,
                   "conversational": conversational or None, "min_certainty": min_certainty,
                   "consistent_only": consistent_only or None})


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _dataset(parquet: bytes) -> Dataset:
    """A Parquet export as a datasets.Dataset (in memory), or an ImportError saying what to install."""
    try:
        import datasets
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("a Dataset needs the `datasets` package: pip install 'persona-judge[datasets]' "
                          f"({exc})") from exc
    return datasets.Dataset(pq.read_table(io.BytesIO(parquet)))


class _Replace:
    """A file written beside `path` and moved onto it only when complete (no half export left behind)."""

    def __init__(self, path: Path):
        self.path = path
        descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        self.temporary = Path(name)
        self.file = os.fdopen(descriptor, "wb")

    def __enter__(self) -> BinaryIO:
        return self.file

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.file.close()
        if kind is None:
            self.temporary.replace(self.path)
        else:
            self.temporary.unlink(missing_ok=True)


def _document(item: PairItem | Mapping[str, Any]) -> dict[str, Any]:
    return item.model_dump(mode="json", exclude_none=True) if isinstance(item, PairItem) else dict(item)


class _Pages:
    """A submit's items read lazily into pages of at most `page_items` items and `page_bytes` of
    JSON: `first` is the first page; `more` whether any item follows it. Only one page is held at a
    time, so an iterable of any size (a generator) is never held whole. `labels` (a staged job's:
    the server takes none with it) are folded into the items they name as they pass."""

    def __init__(self, items: Items, page_items: int, page_bytes: int):
        if isinstance(items, str | Path):
            from judge.jsonl import read_items

            items = read_items(Path(items))  # validated locally (file, line, field) before any request
        self._items = iter(items)
        self.page_items, self.page_bytes = max(1, page_items), page_bytes
        self._next: dict[str, Any] | None = None
        self.labels: dict[str, Label | None] | None = None
        self.first = self._take()
        self.more = self._peek()

    def _peek(self) -> bool:
        if self._next is None:
            item = next(self._items, None)
            self._next = None if item is None else _document(item)
        return self._next is not None

    def _take(self) -> list[dict[str, Any]]:
        page: list[dict[str, Any]] = []
        size = 0
        while len(page) < self.page_items and self._peek():
            document, self._next = self._next, None
            assert document is not None
            size += len(json.dumps(document, ensure_ascii=False).encode("utf-8")) + 1
            page.append(document)
            if size >= self.page_bytes:
                break
        return page

    def with_labels(self, labels: Labels) -> None:
        self.labels = {str(d["id"]): d.get("human_label") for d in label_documents(labels)}

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        """Every page, the first included; ValueError at the end for labels of ids no item had."""
        page = self.first
        while page:
            if self.labels is not None:
                for document in page:
                    if document.get("id") in self.labels:
                        document["human_label"] = self.labels.pop(document["id"])
            yield page
            page = self._take()
        if self.labels:
            shown = ", ".join(repr(i[:100]) for i in list(self.labels)[:10])
            raise ValueError(f"labels name {len(self.labels)} id(s) no item has: {shown}")


def _page_key(key: str, what: str) -> str:
    """The Idempotency-Key of one request of a staged submit under `key`: the same on every try
    and every resubmission with the same key (at most 255 characters, as the server takes)."""
    if len(key) > 200:
        key = hashlib.sha256(key.encode()).hexdigest()
    return f"{key}/{what}"


def _staged_body(profile: Any, max_cost_usd: float | None, webhook_url: str | None,
                 start_early: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"profile": profile_document(profile), "staged": True}
    if start_early:
        body["start_early"] = True
    return body | _job_options(max_cost_usd, webhook_url)


class _Bar:
    """The rich progress bar of `pjudge submit --wait` (on stderr), or nothing."""

    def __init__(self, show: bool):
        self.progress: Progress | None = None
        if show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("[bold]{task.fields[status]}[/bold]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("verdicts"), TextColumn("{task.fields[failed]} failed, ${task.fields[cost]:.4f}"),
                TimeElapsedColumn(), console=Console(stderr=True), transient=False)
        self.task: Any = None

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)

    def update(self, job: JobOut) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task("job", total=job.counts.items, status=job.status, failed=0, cost=0.0)
        self.progress.update(self.task, completed=job.counts.verdicts, total=job.counts.items, status=job.status,
                             failed=job.counts.failed_items, cost=job.cost_usd)


# ---------------------------------------------------------------- the steps of a call (sans-IO)
#
# What each call does is written once, as a generator of steps: it yields what it needs carried out
# (a request, a wait, items for the caller) and is sent back what came of it. Every decision lives
# there: tries and their waits (Retry-After), idempotency keys, cursors, a staged submit's pages, the
# wait loop, parsing into api.schemas. Client and AsyncClient only carry steps out (_send, _carry),
# one with httpx2.Client and time.sleep, the other with httpx2.AsyncClient and asyncio.sleep.

@dataclass(frozen=True)
class _Call:
    """A request; sent back: its successful response (tried again as the client's Retry says)."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, str] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class _Stream:
    """A GET whose response goes out as it arrives, `each` (a parse, a write) of every non-empty line
    (`lines`) or chunk of bytes. Tried again until its first piece only: a retry would repeat pieces."""

    path: str
    params: Mapping[str, str]
    lines: bool
    each: Callable[[Any], Any]


@dataclass(frozen=True)
class _Hand:
    """Items for the caller (a page of them)."""

    items: Sequence[Any]


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Send:
    """One try of a request (what _tried makes of a _Call or _Stream); sent back: the response (its
    body read, unless `stream` and successful) or the httpx2.TransportError that stopped it."""

    method: str
    path: str
    content: bytes | None
    params: Mapping[str, str] | None
    headers: Mapping[str, str]
    stream: bool = False


@dataclass(frozen=True)
class _Pour:
    """An open response's pieces handed out as `of` says; sent back: None once all went, or the
    httpx2.TransportError that cut it short and whether a piece had gone. The response is closed."""

    response: httpx2.Response
    of: _Stream


_Step = _Call | _Stream | _Hand | _Sleep | _Send | _Pour
_Steps = Generator[_Step, Any, _R]


class _Exchange(Generic[_R]):
    """Steps as an iterator of what they ask for: `reply` (what came of the last one) or `error`
    (what went wrong carrying it out, raised where the steps are) goes in with the next; `result`
    is their value once they end."""

    def __init__(self, steps: _Steps[_R]):
        self.steps = steps
        self.reply: Any = None
        self.error: BaseException | None = None
        self.result: _R

    def __iter__(self) -> _Exchange[_R]:
        return self

    def __next__(self) -> _Step:
        reply, error, self.reply, self.error = self.reply, self.error, None, None
        try:
            return self.steps.send(reply) if error is None else self.steps.throw(error)
        except StopIteration as stop:
            self.result = stop.value
            raise StopIteration from None


def _tried(steps: _Steps[_R], retry: Retry, base: str) -> _Steps[_R]:
    """`steps` with each _Call and _Stream as its tries (_Send, _Pour) and the waits between them."""
    run = _Exchange(steps)
    for step in run:
        try:
            if isinstance(step, _Call):
                content = _encode(step.body)  # one Idempotency-Key for every try
                send = _Send(step.method, step.path, content, step.params,
                             _headers(step.method, step.idempotency_key, content))
                run.reply = yield from _tries(send, retry, base)
            elif isinstance(step, _Stream):
                send = _Send("GET", step.path, None, step.params, {}, stream=True)
                run.reply = yield from _tries(send, retry, base, step)
            else:
                run.reply = yield step
        except BaseException as exc:  # raised in the steps, where it happened (their with-blocks close)
            run.error = exc
    return run.result


def _tries(send: _Send, retry: Retry, base: str, stream: _Stream | None = None) -> _Steps[Any]:
    """A request's tries until a successful response (with `stream`: until its pieces went out);
    ApiCallError when a failure is not tried again."""
    attempt = 0
    while True:
        attempt += 1
        reply = yield send
        if isinstance(reply, httpx2.Response) and reply.is_success:
            if stream is None:
                return reply
            cut = yield _Pour(reply, stream)
            if cut is None:
                return None
            reply, started = cut
            if started:  # pieces went out: a retry would repeat them
                raise _unreachable(base, reply) from None
        yield _Sleep(_next_wait(retry, attempt, base, reply))


# ---------------------------------------------------------------- what each call does, as steps

def _respond(call: _Call) -> _Steps[httpx2.Response]:
    response: httpx2.Response = yield call
    return response


def _fetch(model: type[_M], method: str, path: str, body: Any = None, *,
           params: Mapping[str, str] | None = None, idempotency_key: str | None = None) -> _Steps[_M]:
    """One call's response as the API's schema `model`."""
    response = yield _Call(method, path, body, params, idempotency_key)
    return model.model_validate(response.json())


def _every_page(path: str, page_size: int, model: type[_Page],
                items: Callable[[_Page], Sequence[Any]]) -> _Steps[None]:
    """Every page's items, following next_cursor (the keyset cursor) to the last page."""
    cursor: str | None = None
    while True:
        page = yield from _fetch(model, "GET", path, params=_query({"limit": page_size, "cursor": cursor}))
        yield _Hand(items(page))
        cursor = page.next_cursor
        if cursor is None:
            return


def _replayed(response: httpx2.Response) -> bool:
    return response.headers.get("Idempotent-Replayed") == "true"


def _submit(items: Items, profile: str | Mapping[str, Any] | BaseModel | None, labels: Labels | None,
            max_cost_usd: float | None, idempotency_key: str | None, page_items: int, start_early: bool,
            webhook_url: str | None) -> _Steps[tuple[str, JobAccepted, bool]]:
    """Client.submit: the job's id, its POST's answer, and whether the key had already made it."""
    key = idempotency_key or str(uuid.uuid4())
    cut = _Pages(items, page_items, PAGE_BYTES)
    if not cut.more:
        body = _submit_body(cut.first, profile, labels, max_cost_usd, webhook_url)
        response = yield _Call("POST", "/v1/jobs", body, idempotency_key=key)
        accepted = JobAccepted.model_validate(response.json())
        return accepted.job_id, accepted, _replayed(response)
    if labels is not None:
        cut.with_labels(labels)
    response = yield _Call("POST", "/v1/jobs", _staged_body(profile, max_cost_usd, webhook_url, start_early),
                           idempotency_key=key)
    job_id = JobAccepted.model_validate(response.json()).job_id
    for number, page in enumerate(cut.pages()):
        yield _Call("POST", f"/v1/jobs/{job_id}/items", {"items": page},
                    idempotency_key=_page_key(key, f"items/{number}"))
    started = yield from _fetch(JobAccepted, "POST", f"/v1/jobs/{job_id}/start",
                                idempotency_key=_page_key(key, "start"))
    return job_id, started, _replayed(response)


def _estimate(items: Items, profile: str | Mapping[str, Any] | BaseModel | None) -> _Steps[EstimateOut]:
    return _fetch(EstimateOut, "POST", "/v1/jobs/estimate", {"items": item_documents(items),
                                                              "profile": profile_document(profile)})


def _stats(filters: Mapping[str, Any]) -> _Steps[Report]:
    return _fetch(Report, "GET", "/v1/stats/agreement", params=_query(filters))


def _webhook_secret() -> _Steps[str]:
    return (yield from _fetch(WebhookSecretOut, "GET", "/v1/webhook-secret")).secret


def _status(job_id: str) -> _Steps[JobOut]:
    return _fetch(JobOut, "GET", f"/v1/jobs/{job_id}")


def _wait(job_id: str, progress: bool, poll: float, timeout: float | None) -> _Steps[JobOut]:
    """Job.wait: the status every `poll` seconds until it is terminal, shown on the bar."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = yield from _status(job_id)
    with _Bar(progress) as bar:
        while True:
            bar.update(job)
            if job.status in TERMINAL:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            yield _Sleep(poll)
            job = yield from _status(job_id)


def _verdicts(job_id: str, page_size: int, stream: bool) -> _Steps[None]:
    if stream:
        yield _Stream(f"/v1/jobs/{job_id}/verdicts.jsonl", {}, True, Verdict.model_validate_json)
        return
    yield from _every_page(f"/v1/jobs/{job_id}/verdicts", page_size, VerdictPage, lambda page: page.verdicts)


def _labels(job_id: str, labels: Labels) -> _Steps[LabelsOut]:
    return _fetch(LabelsOut, "POST", f"/v1/jobs/{job_id}/labels", label_documents(labels))


def _report(job_id: str, options: Mapping[str, Any]) -> _Steps[Report]:
    return _fetch(Report, "GET", f"/v1/jobs/{job_id}/report", params=_query(options))


def _queue(job_id: str, page_size: int) -> _Steps[None]:
    return _every_page(f"/v1/jobs/{job_id}/queue", page_size, QueuePage, lambda page: page.items)


def _cancel(job_id: str) -> _Steps[CancelOut]:
    return _fetch(CancelOut, "POST", f"/v1/jobs/{job_id}/cancel")


def _deliveries(job_id: str, page_size: int) -> _Steps[None]:
    return _every_page(f"/v1/jobs/{job_id}/deliveries", page_size, DeliveryPage, lambda page: page.deliveries)


def _webhook_event(job_id: str) -> _Steps[WebhookEventOut | None]:
    page = yield from _fetch(DeliveryPage, "GET", f"/v1/jobs/{job_id}/deliveries", params={"limit": "1"})
    return page.event


def _dpo_lines(job_id: str, persona: Persona, conversational: bool, min_certainty: float | None,
               consistent_only: bool) -> _Steps[None]:
    params = _export_query(persona, conversational, min_certainty, consistent_only)
    yield _Stream(f"/v1/jobs/{job_id}/export", params, True, DpoLine.model_validate_json)


def _save_dpo(job_id: str, path: str | Path, persona: Persona, conversational: bool,
              min_certainty: float | None, consistent_only: bool) -> _Steps[Path]:
    """Job.save_dpo: the export's bytes into a file beside `path`, moved onto it once complete."""
    path = Path(path)
    params = _export_query(persona, conversational, min_certainty, consistent_only, _is_parquet(path))
    with _Replace(path) as file:
        yield _Stream(f"/v1/jobs/{job_id}/export", params, False, file.write)
    return path


def _dpo_dataset(job_id: str, persona: Persona, conversational: bool, min_certainty: float | None,
                 consistent_only: bool) -> _Steps[Dataset]:
    params = _export_query(persona, conversational, min_certainty, consistent_only, parquet=True)
    parts: list[bytes] = []
    yield _Stream(f"/v1/jobs/{job_id}/export", params, False, parts.append)
    return _dataset(b"".join(parts))


# ---------------------------------------------------------------- synchronous

class Client:
    """The API at `url` with key `key`. A context manager (closes its connections); thread-safe as
    httpx2.Client is. `transport` is httpx2's, for tests."""

    def __init__(self, url: str, key: str, *, timeout: float = 120.0, retry: Retry | None = None,
                 transport: httpx2.BaseTransport | None = None):
        self.url, self.retry = url.rstrip("/"), retry or Retry()
        self._http = httpx2.Client(transport=transport, **_http_options(self.url, key, timeout))

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, send: _Send) -> httpx2.Response | httpx2.TransportError:
        """One try: the response (a failed stream's body read, and closed), or the transport error."""
        try:
            request = self._http.build_request(send.method, send.path, content=send.content,
                                               params=send.params, headers=send.headers)
            response = self._http.send(request, stream=send.stream)
            if send.stream and not response.is_success:
                try:
                    response.read()
                finally:
                    response.close()
        except httpx2.TransportError as exc:
            return exc
        return response

    def _carry(self, run: _Exchange[Any]) -> Iterator[Any]:
        """Carries out the tries and waits of `run`, handing on what its steps hand out."""
        for step in run:
            try:
                if isinstance(step, _Hand):
                    yield from step.items
                elif isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                elif isinstance(step, _Send):
                    run.reply = self._send(step)
                else:
                    assert isinstance(step, _Pour), step
                    started, stream = False, step.of
                    try:
                        pieces: Iterator[str] | Iterator[bytes] = (
                            step.response.iter_lines() if stream.lines else step.response.iter_bytes())
                        for piece in pieces:
                            if piece or not stream.lines:  # an empty line is no row
                                started = True
                                yield stream.each(piece)
                    except httpx2.TransportError as exc:
                        run.reply = exc, started
                    finally:
                        step.response.close()
            except BaseException as exc:  # raised in the steps, where it happened (their with-blocks close)
                run.error = exc

    def _run(self, steps: _Steps[_R]) -> _R:
        run = _Exchange(_tried(steps, self.retry, self.url))
        for _ in self._carry(run):
            pass  # a save's pieces went into its file
        return run.result

    def _iterate(self, steps: _Steps[None]) -> Iterator[Any]:
        return self._carry(_Exchange(_tried(steps, self.retry, self.url)))

    def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
                idempotency_key: str | None = None) -> httpx2.Response:
        """One call, retried; a POST carries `idempotency_key` (generated when None) on every try."""
        return self._run(_respond(_Call(method, path, body, params, idempotency_key)))

    def submit(self, items: Items, profile: str | Mapping[str, Any] | BaseModel | None = "persona-certainty", *,
               labels: Labels | None = None, max_cost_usd: float | None = None,
               idempotency_key: str | None = None, page_items: int = PAGE_ITEMS, start_early: bool = False,
               webhook_url: str | None = None) -> Job:
        """The items (PairItems, dicts, or a JSONL path; any iterable, a generator of millions
        included) as one job; its handle. Up to `page_items` items (and PAGE_BYTES of JSON) go in
        one POST /v1/jobs; more make a staged job filled a page at a time, then started (with
        `start_early`, judged from its first page on). The same `idempotency_key` again returns the
        same job (`job.replayed`), every page of a staged job included: a submit cut short can be
        sent again with its key and resumes."""
        return Job(self, *self._run(_submit(items, profile, labels, max_cost_usd, idempotency_key, page_items,
                                            start_early, webhook_url)))

    def job(self, job_id: str) -> Job:
        """The handle of an existing job."""
        return Job(self, job_id)

    def estimate(self, items: Items, profile: str | Mapping[str, Any] | BaseModel | None = "persona-certainty",
                 ) -> EstimateOut:
        """POST /v1/jobs/estimate: calls, tokens and cost, nothing run."""
        return self._run(_estimate(items, profile))

    def stats(self, **filters: Any) -> Report:
        """GET /v1/stats/agreement over the key's jobs: profile, model, since, until (datetimes or
        ISO text), group_by, threshold, hitl, target_accuracy, delta."""
        return self._run(_stats(filters))

    def webhook_secret(self) -> str:
        """The key's webhook signing secret (whsec_...): standardwebhooks.Webhook(secret).verify(...)."""
        return self._run(_webhook_secret())


class Job:
    """A job on the server. `accepted` is the POST's answer (None for `Client.job`); `replayed`:
    the idempotency key had already made this job."""

    def __init__(self, client: Client, job_id: str, accepted: JobAccepted | None = None, replayed: bool = False):
        self.client, self.id, self.accepted, self.replayed = client, job_id, accepted, replayed

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobOut:
        return self.client._run(_status(self.id))

    def wait(self, progress: bool = True, poll: float = 1.0, timeout: float | None = None) -> JobOut:
        """Poll until the job ends (done, failed, cancelled, budget_exhausted), with a progress bar
        on stderr unless `progress` is false; TimeoutError after `timeout` seconds."""
        return self.client._run(_wait(self.id, progress, poll, timeout))

    def verdicts(self, page_size: int = PAGE, stream: bool = False) -> Iterator[Verdict]:
        """Every verdict, in input order, a page at a time (the keyset cursor); with `stream`, as
        one response (GET /v1/jobs/{id}/verdicts.jsonl: fastest for a large job, but a connection
        lost midway raises rather than resumes)."""
        return self.client._iterate(_verdicts(self.id, page_size, stream))

    def labels(self, labels: Labels) -> LabelsOut:
        """POST human labels: {item id: "A" | "B" | "tie" | None} or [{id, human_label}]."""
        return self.client._run(_labels(self.id, labels))

    def report(self, **options: Any) -> Report:
        """The SPEC 4 statistics: threshold, hitl, group_by, target_accuracy, delta."""
        return self.client._run(_report(self.id, options))

    def queue(self, page_size: int = PAGE) -> Iterator[QueueEntry]:
        """The items waiting for a human label, highest BPDE first, every page."""
        return self.client._iterate(_queue(self.id, page_size))

    def cancel(self) -> CancelOut:
        return self.client._run(_cancel(self.id))

    def webhook_event(self) -> WebhookEventOut | None:
        """The job's webhook event (status, type, attempts), None when it has no webhook_url."""
        return self.client._run(_webhook_event(self.id))

    def deliveries(self, page_size: int = PAGE) -> Iterator[DeliveryOut]:
        """Every delivery attempt of the job's webhook event, oldest first."""
        return self.client._iterate(_deliveries(self.id, page_size))

    @overload
    def export_dpo(self, *, persona: Persona = None, conversational: bool = False,
                   min_certainty: float | None = None, consistent_only: bool = False,
                   as_dataset: Literal[False] = False, path: None = None) -> Iterator[DpoLine]: ...
    @overload
    def export_dpo(self, *, persona: Persona = None, conversational: bool = False,
                   min_certainty: float | None = None, consistent_only: bool = False,
                   as_dataset: Literal[True], path: None = None) -> Dataset: ...
    @overload
    def export_dpo(self, *, persona: Persona = None, conversational: bool = False,
                   min_certainty: float | None = None, consistent_only: bool = False,
                   as_dataset: Literal[False] = False, path: str | Path) -> Path: ...
    def export_dpo(self, *, persona: Persona = None, conversational: bool = False,
                   min_certainty: float | None = None, consistent_only: bool = False,
                   as_dataset: bool = False, path: str | Path | None = None) -> Iterator[DpoLine] | Dataset | Path:
        """The preference rows (prompt/chosen/rejected, with id, winner, p_a, certainty, consistent and
        judge) of the decided, non-abstained verdicts that pass the filters: as they stream; with
        `as_dataset`, a datasets.Dataset (`to_dataset`); with `path`, written there (`save_dpo`).
        persona: "raw" (as stored; the default of JSON Lines), "column" (text; the default of
        Parquet and Datasets) or "fold" (into the prompt); `conversational`: TRL's messages format."""
        if as_dataset:
            return self.to_dataset(persona=persona, conversational=conversational, min_certainty=min_certainty,
                                   consistent_only=consistent_only)
        if path is not None:
            return self.save_dpo(path, persona=persona, conversational=conversational, min_certainty=min_certainty,
                                 consistent_only=consistent_only)
        lines = _dpo_lines(self.id, persona, conversational, min_certainty, consistent_only)
        return self.client._iterate(lines)

    def save_dpo(self, path: str | Path, *, persona: Persona = None, conversational: bool = False,
                 min_certainty: float | None = None, consistent_only: bool = False) -> Path:
        """The export written to `path` as it streams: Parquet for a .parquet name, else JSON Lines.
        The file appears only once complete."""
        return self.client._run(_save_dpo(self.id, path, persona, conversational, min_certainty,
                                          consistent_only))

    def to_dataset(self, *, persona: Persona = None, conversational: bool = False,
                   min_certainty: float | None = None, consistent_only: bool = False) -> Dataset:
        """The export as a datasets.Dataset (read from its Parquet form; needs the `datasets` extra)."""
        return self.client._run(_dpo_dataset(self.id, persona, conversational, min_certainty,
                                             consistent_only))


# ---------------------------------------------------------------- asynchronous

class AsyncClient:
    """`Client` for asyncio (a notebook's running loop included): the same calls, awaited."""

    def __init__(self, url: str, key: str, *, timeout: float = 120.0, retry: Retry | None = None,
                 transport: httpx2.AsyncBaseTransport | None = None):
        self.url, self.retry = url.rstrip("/"), retry or Retry()
        self._http = httpx2.AsyncClient(transport=transport, **_http_options(self.url, key, timeout))

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, send: _Send) -> httpx2.Response | httpx2.TransportError:
        """`Client._send`, awaited."""
        try:
            request = self._http.build_request(send.method, send.path, content=send.content,
                                               params=send.params, headers=send.headers)
            response = await self._http.send(request, stream=send.stream)
            if send.stream and not response.is_success:
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx2.TransportError as exc:
            return exc
        return response

    async def _carry(self, run: _Exchange[Any]) -> AsyncIterator[Any]:
        """`Client._carry`, awaited."""
        for step in run:
            try:
                if isinstance(step, _Hand):
                    for item in step.items:
                        yield item
                elif isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, _Send):
                    run.reply = await self._send(step)
                else:
                    assert isinstance(step, _Pour), step
                    started, stream = False, step.of
                    try:
                        pieces: AsyncIterator[str] | AsyncIterator[bytes] = (
                            step.response.aiter_lines() if stream.lines else step.response.aiter_bytes())
                        async for piece in pieces:
                            if piece or not stream.lines:
                                started = True
                                yield stream.each(piece)
                    except httpx2.TransportError as exc:
                        run.reply = exc, started
                    finally:
                        await step.response.aclose()
            except BaseException as exc:  # raised in the steps, where it happened (their with-blocks close)
                run.error = exc

    async def _run(self, steps: _Steps[_R]) -> _R:
        run = _Exchange(_tried(steps, self.retry, self.url))
        async for _ in self._carry(run):
            pass  # a save's pieces went into its file
        return run.result

    def _iterate(self, steps: _Steps[None]) -> AsyncIterator[Any]:
        return self._carry(_Exchange(_tried(steps, self.retry, self.url)))

    async def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
                      idempotency_key: str | None = None) -> httpx2.Response:
        return await self._run(_respond(_Call(method, path, body, params, idempotency_key)))

    async def submit(self, items: Items, profile: str | Mapping[str, Any] | BaseModel | None = "persona-certainty",
                     *, labels: Labels | None = None, max_cost_usd: float | None = None,
                     idempotency_key: str | None = None, page_items: int = PAGE_ITEMS,
                     start_early: bool = False, webhook_url: str | None = None) -> AsyncJob:
        """`Client.submit`: one POST, or a staged job filled a page at a time."""
        return AsyncJob(self, *await self._run(_submit(items, profile, labels, max_cost_usd, idempotency_key,
                                                       page_items, start_early, webhook_url)))

    def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, job_id)

    async def estimate(self, items: Items,
                       profile: str | Mapping[str, Any] | BaseModel | None = "persona-certainty") -> EstimateOut:
        return await self._run(_estimate(items, profile))

    async def stats(self, **filters: Any) -> Report:
        return await self._run(_stats(filters))

    async def webhook_secret(self) -> str:
        return await self._run(_webhook_secret())


class AsyncJob:
    """`Job` for asyncio: verdicts(), queue() and export_dpo() are async iterators."""

    def __init__(self, client: AsyncClient, job_id: str, accepted: JobAccepted | None = None,
                 replayed: bool = False):
        self.client, self.id, self.accepted, self.replayed = client, job_id, accepted, replayed

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"

    async def status(self) -> JobOut:
        return await self.client._run(_status(self.id))

    async def wait(self, progress: bool = True, poll: float = 1.0, timeout: float | None = None) -> JobOut:
        return await self.client._run(_wait(self.id, progress, poll, timeout))

    def verdicts(self, page_size: int = PAGE, stream: bool = False) -> AsyncIterator[Verdict]:
        return self.client._iterate(_verdicts(self.id, page_size, stream))

    async def labels(self, labels: Labels) -> LabelsOut:
        return await self.client._run(_labels(self.id, labels))

    async def report(self, **options: Any) -> Report:
        return await self.client._run(_report(self.id, options))

    def queue(self, page_size: int = PAGE) -> AsyncIterator[QueueEntry]:
        return self.client._iterate(_queue(self.id, page_size))

    async def cancel(self) -> CancelOut:
        return await self.client._run(_cancel(self.id))

    async def webhook_event(self) -> WebhookEventOut | None:
        return await self.client._run(_webhook_event(self.id))

    def deliveries(self, page_size: int = PAGE) -> AsyncIterator[DeliveryOut]:
        return self.client._iterate(_deliveries(self.id, page_size))

    def export_dpo(self, *, persona: Persona = None, conversational: bool = False,
                   min_certainty: float | None = None, consistent_only: bool = False) -> AsyncIterator[DpoLine]:
        """Job.export_dpo's rows as they stream (`save_dpo` and `to_dataset` for a file or a Dataset)."""
        lines = _dpo_lines(self.id, persona, conversational, min_certainty, consistent_only)
        return self.client._iterate(lines)

    async def save_dpo(self, path: str | Path, *, persona: Persona = None, conversational: bool = False,
                       min_certainty: float | None = None, consistent_only: bool = False) -> Path:
        return await self.client._run(_save_dpo(self.id, path, persona, conversational, min_certainty,
                                                consistent_only))

    async def to_dataset(self, *, persona: Persona = None, conversational: bool = False,
                         min_certainty: float | None = None, consistent_only: bool = False) -> Dataset:
        return await self.client._run(_dpo_dataset(self.id, persona, conversational, min_certainty,
                                                   consistent_only))
