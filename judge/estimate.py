"""What judging items with a profile will cost, before anything runs (`pjudge estimate`,
POST /v1/jobs/estimate, and the budget each batch of a job reserves: store.budget).

- calls: items x orders (2 with swap, else 1) x samples. Re-asks are not counted: one is made only
  when an answer cannot be parsed (at most `max_reasks` per call), which no estimate can know. With
  adaptive sampling `samples` is the most per order, so this is the upper bound.
- input tokens: the real prompts (judge.templates, both orders), counted with the provider's
  tokenizer where one is installed: tiktoken (an optional extra, `tokenizers`) for provider
  `openai`. Anthropic's token counter is an API call (it needs the network), and an
  openai-compatible server's tokenizer is unknown: there, and when tiktoken is missing or cannot
  load its encoding, an estimate of one token per 4 characters of the messages' text, rounded up
  per call ("chars/4"). Each sample of a prompt counts its tokens again.
- output tokens: `max_tokens` per call, the upper bound (answers are usually much shorter).
- cost: the profile's price table (judge.profiles.Price; on the service, the server's price).

`counted_by` names the input-token method ("tiktoken:<encoding>" or "estimate:chars/4"), and says
that output tokens are max_tokens. A cascade (SPEC 2.1) is estimated as its worst case: every
stage judges every item; `stages` then holds each stage's own estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from judge.profiles import CascadeProfile, JudgeProfile, Judging
from judge.records import Order, PairItem

CHARS_PER_TOKEN = 4
CHARS_ESTIMATE = "estimate:chars/4"
OUTPUT_BOUND = "max_tokens (upper bound)"
REASKS_NOTE = ("re-asks are not counted: one is made only when an answer cannot be parsed (at most max_reasks "
               "per call)")
CASCADE_NOTE = "cascade: the worst case, every stage judging every item (later stages see only the items "\
               "earlier ones did not accept)"
Counter = Callable[[list[dict[str, str]]], int]


@dataclass(frozen=True)
class Estimate:
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    counted_by: str
    notes: tuple[str, ...] = ()
    stages: tuple[Estimate, ...] = field(default=())

    def document(self) -> dict[str, Any]:
        """The JSON of `pjudge estimate --format json` and POST /v1/jobs/estimate."""
        out: dict[str, Any] = {"calls": self.calls, "input_tokens": self.input_tokens,
                               "output_tokens": self.output_tokens, "cost_usd": round(self.cost_usd, 6),
                               "counted_by": self.counted_by, "notes": list(self.notes)}
        if self.stages:
            out["stages"] = [stage.document() for stage in self.stages]
        return out


def chars_estimate(messages: list[dict[str, str]]) -> int:
    """One token per 4 characters of the messages' text, rounded up."""
    return math.ceil(sum(len(m["content"]) for m in messages) / CHARS_PER_TOKEN)


@cache
def _tiktoken_encoding(model: str) -> Any:
    """The model's tiktoken encoding, or None (tiktoken not installed, or its encoding file cannot be
    read: it is downloaded on first use and this machine may be offline)."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        try:
            return tiktoken.encoding_for_model(model)
        except KeyError:  # a model tiktoken does not know: the current OpenAI models' encoding
            return tiktoken.get_encoding("o200k_base")
    except Exception:  # noqa: BLE001 - no encoding file (offline, no cache): the estimate instead
        return None


# OpenAI's chat format: a few tokens of framing per message and for the reply's start
# (OpenAI cookbook, "How to count tokens with tiktoken").
TOKENS_PER_MESSAGE, TOKENS_PER_REPLY = 3, 3


def token_counter(profile: JudgeProfile) -> tuple[Counter, str]:
    """How to count a prompt's input tokens for this profile, and the method's name."""
    if profile.provider == "openai":
        encoding = _tiktoken_encoding(profile.model)
        if encoding is not None:
            def count(messages: list[dict[str, str]]) -> int:
                return TOKENS_PER_REPLY + sum(TOKENS_PER_MESSAGE + len(encoding.encode(m["content"]))
                                              for m in messages)
            return count, f"tiktoken:{encoding.name}"
    return chars_estimate, CHARS_ESTIMATE


def estimate_profile(profile: JudgeProfile, items: Iterable[PairItem]) -> Estimate:
    """One judge profile over `items` (module docstring)."""
    template = profile.load_template()
    count, method = token_counter(profile)
    orders: tuple[Order, ...] = ("AB", "BA") if profile.swap else ("AB",)
    prompts = 0
    input_tokens = 0
    for item in items:
        for order in orders:
            prompts += 1
            input_tokens += count(template.render(item, order))
    calls = prompts * profile.samples
    input_tokens *= profile.samples
    output_tokens = calls * profile.max_tokens
    return Estimate(calls=calls, input_tokens=input_tokens, output_tokens=output_tokens,
                    cost_usd=profile.price.cost(input_tokens, output_tokens),
                    counted_by=f"input: {method}; output: {OUTPUT_BOUND}", notes=(REASKS_NOTE,))


def estimate(judging: Judging, items: Sequence[PairItem]) -> Estimate:
    """A judge profile's estimate, or a cascade's worst case (the sum of its stages')."""
    if not isinstance(judging, CascadeProfile):
        return estimate_profile(judging, items)
    stages = tuple(estimate_profile(judge, items) for judge in judging.judges)
    methods = sorted({stage.counted_by for stage in stages})
    return Estimate(calls=sum(s.calls for s in stages), input_tokens=sum(s.input_tokens for s in stages),
                    output_tokens=sum(s.output_tokens for s in stages),
                    cost_usd=round(sum(s.cost_usd for s in stages), 9), counted_by=" | ".join(methods),
                    notes=(REASKS_NOTE, CASCADE_NOTE), stages=stages)
