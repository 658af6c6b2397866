"""Batch mode (profile `mode = "batch"`): the calls of `judge.runner.Judge` sent through a provider's
batch API (judge/providers/batch_api.py) instead of one HTTP call each.

Everything is a function of what a `BatchStore` holds, so a process that dies at any point
resumes where it was: `tick` (1) polls the store's live batches and stores the answers of those
that ended, by `custom_id`; (2) walks every item's calls as `Judge.call` would (same requests,
same cache keys, same parsing, re-asks after an unparseable answer), reading each request's
answer from the store or the call cache; an item whose calls are all answered gets its verdict
(`Judge.verdict`, exactly as interactive); (3) sends the requests nobody has answered or is
answering as new batches. Whatever depends on an answer comes in a later batch: re-asks, and with
`adaptive` the extra samples (`Judge.next_sample`). A request that failed in a batch (errored,
expired, cancelled) is sent again, up to `max_tries` times; then its call is an error call, as
an interactive call whose retries ran out.

A batch's row is written (with its requests' custom_ids) before anything is sent, its input
file's id as soon as the file is uploaded, and its batch id as soon as it exists. A process that
dies between the provider creating a batch and the store recording its id leaves a row without a
batch id: the next tick finds an OpenAI batch by its input file (`recover`); an Anthropic message
batch has no such handle, so its requests are sent again (that batch is paid for, its answers
unread: a window of one HTTP round trip).

Costs: an answer read from a batch of this store costs the price with the batch discount
(`Price.cost(..., batch=True)`); one read from the call cache costs nothing (cached), as
interactive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from judge.cache import CallCache, cache_key
from judge.providers.base import CallRequest, CallResult, ProviderError
from judge.providers.batch_api import BatchOutcome, BatchProvider, BatchRequest
from judge.records import Call, Order, PairItem, Verdict
from judge.runner import Judge

log = logging.getLogger("pjudge.batch")


@dataclass(frozen=True)
class Answered:
    result: CallResult


@dataclass(frozen=True)
class InFlight:
    pass


@dataclass(frozen=True)
class Failed:
    tries: int
    error: str


RequestState = Answered | InFlight | Failed | None

# A provider batch in one of these states may still answer its requests.
LIVE_BATCH = ("submitting", "live")


def request_state(rows: Iterable[Sequence[Any]]) -> RequestState:
    """What one request's stored rows say, oldest first, each (status, raw, input_tokens,
    output_tokens, truncated_from, error, its batch's status): answered, in flight, failed n
    times, or never sent. The one reading of both stores (judge.batch_sqlite for the CLI,
    worker.provider_batches for the service)."""
    tries, error = 0, ""
    for status, raw, input_tokens, output_tokens, truncated_from, row_error, batch_status in rows:
        if status == "answered":
            return Answered(CallResult(text=raw, input_tokens=input_tokens, output_tokens=output_tokens,
                                       truncated_from=truncated_from))
        if status == "pending" and batch_status in LIVE_BATCH:
            return InFlight()
        if status == "failed":
            tries, error = tries + 1, row_error or "failed"
    return Failed(tries, error) if tries else None


@dataclass(frozen=True)
class Ended:
    """What an ended batch's outcomes say of its requests, by custom_id: each answered (`answered`)
    or failed with the provider's error, "failed" where it gave none, or "no result" where the
    batch brought no outcome for it (`failed`)."""

    answered: dict[str, CallResult]
    failed: dict[str, str]

    @property
    def whole(self) -> dict[str, CallResult]:
        """The answers the call cache keeps: whole ones only (as interactive)."""
        return {custom_id: result for custom_id, result in self.answered.items() if result.truncated_from is None}


def ended(custom_ids: Iterable[str], outcomes: Iterable[BatchOutcome]) -> Ended:
    """The outcomes of a batch whose requests are `custom_ids` (an outcome of no such request is
    ignored; of two outcomes of one request, the first counts). The one reading of both stores'
    `finish`."""
    expected = dict.fromkeys(custom_ids)  # a set in the stores' order
    answered: dict[str, CallResult] = {}
    failed: dict[str, str] = {}
    for outcome in outcomes:
        custom_id = outcome.custom_id
        if custom_id not in expected or custom_id in answered or custom_id in failed:
            continue
        if outcome.result is None:
            failed[custom_id] = outcome.error or "failed"
        else:
            answered[custom_id] = outcome.result
    failed.update((custom_id, "no result") for custom_id in expected
                  if custom_id not in answered and custom_id not in failed)
    return Ended(answered, failed)


@dataclass(frozen=True)
class Planned:
    """One request to send: the item's tag (its position), its cache key and the request."""

    tag: int
    key: str
    request: CallRequest

    @property
    def custom_id(self) -> str:
        # Anthropic allows [A-Za-z0-9_-]{1,64}; the simulator reads the sample from "-s<N>-".
        r = self.request
        return f"i{self.tag}-{r.order}-s{r.sample}-a{r.attempt}"


