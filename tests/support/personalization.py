"""Builders for the personalization API tests: personas, their responses, and an enqueue that
judges at once with the real runner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from judge.cascade import judge_items
from store import repo
from store.models import Job

PERSONAS = {
    "u1": ("gardening", "chess", "tulips", "compost"),
    "u2": ("baking", "astronomy", "telescopes", "croissants"),
    "u3": ("fishing", "violin", "canoes", "trout"),
}
PROMPTS = [("How should I spend my weekend?", "This weekend, make time for"),
           ("What gift would make me happy?", "A thoughtful gift could involve"),
           ("Suggest a club to join.", "Look for a local club about")]
SIM_PROFILE = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge"}


def interests(persona: str) -> str:
    *first, last = PERSONAS[persona]
    return f"{', '.join(first)} and {last}"


def response_lines() -> list[dict[str, Any]]:
    """A faithful system answers each persona with its interests, a shuffled one with the next
    persona's. The shuffled answers start differently, so no two pair items show the judge the same
    text and no call is answered from a cache in one run but not in the other."""
    names = list(PERSONAS)
    lines = []
    for index, (question, opener) in enumerate(PROMPTS):
        for position, persona in enumerate(names):
            common = {"prompt_id": f"q{index}", "persona_id": persona, "reference": f"I like {interests(persona)}.",
                      "persona": f"The person enjoys {interests(persona)}.", "prompt": question}
            other = names[(position + 1) % len(names)]
            lines.append({**common, "system": "faithful", "response": f"{opener} {interests(persona)}."})
            lines.append({**common, "system": "shuffled", "response": f"Honestly, {opener} {interests(other)}."})
    return lines


def judging_enqueue(engine: Engine) -> Callable[[Job], None]:
    """An enqueue that does the worker's job at once: the real runner judges the stored pair items
    (here against llm-sim) and the verdicts are stored by item position, as worker.tasks does."""

    def enqueue(job: Job) -> None:
        stored = repo.job_items(engine, job.id, 0, job.n_items)
        verdicts = asyncio.run(judge_items(repo.job_profile(job), [item for _, item in stored]))
        repo.record_verdicts(engine, job.id, [(position, verdict) for (position, _), verdict
                                              in zip(stored, verdicts, strict=True)])
        repo.finish_if_complete(engine, job.id)

    return enqueue
