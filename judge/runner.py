"""Judging items: both orders, k samples each (or adaptively fewer), cache, re-asks, aggregation
into verdicts.

item -> prompt (both orders) -> provider call -> parsed call -> verdict. Everything here is
asyncio so that one process keeps hundreds of calls in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from judge.aggregation import aggregate, settled
from judge.attempts import CallAttempts, call_request
from judge.cache import CallCache, NullCache, cache_key
from judge.endpoints import Access, AccessError, local_access
from judge.parsers import get_parser
from judge.profiles import JudgeProfile
from judge.providers.base import CallRequest, CallResult, Provider, ProviderError, create_provider
from judge.records import Call, JudgeInfo, Order, PairItem, Verdict


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: about 15% more calls per second of CPU than asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class RateLimiter(Protocol):
    """Waits until a call of about `tokens` tokens may be sent under the profile's limits."""

    async def acquire(self, profile: JudgeProfile, tokens: int) -> None: ...


@dataclass
class Progress:
    calls: int = 0
    failed_calls: int = 0
    cached_calls: int = 0
    cost_usd: float = 0.0
    verdicts: int = 0


class Judge:
    """Judges items with one profile. Owns its provider; use `async with` or call `aclose()`."""

    def __init__(
        self,
        profile: JudgeProfile,
        provider: Provider | None = None,
        cache: CallCache | None = None,
        max_in_flight: int = 64,
        on_call: Callable[[Call], None] | None = None,
        limiter: RateLimiter | None = None,
        raw_max_chars: int | None = None,
        access: Access | None = None,
        call_deadline_s: float | None = None,
    ):
        """`access`: the endpoint and key the provider may use (judge/endpoints.py); default: the
        CLI's (`local_access`). It also scopes the cache keys, whatever `provider` is given."""
        self.profile = profile
        self.template = profile.load_template()
        self.parse = get_parser(self.template.parser)
        if access is None:
            try:
                access = local_access(profile)
            except AccessError as exc:
                if provider is None:
                    raise ProviderError(str(exc)) from None
                access = Access(endpoint=None, api_key=None)  # a given provider: its own business
        self.access = access
        self.cache_scope = access.cache_scope
        self.provider = provider if provider is not None else create_provider(profile, access)
        self.cache = cache if cache is not None else NullCache()
        self._use_cache = profile.provider != "replay"
        self.max_in_flight = max(1, max_in_flight)
        self._calls = asyncio.Semaphore(self.max_in_flight)
        self.on_call = on_call
        self.limiter = limiter
        from judge.settings import settings

        if call_deadline_s is None:
            call_deadline_s = settings().call_deadline_s
        # The whole of one provider call, its own retries and their waits included: a server that
        # accepts the connection and never answers (or a huge timeout_s) ends here.
        self.call_deadline_s = call_deadline_s
        self.info = JudgeInfo(profile=profile.name, provider=profile.provider, model=profile.model)
        # Unset cache prices by the provider's rule (Anthropic: reads 0.1x, writes 1.25x input).
        self.price = profile.price.for_provider(profile.provider)
        # Answers longer than this are cut (PJUDGE_RAW_MAX_CHARS): a server that answers 50 MB must
        # not get 50 MB into the cache, the database and every page of verdicts.
        self.raw_max_chars = raw_max_chars if raw_max_chars is not None else settings().raw_max_chars

    async def __aenter__(self) -> Judge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.provider.aclose()

    @property
    def orders(self) -> tuple[Order, ...]:
        return ("AB", "BA") if self.profile.swap else ("AB",)

    def cache_keys(self, items: Iterable[PairItem]) -> list[str]:
        """The cache keys of the first attempts of every call of `items` (to read them in one go)."""
        if not self._use_cache:
            return []
        return [
            cache_key(self.profile.provider, self.template.key,
                      call_request(self.profile, item, order, sample, 0, self.template.render(item, order)),
                      self.cache_scope)
            for item in items for order in self.orders for sample in range(self.profile.samples)
        ]

    def capped(self, result: CallResult) -> CallResult:
        """The answer cut to raw_max_chars characters, its full length recorded."""
        if len(result.text) <= self.raw_max_chars:
            return result
        return replace(result, text=result.text[:self.raw_max_chars],
                       truncated_from=result.truncated_from or len(result.text))

    async def _complete(self, request: CallRequest, cache: CallCache) -> tuple[CallResult, bool]:
        key = cache_key(self.profile.provider, self.template.key, request, self.cache_scope) if self._use_cache else None
        if key is not None:
            hit = cache.get(key)
            if hit is not None:
                return self.capped(hit), True
        if self.limiter is not None:
            prompt_chars = sum(len(m["content"]) for m in request.messages)
            await self.limiter.acquire(self.profile, prompt_chars // 4 + request.max_tokens)
        async with self._calls:
            result = self.capped(await self._deadlined(request))
        # A cut answer is not cached: the cache keeps whole answers only (and no 50 MB ones).
        if key is not None and result.truncated_from is None:
            cache.put(key, result)
        return result, False

    async def _deadlined(self, request: CallRequest) -> CallResult:
        deadline = asyncio.timeout(self.call_deadline_s)
        try:
            async with deadline:
                return await self.provider.complete(request)
        except TimeoutError:
            if not deadline.expired():
                raise  # not ours: the provider's own (a provider should have made it a ProviderError)
            raise ProviderError(f"no answer within the call's deadline ({self.call_deadline_s:g} s, "
                                "retries included)") from None

    def attempts(self, item: PairItem, order: Order, sample: int, batch: bool = False) -> CallAttempts:
        """The attempts of one call (judge/attempts.py), for this judge's driver or batch mode's
        (`batch`: priced with the batch discount, no prompt-cache prefix marked)."""
        messages, prefix = self.template.render_with_prefix(item, order)
        return CallAttempts(self.profile, self.parse, self.price, item, order, sample, messages,
                            None if batch else prefix, batch=batch)

    async def call(self, item: PairItem, order: Order, sample: int, cache: CallCache | None = None) -> Call:
        """One position of one sample, re-asked while the answer cannot be parsed."""
        cache = self.cache if cache is None else cache
        attempts = self.attempts(item, order, sample)
        started = time.perf_counter()
        while (request := attempts.next()) is not None:
            try:
                result, cached = await self._complete(request, cache)
            except ProviderError as exc:
                attempts.failed(f"provider: {exc}")
            else:
                attempts.answered(result, cached)
        call = attempts.call(latency_s=round(time.perf_counter() - started, 4))
        if self.on_call is not None:
            self.on_call(call)
        return call

    async def judge_item(self, item: PairItem, cache: CallCache | None = None) -> Verdict:
        if self.profile.adaptive:
            return self.verdict(item, await self._adaptive_calls(item, cache))
        calls = await asyncio.gather(
            *(self.call(item, order, sample, cache) for order in self.orders for sample in range(self.profile.samples))
        )
        return self.verdict(item, list(calls))

    async def _adaptive_calls(self, item: PairItem, cache: CallCache | None) -> list[Call]:
        calls: list[Call] = []
        while (sample := self.next_sample(calls)) is not None:
            calls += await asyncio.gather(*(self.call(item, order, sample, cache) for order in self.orders))
        return self.in_order(calls)

    def in_order(self, calls: Iterable[Call]) -> list[Call]:
        """Calls as fixed k stores them: order by order, samples in order."""
        return sorted(calls, key=lambda c: (self.orders.index(c.order or "AB"), c.sample))

    def next_sample(self, calls: Sequence[Call]) -> int | None:
        """Adaptive sampling: the sample to ask next in every order (round r asks sample r - 1, the
        very call of fixed k, so the same cache entry), given the calls of the rounds so far; None
        once the verdict is settled (judge/aggregation.py `settled`) or `samples` rounds ran. A
        function of the calls alone, so that a caller that stores calls (a batch) can resume."""
        rounds = 1 + max((c.sample for c in calls), default=-1)
        if rounds == 0:
            return 0
        if rounds >= self.profile.samples:
            return None
        mode, swap = self.profile.answer_kind, self.profile.swap
        previous = aggregate([c for c in calls if c.sample < rounds - 1], mode, swap).winner
        return None if settled(calls, mode, swap, self.profile.adaptive_margin, previous) else rounds

    def verdict(self, item: PairItem, calls: list[Call]) -> Verdict:
        result = aggregate(calls, self.profile.answer_kind, self.profile.swap, self.profile.certainty_threshold)
        error = None
        if result.winner is None:
            first = next((c.error for c in calls if c.error), "no call")
            error = f"no call could be parsed: {first}"
        return Verdict(
            id=item.id, winner=result.winner, p_a=result.p_a, certainty=result.certainty,
            consistent=result.consistent, abstained=result.abstained, bpde=result.bpde,
            human_label=item.human_label, judge=self.info, calls=calls,
            len_a=len(item.response_a), len_b=len(item.response_b), error=error,
            metadata=dict(item.metadata),
        )

    async def judge_stream(self, items: Iterable[PairItem], max_items_in_flight: int | None = None
                           ) -> AsyncIterator[Verdict]:
        """Verdicts in completion order, with a bounded number of items in flight."""
        limit = max_items_in_flight or max(4, self.max_in_flight)
        pending: set[asyncio.Task[Verdict]] = set()
        iterator = iter(items)
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    try:
                        item = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.add(asyncio.ensure_future(self.judge_item(item)))
                if not pending:
                    break
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                # Retrieve every finished task before yielding, so no failure goes unobserved.
                failures = [exc for task in done if (exc := task.exception()) is not None]
                if failures:
                    raise failures[0]
                for task in done:
                    yield task.result()
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


async def judge_all(profile: JudgeProfile, items: list[PairItem], cache: CallCache | None = None,
                    concurrency: int = 64) -> list[Verdict]:
    """Judge a list of items; verdicts in input order (a cascade: judge.cascade.judge_items)."""
    async with Judge(profile, cache=cache, max_in_flight=concurrency) as judge:
        by_id = {v.id: v async for v in judge.judge_stream(items)}
    return [by_id[item.id] for item in items]
