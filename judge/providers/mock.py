"""An in-process provider for tests: scripted answers, no network, no cost.

Like Inspect AI's `mockllm/model`: the runner (re-asks, cache, deadlines, aggregation) runs
unchanged around it, so its tests build `Judge(profile, provider=MockProvider(...))` and need no
simulator process. The script is one answer for every call, a list (or iterator) consumed in call
order, or a function of the request. An answer is a text, a whole `CallResult`, or an exception
to raise (e.g. a `ProviderError`). `delay_s` holds every answer back, so that deadlines and
cancellation can be tested; `requests` records what the runner sent.

Registered as provider "mock" for `create_provider`, but not a profile choice: neither the CLI
nor the API offers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from judge.providers.base import CallRequest, CallResult, register

if TYPE_CHECKING:
    from judge.endpoints import Access
    from judge.profiles import JudgeProfile

Answer = str | CallResult | BaseException
Script = Answer | Iterable[Answer] | Callable[[CallRequest], Answer]

# What a mock made by `create_provider` answers, by the profile's parser: the first-shown response.
DEFAULT_ANSWERS = {
    "choice-certainty": "[[A]] [[80]]",
    "choice-tie": "[[A]]",
    "scores": "Score of the Assistant 1: 8\nScore of the Assistant 2: 6\n8\n6",
    "fastchat-scores": "8 6",
}


class ScriptExhausted(RuntimeError):
    """A list script ran out: not a ProviderError, so the test fails instead of storing an error."""


class MockProvider:
    name = "mock"

    def __init__(self, script: Script = DEFAULT_ANSWERS["choice-certainty"], *,
                 delay_s: float | Callable[[CallRequest], float] = 0.0,
                 usage: tuple[int, int] | None = None):
        """`usage`: the (input, output) tokens reported with every text answer (None: not reported)."""
        self._answer: Callable[[CallRequest], Answer]
        if isinstance(script, str | CallResult | BaseException):
            answer = script
            self._answer = lambda request: answer
        elif callable(script):
            self._answer = script
        else:
            self._answer = _consumer(iter(script))
        self._delay = delay_s if callable(delay_s) else (lambda request: delay_s)
        self.usage = usage
        self.requests: list[CallRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most calls ever in flight at once
        self.cancelled = 0  # calls cancelled while in flight (a deadline, a cancelled stream)
        self.closed = False

    async def complete(self, request: CallRequest) -> CallResult:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = self._delay(request)
            if delay > 0:
                await asyncio.sleep(delay)
            answer = self._answer(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, CallResult):
            return answer
        tokens = self.usage or (None, None)
        return CallResult(text=answer, input_tokens=tokens[0], output_tokens=tokens[1])

    async def aclose(self) -> None:
        self.closed = True


def _consumer(answers: Iterator[Answer]) -> Callable[[CallRequest], Answer]:
    def next_answer(request: CallRequest) -> Answer:
        try:
            return next(answers)
        except StopIteration:
            raise ScriptExhausted(f"the mock's script has no answer left for {request.item_id!r} "
                                  f"{request.order} sample {request.sample} attempt {request.attempt}") from None

    return next_answer


@register("mock")
def _mock(profile: JudgeProfile, access: Access) -> MockProvider:
    return MockProvider(DEFAULT_ANSWERS.get(profile.load_template().parser, DEFAULT_ANSWERS["choice-certainty"]))
