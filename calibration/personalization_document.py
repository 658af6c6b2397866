"""The degree-of-personalization JSON document with its judge-based part, assembled in one place so
that `pjudge personalization --judge --format json` and GET /v1/personalization/{id}/report give the
same keys and the same numbers for the same responses and verdicts.

The text measures come first (`PersonalizationReport.to_dict()`); `add_persona_fit` merges into each
system the persona-fit statistics of its pair verdicts, and `judge_section` describes the judging.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from calibration.persona_fit import DEFAULT_RESAMPLES, DEFAULT_SEED, empty_fit, persona_fit
from calibration.personalization_io import ResponseSet
from judge.profiles import JudgeProfile
from judge.records import PairItem, Verdict

__all__ = ["CallCounts", "CallTotals", "add_persona_fit", "cost_by_system", "judge_section", "ordered_pairs",
           "unjudgeable_pairs"]


class CallCounts(Protocol):
    """What `judge_section` reads: judge.runner.Progress (the CLI) or CallTotals (the service)."""

    @property
    def calls(self) -> int: ...
    @property
    def cached_calls(self) -> int: ...
    @property
    def failed_calls(self) -> int: ...
    @property
    def cost_usd(self) -> float: ...


@dataclass(frozen=True)
class CallTotals:
    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    cost_usd: float = 0.0

    @classmethod
    def of(cls, verdicts: Iterable[Verdict]) -> CallTotals:
        """The totals of the verdicts' calls (a stored job has no progress counter of cache hits)."""
        calls = [call for verdict in verdicts for call in verdict.calls]
        return cls(calls=len(calls), cached_calls=sum(call.cached for call in calls),
                   failed_calls=sum(call.error is not None for call in calls),
                   cost_usd=sum(call.cost_usd or 0.0 for call in calls))


def cost_by_system(verdicts: Iterable[Verdict]) -> dict[str, float]:
    costs: dict[str, float] = {}
    for verdict in verdicts:
        system = str(verdict.metadata.get("system"))
        costs[system] = costs.get(system, 0.0) + sum(call.cost_usd or 0.0 for call in verdict.calls)
    return costs


def add_persona_fit(document: dict[str, Any], verdicts: Sequence[Verdict], unjudgeable: Mapping[str, int],
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> None:
    """Merge into every system of `document` its persona-fit statistics, unjudgeable pairs and judge cost.

    A system without a judged pair (e.g. left out of the judging) gets the empty entry, so every
    system has the same keys.
    """
    fit = persona_fit(verdicts, resamples=resamples, seed=seed)
    costs = cost_by_system(verdicts)
    for system, scores in document["systems"].items():
        scores.update(fit.get(system, empty_fit()))
        scores["n_unjudgeable_pairs"] = unjudgeable.get(system, 0)
        scores["judge_cost_usd"] = round(costs.get(system, 0.0), 6)


def judge_section(profile: JudgeProfile, items: int, counts: CallCounts, resamples: int, seed: int,
                  verdicts: str | None) -> dict[str, Any]:
    """The document's `judge` entry; `verdicts` says where the pair verdicts can be read (or None)."""
    return {
        "profile": profile.name, "provider": profile.provider, "model": profile.model,
        "items": items, "calls": counts.calls, "cached_calls": counts.cached_calls,
        "failed_calls": counts.failed_calls, "cost_usd": round(counts.cost_usd, 6),
        "bootstrap": resamples, "seed": seed, "verdicts": verdicts,
        "simulated": profile.model.startswith("sim-"),
    }


def ordered_pairs(responses: ResponseSet, systems: Sequence[str] | None = None) -> dict[str, int]:
    """Per system (default: every system), the ordered pairs (p, q), p ≠ q, of personas it answered
    within a prompt: the pair items a persona-fit judging of it makes at most."""
    chosen = list(dict.fromkeys(systems)) if systems is not None else list(responses.systems)
    counts = dict.fromkeys(chosen, 0)
    for prompt in responses.prompts:
        for system in chosen:
            n = len(prompt.responses.get(system, {}))
            counts[system] += n * (n - 1)
    return counts


def unjudgeable_pairs(responses: ResponseSet, items: Iterable[PairItem],
                      systems: Sequence[str] | None = None) -> dict[str, int]:
    """Per judged system, the ordered persona pairs that got no pair item (a blank response).

    Counted as the complement of the items made (see calibration.persona_fit.plan_pairs), so it
    agrees with `PairPlan.unjudgeable` whatever rule decides which pairs are judgeable.
    """
    counts = ordered_pairs(responses, systems)
    for item in items:
        system = item.metadata.get("system")
        if system in counts:
            counts[system] -= 1
    return counts
