"""Prompt caching: the share of input tokens the provider's prompt cache serves, and the cost it
saves, on a job of 1,000 items over 20 personas (issue 15), judged in both orders through the real
runner and the official SDKs against `pjudge llm-sim` (in-process), which reports cached tokens
the way each provider does (llm_sim.prompt_cache; 4 characters a token).

The prompt puts the rubric and the persona first (judge.templates: the shared prefix), so every
call of a persona shares them: OpenAI caches prefixes of prompts of 1,024 tokens or more by
itself, in 128-token steps (the profile sends `prompt_cache_key`); Anthropic caches what ends at
the `cache_control` breakpoint the provider puts after the persona, when it is 1,024 tokens or
more. So what is cached depends on the persona's length: a profile of a dozen attributes (PRISM's
survey answers) leaves the prefix under the minimum, and nothing is cached; a long one (a user's
stated preferences and history) is read from the cache on all but the persona's first call.

Prices (USD per million tokens): OpenAI's price table for gpt-4o-2024-08-06, $2.50 input, $1.25
cached input, $10 output; Anthropic's price list for Claude Sonnet 4.5, $3 input, $15 output, cache
reads 0.1x and 5-minute cache writes 1.25x the input price. "Without caching" prices the same
tokens all at the input price."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.common import emit

if TYPE_CHECKING:
    from judge.profiles import Price
    from judge.records import Call, PairItem

WORDS = ("hiking gardening budget family cooking vegetarian travel reading music jazz teaching retired "
         "nurse engineer student parent rural city cycling fitness savings investing privacy history "
         "science faith volunteering pets dogs cats coffee tea languages spanish photography painting "
         "baking fishing camping football chess podcasts sustainability minimalism careers health").split()
SCENARIOS = (("short persona (about 600 characters, PRISM-like)", 600),
             ("long persona (about 5,000 characters: preferences and history)", 5000))
PROVIDERS = ("openai", "anthropic")


def _sentence(rng: random.Random) -> str:
    return f"The person cares about {' and '.join(rng.sample(WORDS, 3))}, and says so {rng.choice(WORDS)}-wise."


def _text(rng: random.Random, chars: int) -> str:
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < chars:
        parts.append(_sentence(rng))
    return " ".join(parts)


def make_items(n_items: int = 1000, n_personas: int = 20, persona_chars: int = 600, seed: int = 15) -> list[PairItem]:
    """n_items items spread evenly over n_personas personas, in shuffled order; responses of about
    1,200 characters, questions of about 200."""
    from judge.records import PairItem

    rng = random.Random(seed)
    personas = [_text(rng, persona_chars) for _ in range(n_personas)]
    items = [PairItem(id=f"item-{i:05d}", persona=personas[i % n_personas], prompt=_text(rng, 200),
                      response_a=_text(rng, 1200), response_b=_text(rng, 1200)) for i in range(n_items)]
    rng.shuffle(items)
    return items


def provider_price(provider: str) -> Price:
    from judge.profiles import Price

    if provider == "anthropic":
        return Price(input_per_mtok=3.0, output_per_mtok=15.0).for_provider("anthropic")
    return Price(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25)


@dataclass(frozen=True)
class Figures:
    calls: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cost_usd: float
    cost_without_caching_usd: float

    @property
    def cached_share(self) -> float:
        return self.cached_input_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def saved_usd(self) -> float:
        return self.cost_without_caching_usd - self.cost_usd

    def record(self) -> dict[str, Any]:
        return {"calls": self.calls, "input_tokens": self.input_tokens,
                "cached_input_tokens": self.cached_input_tokens, "cache_write_tokens": self.cache_write_tokens,
                "cached_share": round(self.cached_share, 4), "cost_usd": round(self.cost_usd, 4),
                "cost_without_caching_usd": round(self.cost_without_caching_usd, 4),
                "saved_usd": round(self.saved_usd, 4),
                "saved_share": round(self.saved_usd / self.cost_without_caching_usd, 4)
                if self.cost_without_caching_usd else 0.0}


def figures(calls: list[Call], price: Price) -> Figures:
    """The calls' tokens and cost (what the runner billed) against the same tokens without caching."""
    return Figures(
        calls=len(calls), input_tokens=sum(c.input_tokens or 0 for c in calls),
        cached_input_tokens=sum(c.cached_input_tokens or 0 for c in calls),
        cache_write_tokens=sum(c.cache_write_tokens or 0 for c in calls),
        cost_usd=sum(c.cost_usd or 0.0 for c in calls),
        cost_without_caching_usd=sum(price.cost(c.input_tokens, c.output_tokens) for c in calls))


def judge_with_sim(provider: str, items: list[PairItem], template: str = "persona-certainty", samples: int = 1,
                   **profile_fields: Any) -> list[Call]:
    """Judge `items` through the real runner and `provider`'s SDK against a fresh simulator (its
    caches empty); every call of every verdict."""
    from judge.profiles import load_profile
    from judge.runner import Judge, new_event_loop
    from llm_sim.server import SimServerThread

    with SimServerThread() as sim:
        base_url = f"{sim.url}/v1" if provider == "openai" else sim.url
        profile = load_profile(template, provider=provider, model="sim-judge", base_url=base_url, samples=samples,
                               price=provider_price(provider), **profile_fields)
        variable = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
        os.environ.setdefault(variable, "sim-key")

        async def run() -> list[Call]:
            async with Judge(profile) as judge:
                return [c async for v in judge.judge_stream(items) for c in v.calls]

        loop = new_event_loop()
        try:
            return loop.run_until_complete(run())
        finally:
            loop.close()


def run(as_json: bool = False, quick: bool = False) -> None:
    n_items, n_personas = (200, 20) if quick else (1000, 20)
    # persona-certainty (Dong et al.): rubric, persona, then the question; faireval-scores (Wang et
    # al., k = 3): its published layout puts the rubric after the answers, so only the system
    # prompt and the persona are shared (and OpenAI also reads a repeated sample's whole prompt).
    runs = [(label, chars, "persona-certainty", 1) for label, chars in SCENARIOS]
    runs.append((SCENARIOS[1][0], SCENARIOS[1][1], "faireval-scores", 3))
    for label, chars, template, samples in runs:
        items = make_items(n_items, n_personas, chars)
        for provider in PROVIDERS:
            calls = judge_with_sim(provider, items, template, samples)
            record = figures(calls, provider_price(provider)).record()
            emit({"benchmark": "caching", "scenario": label, "template": template, "samples": samples,
                  "provider": provider, "items": n_items, "personas": n_personas, **record}, as_json)

