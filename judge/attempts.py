"""One call's attempts, without I/O: the request to send next, what an answer or a failure does
to the call (parse it, re-ask after an unparseable answer, sum tokens and costs), and the call
record at the end.

The one home of a call's loop for both drivers: `judge.runner.Judge.call` sends each request to
the provider and feeds the answer back at once; batch mode (judge/batching.py) replays the answers
its store holds so far and stops at the first request nobody has answered yet. The same requests,
cache keys, parsing, re-asks and records, by construction.
"""

from __future__ import annotations

from collections.abc import Callable

from judge.parsers import Parsed, to_item_labels
from judge.profiles import JudgeProfile, Price
from judge.providers.base import CallRequest, CallResult
from judge.records import Call, Order, PairItem

REASK = (
    "Your answer could not be read ({error}). Reply again with only the required format, "
    "as the instructions above say."
)


def call_request(profile: JudgeProfile, item: PairItem, order: Order, sample: int, attempt: int,
                 messages: list[dict[str, str]], cache_prefix: int | None = None) -> CallRequest:
    """The request of one attempt of one call (its cache key: judge.cache.cache_key)."""
    return CallRequest(
        item_id=item.id, order=order, sample=sample, attempt=attempt, messages=messages,
        model=profile.model, temperature=profile.temperature, max_tokens=profile.max_tokens,
        # Distinguishes the k samples of one prompt for servers that are deterministic per request.
        extra={"x-pjudge-sample": str(sample)},
        cache_prefix=cache_prefix if profile.prompt_caching else None,
    )


class CallAttempts:
    """The attempts of (item, order, sample): `next()` is the request to send (None once the call
    is done), `answered` or `failed` says what came of it, `call()` is the record.

    `cache_prefix`: the length of the prompt's shared prefix, marked for the provider's prompt
    cache (None: not marked; batch mode sends none). `batch`: answers through a provider's batch
    API, priced with the batch discount (`Call.saved_batch_usd`). An answer `answered(...,
    cached=True)` came from the call cache: it costs nothing and is not counted as sent."""

    def __init__(self, profile: JudgeProfile, parse: Callable[[str], Parsed], price: Price, item: PairItem,
                 order: Order, sample: int, messages: list[dict[str, str]], cache_prefix: int | None = None,
                 batch: bool = False):
        self.profile, self.parse, self.price = profile, parse, price
        self.item, self.order, self.sample = item, order, sample
        self.messages, self.cache_prefix, self.batch = messages, cache_prefix, batch
        self.attempt = 0
        self.done = False
        self.input_tokens = self.output_tokens = 0
        # What the provider said of its prompt cache, over the attempts sent (not replayed).
        self.cached_input_tokens: int | None = None
        self.cache_write_tokens: int | None = None
        self.cost = 0.0
        self.interactive_cost = 0.0  # the same answers at the interactive price: what batch mode saved
        self.uncached_cost = 0.0  # the same tokens at the plain input price: what prompt caching saved
        self.all_cached = True
        self.raw: str | None = None
        self.raw_truncated_from: int | None = None
        self.parsed: Parsed | None = None
        self.error: str | None = None

    def next(self) -> CallRequest | None:
        """The request of the current attempt; None once the call is done."""
        if self.done:
            return None
        return call_request(self.profile, self.item, self.order, self.sample, self.attempt, self.messages,
                            self.cache_prefix)

    def failed(self, error: str) -> None:
        """The current attempt got no answer (the provider's retries ran out): the call ends with
        `error`."""
        self.error, self.parsed, self.all_cached, self.done = error, None, False, True

    def answered(self, result: CallResult, cached: bool) -> None:
        """The current attempt's answer (already cut to the raw cap): parsed, and re-asked while
        it cannot be read and re-asks remain."""
        self.all_cached = self.all_cached and cached
        self.input_tokens += result.input_tokens or 0
        self.output_tokens += result.output_tokens or 0
        if not cached:
            tokens = (result.input_tokens, result.output_tokens, result.cached_input_tokens, result.cache_write_tokens)
            cost = self.price.cost(*tokens, batch=self.batch)
            self.cost += cost
            self.interactive_cost += self.price.cost(*tokens) if self.batch else cost
            self.uncached_cost += self.price.cost(result.input_tokens, result.output_tokens)
            if result.cached_input_tokens is not None:
                self.cached_input_tokens = (self.cached_input_tokens or 0) + result.cached_input_tokens
            if result.cache_write_tokens is not None:
                self.cache_write_tokens = (self.cache_write_tokens or 0) + result.cache_write_tokens
        self.raw, self.raw_truncated_from = result.text, result.truncated_from
        self.parsed = parsed = self.parse(result.text)  # as cut: what is stored is what was parsed
        if parsed.ok:
            self.error, self.done = None, True
            return
        self.error = f"unparseable: {parsed.error}"
        if self.attempt >= self.profile.max_reasks:
            self.done = True
            return
        self.attempt += 1
        self.messages = [*self.messages, {"role": "assistant", "content": result.text or "(empty)"},
                         {"role": "user", "content": REASK.format(error=parsed.error)}]

    def call(self, latency_s: float = 0.0) -> Call:
        """The call record, as far as the attempts went."""
        parsed = self.parsed if self.parsed is not None and self.parsed.ok else None
        choice, scores = to_item_labels(parsed, self.order) if parsed is not None else (None, None)
        prompt_cached = self.cached_input_tokens is not None or self.cache_write_tokens is not None
        return Call(
            order=self.order, sample=self.sample, raw=self.raw, raw_truncated_from=self.raw_truncated_from,
            choice=choice, certainty=parsed.certainty if parsed is not None else None, scores=scores,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens, cache_write_tokens=self.cache_write_tokens,
            cost_usd=round(self.cost, 9),
            saved_cache_usd=round(self.uncached_cost - self.interactive_cost, 9) if prompt_cached else None,
            saved_batch_usd=(round(self.interactive_cost - self.cost, 9)
                             if self.batch and self.interactive_cost else None),
            latency_s=latency_s, cached=self.all_cached and self.error is None, error=self.error,
            attempts=self.attempt + 1,
        )