@dataclass(frozen=True)
class LiveBatch:
    row: int
    batch_id: str | None


class BatchStore(Protocol):
    """What batch mode keeps between ticks (the CLI: a SQLite file; the service: its database)."""

    def state(self, key: str) -> RequestState:
        """A request's state by cache key: answered by one of this store's batches, in a live
        batch, failed so many times, or never sent (None)."""
        ...

    def live(self) -> list[LiveBatch]: ...

    def orphans(self) -> list[tuple[int, str | None]]:
        """Rows left "submitting" by a process that died while sending them: (row, input file id)."""
        ...

    def lost(self, row: int) -> None:
        """An orphan whose batch was never created (or cannot be found): its requests are free
        to be sent again."""
        ...

    def begin(self, provider: str, requests: Sequence[Planned]) -> int:
        """Record a batch about to be sent (its requests' custom_ids and keys); returns its row."""
        ...

    def set_file(self, row: int, input_file_id: str | None) -> None: ...

    def set_batch(self, row: int, batch_id: str) -> None: ...

    def failed(self, row: int, error: str) -> None:
        """The batch could not be sent: its requests count one failed try."""
        ...

    def finish(self, row: int, outcomes: Sequence[BatchOutcome]) -> None:
        """The batch ended: store every answer and error, and the whole answers in the call cache
        too (one transaction); requests missing from the outcomes count one failed try."""
        ...


@dataclass
class TickResult:
    verdicts: list[tuple[int, Verdict]] = field(default_factory=list)
    submitted: int = 0  # requests sent this tick
    waiting: int = 0  # items still waiting for answers
    live_batches: int = 0
    planned: bool = True  # False: nothing ended since the last tick, so nothing was planned


class BatchJudge:
    """Runs `Judge`'s calls through a batch API. `cache`: the call cache, read before sending (the
    store writes the answers batches bring into it)."""

    def __init__(self, judge: Judge, batches: BatchProvider, store: BatchStore, cache: CallCache,
                 max_tries: int = 3):
        self.judge = judge
        self.batches = batches
        self.store = store
        self.cache = cache
        self.max_tries = max(1, max_tries)

    def key(self, request: CallRequest) -> str:
        judge = self.judge
        return cache_key(judge.profile.provider, judge.template.key, request, judge.cache_scope)

    # ------------------------------------------------------------ planning (no I/O but the store)

    def _call(self, item: PairItem, tag: int, order: Order, sample: int) -> Call | Planned | InFlight:
        """The call of (item, order, sample) as far as the answers so far go: `Judge.call`'s
        attempts (judge/attempts.py), fed from the store and the call cache."""
        judge = self.judge
        attempts = judge.attempts(item, order, sample, batch=True)
        while (request := attempts.next()) is not None:
            key = self.key(request)
            state = self.store.state(key)
            cached = False
            if not isinstance(state, Answered):
                hit = self.cache.get(key)
                if hit is not None:
                    state, cached = Answered(hit), True
            if isinstance(state, InFlight):
                return state
            if state is None or (isinstance(state, Failed) and state.tries < self.max_tries):
                return Planned(tag, key, request)
            if isinstance(state, Failed):
                attempts.failed(f"provider: {state.error} ({state.tries} tries)")
            else:
                attempts.answered(judge.capped(state.result), cached)  # cut as interactive answers are
        return attempts.call()

    def plan_item(self, item: PairItem, tag: int) -> Verdict | list[Planned] | InFlight:
        """The item's verdict, or the requests it needs next, or InFlight (answers awaited)."""
        judge = self.judge
        calls: list[Call] = []
        rounds = [range(judge.profile.samples)] if not judge.profile.adaptive else []
        while True:
            if judge.profile.adaptive:
                sample = judge.next_sample(calls)
                if sample is None:
                    break
                samples: Sequence[int] = (sample,)
            elif rounds:
                samples = rounds.pop()
            else:
                break
            needed: list[Planned] = []
            waiting = False
            for order in judge.orders:
                for s in samples:
                    state = self._call(item, tag, order, s)
                    if isinstance(state, Call):
                        calls.append(state)
                    elif isinstance(state, Planned):
                        needed.append(state)
                    else:
                        waiting = True
            if needed:
                return needed
            if waiting:
                return InFlight()
        return judge.verdict(item, judge.in_order(calls))

    # ------------------------------------------------------------ one round

    async def recover(self) -> None:
        """Find the batches of orphaned rows (by their input file: OpenAI); the others are lost."""
        for row, input_file_id in self.store.orphans():
            try:
                batch_id = await self.batches.find(input_file_id) if input_file_id else None
            except ProviderError as exc:
                log.warning("an orphaned batch row could not be looked up (%s); trying again later", exc)
                continue
            if batch_id is None:
                self.store.lost(row)
            else:
                log.info("found provider batch %s, created by a process that died before recording it", batch_id)
                self.store.set_batch(row, batch_id)

    async def poll(self) -> tuple[int, int]:
        """Store the answers of the live batches that ended; returns how many are still live and
        how many ended."""
        await self.recover()
        live = ended = 0
        for batch in self.store.live():
            if batch.batch_id is None:
                continue
            try:
                status = await self.batches.status(batch.batch_id)
                if not status.ended:
                    live += 1
                    continue
                outcomes = await self.batches.results(batch.batch_id)
            except ProviderError as exc:
                log.warning("batch %s: not polled (%s); trying again later", batch.batch_id, exc)
                live += 1
                continue
            self.store.finish(batch.row, outcomes)
            ended += 1
        return live, ended

    async def submit(self, planned: Sequence[Planned]) -> int:
        """Send `planned` as batches within the provider's limits; returns how many were sent."""
        sent = 0
        for chunk in self._chunks(planned):
            row = self.store.begin(self.batches.name, chunk)
            requests = [BatchRequest(p.custom_id, p.request) for p in chunk]
            try:
                file_id = await self.batches.upload(requests)
                self.store.set_file(row, file_id)
                batch_id = await self.batches.create(requests, file_id, {"pjudge_batch": str(row)})
            except ProviderError as exc:
                log.warning("a batch of %d requests was not sent: %s", len(chunk), exc)
                self.store.failed(row, str(exc))
                continue
            self.store.set_batch(row, batch_id)
            sent += len(chunk)
        return sent

    def _chunks(self, planned: Sequence[Planned]) -> list[list[Planned]]:
        chunks: list[list[Planned]] = []
        size = 0
        for p in planned:
            line = self.batches.line_size(BatchRequest(p.custom_id, p.request))
            if not chunks or len(chunks[-1]) >= self.batches.max_requests or size + line > self.batches.max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(p)
            size += line
        return chunks

    async def tick(self, items: Sequence[tuple[int, PairItem]]) -> TickResult:
        """Poll, plan, send: the verdicts of the items whose calls are all answered now. While
        batches are in flight and none ended, nothing changed: no planning (`planned` False)."""
        result = TickResult()
        result.live_batches, ended = await self.poll()
        if result.live_batches and not ended:
            result.planned = False
            return result
        planned: dict[str, Planned] = {}
        for tag, item in items:
            state = self.plan_item(item, tag)
            if isinstance(state, Verdict):
                result.verdicts.append((tag, state))
                continue
            result.waiting += 1
            if isinstance(state, list):
                for p in state:
                    planned.setdefault(p.key, p)  # two items with the same prompt: one request
        if planned:
            result.submitted = await self.submit(list(planned.values()))
            result.live_batches += 1 if result.submitted else 0
        return result


async def judge_in_batches(batch_judge: BatchJudge, items: Sequence[tuple[int, PairItem]], poll_s: float,
                           on_tick: Callable[[TickResult], None] | None = None) -> list[tuple[int, Verdict]]:
    """Tick until every item has its verdict (the CLI's loop); verdicts in `items` order."""
    done: dict[int, Verdict] = {}
    pending = list(items)
    while pending:
        tick = await batch_judge.tick(pending)
        for tag, verdict in tick.verdicts:
            done[tag] = verdict
        pending = [(tag, item) for tag, item in pending if tag not in done]
        if on_tick is not None:
            on_tick(tick)
        if pending:
            if not tick.live_batches and not tick.submitted:
                # Nothing in flight and nothing sent: every send failed this round; wait and retry.
                log.warning("no batch in flight for %d waiting items; sending again after %g s", len(pending), poll_s)
            await asyncio.sleep(poll_s)
    return [(tag, done[tag]) for tag, _ in items]

