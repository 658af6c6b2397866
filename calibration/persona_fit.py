"""Judge-based persona fit (SPEC 6, last bullet): does a system's response for persona p suit p better
than the responses it wrote for the other personas?

For each system, prompt and ordered pair (p, q) of distinct personas, a judge is shown persona p's
description, the prompt, r_p as answer A and r_q as answer B, in both orders (position-debiased);
F_pq is the verdict's p_a, the probability that persona p prefers their own response.

- persona-fit win rate = mean F_pq over the judged ordered pairs: 0.5 means no personalization (the
  judge cannot tell a persona's own response from the others'), above 0.5 means responses fit their
  persona, below means they fit other personas better.
- pairwise difference = mean over unordered pairs {p, q} judged in both directions of
  F_pq + F_qp − 1: a response that is simply better for everyone raises F_pq and lowers F_qp by as
  much, so it cancels; what is left is how much each response is better *for its own persona*.

Both get a 95% percentile bootstrap interval that resamples prompts, the unit of independence (the
pairs of one prompt share its responses). Resamples are drawn as multinomial prompt weights, so one
matrix product evaluates every resample.

The pairs are judged as ordinary pair items (`expand_pairs`), through the same runner, cache, re-asks
and cost accounting as any job; `persona_fit` reads the resulting verdicts back from their metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from calibration.bootstrap import percentile_interval
from calibration.personalization_io import (
    PersonaDescription,
    PromptResponses,
    ResponseSet,
    attach_descriptions,
    read_responses,
    validate_responses,
)
from judge.jsonl import InputError, InputProblem
from judge.records import PairItem, Verdict
from judge.templates import render_persona

KIND = "persona_fit"
ID_PREFIX = "pf"
DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0

__all__ = [
    "KIND",
    "PairPlan",
    "empty_fit",
    "expand_pairs",
    "pair_id",
    "parse_pair_id",
    "persona_fit",
    "persona_fit_job_items",
    "plan_pairs",
]


# --------------------------------------------------------------------------------------------- items


def pair_id(system: str, prompt_id: str, persona_p: str, persona_q: str) -> str:
    """`pf:<system>:<prompt_id>:<p>:<q>`, each part percent-encoded, so no part's ':' can shift the rest."""
    return ":".join([ID_PREFIX, *(quote(part, safe="") for part in (system, prompt_id, persona_p, persona_q))])


def parse_pair_id(item_id: str) -> tuple[str, str, str, str] | None:
    """(system, prompt_id, p, q) of an id made by `pair_id`; None for any other id."""
    parts = item_id.split(":")
    if len(parts) != 5 or parts[0] != ID_PREFIX:
        return None
    system, prompt_id, persona_p, persona_q = (unquote(part) for part in parts[1:])
    return system, prompt_id, persona_p, persona_q


@dataclass
class PairPlan:
    """The pair items of a response set, and per system the ordered pairs that could not be judged."""

    items: list[PairItem] = field(default_factory=list)
    # A PairItem cannot hold a blank response, and a verdict invented for one would be a guess.
    unjudgeable: dict[str, int] = field(default_factory=dict)


def plan_pairs(responses: ResponseSet, personas: Mapping[str, PersonaDescription],
               prompts: Mapping[str, str], systems: Sequence[str] | None = None) -> PairPlan:
    """Every (system, prompt, p, q) with p ≠ q both answered by the system, as a pair item for persona p.

    Raises InputError (naming the persona or prompt and a line) when a persona taking part in a pair
    has no description or a prompt has no text: the judge could not be asked.
    """
    chosen = _chosen_systems(responses, systems)
    _check_descriptions(responses, personas, prompts, chosen)
    plan = PairPlan(unjudgeable=dict.fromkeys(chosen, 0))
    for system in chosen:
        for prompt in responses.prompts:
            answers = prompt.responses.get(system, {})
            if len(answers) < 2:
                continue
            for persona_p, response_p in answers.items():
                for persona_q, response_q in answers.items():
                    if persona_p == persona_q:
                        continue
                    if not (response_p.strip() and response_q.strip()):
                        plan.unjudgeable[system] += 1
                        continue
                    plan.items.append(_pair_item(system, prompt.prompt_id, prompts[prompt.prompt_id],
                                                 persona_p, personas[persona_p], response_p, persona_q, response_q))
    return plan


def expand_pairs(responses: ResponseSet, personas: Mapping[str, PersonaDescription],
                 prompts: Mapping[str, str], systems: Sequence[str] | None = None) -> list[PairItem]:
    """The pair items of `plan_pairs` (pairs with a blank response are left out)."""
    return plan_pairs(responses, personas, prompts, systems).items


def _pair_item(system: str, prompt_id: str, prompt_text: str, persona_p: str, description: PersonaDescription,
               response_p: str, persona_q: str, response_q: str) -> PairItem:
    return PairItem(
        id=pair_id(system, prompt_id, persona_p, persona_q), persona=description, prompt=prompt_text,
        response_a=response_p, response_b=response_q,
        metadata={"kind": KIND, "system": system, "prompt_id": prompt_id,
                  "persona_p": persona_p, "persona_q": persona_q},
    )


def _chosen_systems(responses: ResponseSet, systems: Sequence[str] | None) -> list[str]:
    if systems is None:
        return list(responses.systems)
    unknown = [s for s in systems if s not in responses.systems]
    if unknown:
        known = ", ".join(repr(s) for s in responses.systems)
        raise InputError(responses.source, [InputProblem(None, "system", f"no persona responses from system(s) "
                                                         f"{', '.join(repr(s) for s in unknown)} (known: {known})")])
    return list(dict.fromkeys(systems))


def _judged_prompts(responses: ResponseSet, systems: Sequence[str]) -> Iterable[tuple[PromptResponses, list[str]]]:
    """Prompts with at least one pair to judge, with the personas taking part."""
    for prompt in responses.prompts:
        personas: dict[str, None] = {}
        for system in systems:
            answers = prompt.responses.get(system, {})
            if len(answers) >= 2:
                personas.update(dict.fromkeys(answers))
        if personas:
            yield prompt, list(personas)


def _check_descriptions(responses: ResponseSet, personas: Mapping[str, PersonaDescription],
                        prompts: Mapping[str, str], systems: Sequence[str]) -> None:
    problems: list[InputProblem] = []
    undescribed: dict[str, None] = {}
    for prompt, taking_part in _judged_prompts(responses, systems):
        text = prompts.get(prompt.prompt_id)
        if not (isinstance(text, str) and text.strip()):
            problems.append(InputProblem(
                prompt.first_line, "prompt",
                f"prompt '{prompt.prompt_id}' has no text: the judge needs it (give a `prompt` field on its "
                "lines or a --prompts file of {prompt_id, prompt})"))
        undescribed.update(dict.fromkeys(p for p in taking_part if not _described(personas.get(p))))
    for persona in undescribed:
        problems.append(InputProblem(
            responses.persona_lines.get(persona), "persona",
            f"persona '{persona}' has no description: the judge needs it (give a `persona` field on its "
            "lines or a --personas file of {persona_id, persona})"))
    if problems:
        raise InputError(responses.source, sorted(problems, key=lambda p: (p.line is None, p.line or 0)))


def _described(description: PersonaDescription | None) -> bool:
    return isinstance(description, str | dict) and bool(render_persona(description))


def persona_fit_job_items(
    source: str | Path | ResponseSet | Sequence[Mapping[str, Any]],
    personas: Mapping[str, PersonaDescription] | str | Path | None = None,
    prompts: Mapping[str, str] | str | Path | None = None,
    systems: Sequence[str] | None = None,
    source_name: str = "responses",
) -> list[PairItem]:
    """The pair items of a job of kind "personalization" (for the service).

    `source`: a responses.jsonl path, an already validated ResponseSet, or the decoded lines (dicts,
    e.g. a request body; line numbers in errors count from 1). `personas` / `prompts`: descriptions and
    texts by id, or paths of side files, added to those the lines carry. Bad input raises InputError.
    """
    responses = _response_set(source, source_name)
    personas_path = personas if isinstance(personas, str | Path) else None
    prompts_path = prompts if isinstance(prompts, str | Path) else None
    if personas_path is not None or prompts_path is not None:
        responses = attach_descriptions(responses, personas_path, prompts_path)
    persona_map = {**responses.persona_descriptions, **(personas if isinstance(personas, Mapping) else {})}
    prompt_map = {**responses.prompt_texts, **(prompts if isinstance(prompts, Mapping) else {})}
    return expand_pairs(responses, persona_map, prompt_map, systems)


def _response_set(source: str | Path | ResponseSet | Sequence[Mapping[str, Any]], name: str) -> ResponseSet:
    if isinstance(source, ResponseSet):
        return source
    if isinstance(source, str | Path):
        return read_responses(source)
    responses = validate_responses(enumerate(source, start=1), name)
    if not responses.systems:
        raise InputError(name, [InputProblem(None, None, "no persona responses")])
    return responses


# --------------------------------------------------------------------------------------------- scores


@dataclass(frozen=True)
class _Judged:
    """One system's verdicts as flat arrays: prompt index, unordered pair index, F (NaN when missing)."""

    prompt: np.ndarray
    pair: np.ndarray
    fit: np.ndarray


def _key(verdict: Verdict) -> tuple[str, str, str, str]:
    meta = verdict.metadata
    if meta.get("kind") == KIND:
        system, prompt_id = meta.get("system"), meta.get("prompt_id")
        persona_p, persona_q = meta.get("persona_p"), meta.get("persona_q")
        if (isinstance(system, str) and isinstance(prompt_id, str) and isinstance(persona_p, str)
                and isinstance(persona_q, str)):
            return system, prompt_id, persona_p, persona_q
    parsed = parse_pair_id(verdict.id)
    if parsed is None:
        raise ValueError(f"verdict '{verdict.id}' is not a persona-fit verdict (no {KIND} metadata or id)")
    return parsed


def _group(verdicts: Iterable[Verdict]) -> dict[str, _Judged]:
    """Verdicts per system, coded as integers so that everything after this is numpy."""
    rows: dict[str, list[tuple[str, tuple[str, str, str], float]]] = {}
    seen: set[tuple[str, str, str, str]] = set()
    for verdict in verdicts:
        key = _key(verdict)
        if key in seen:
            raise ValueError(f"two verdicts for system '{key[0]}', prompt '{key[1]}', personas "
                             f"'{key[2]}' over '{key[3]}'")
        seen.add(key)
        system, prompt_id, persona_p, persona_q = key
        fit = np.nan if verdict.p_a is None else float(verdict.p_a)
        low, high = sorted((persona_p, persona_q))
        rows.setdefault(system, []).append((prompt_id, (prompt_id, low, high), fit))
    grouped = {}
    for system, entries in rows.items():
        prompt_codes: dict[str, int] = {}
        pair_codes: dict[tuple[str, ...], int] = {}
        prompt = np.array([prompt_codes.setdefault(p, len(prompt_codes)) for p, _, _ in entries], dtype=np.int64)
        pair = np.array([pair_codes.setdefault(k, len(pair_codes)) for _, k, _ in entries], dtype=np.int64)
        grouped[system] = _Judged(prompt=prompt, pair=pair, fit=np.array([f for _, _, f in entries]))
    return grouped


def _per_prompt(prompt: np.ndarray, values: np.ndarray, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of `values` per prompt (the statistic of any resample is Σ w·sum / Σ w·count)."""
    sums = np.bincount(prompt, weights=values, minlength=n_prompts)
    counts = np.bincount(prompt, minlength=n_prompts).astype(np.float64)
    return sums, counts


def _pair_differences(judged: _Judged, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F_pq + F_qp − 1 for each unordered pair judged in both directions, with the pair's prompt."""
    n_pairs = int(judged.pair.max()) + 1 if judged.pair.size else 0
    sums = np.bincount(judged.pair[usable], weights=judged.fit[usable], minlength=n_pairs)
    counts = np.bincount(judged.pair[usable], minlength=n_pairs)
    pair_prompt = np.zeros(n_pairs, dtype=np.int64)
    pair_prompt[judged.pair] = judged.prompt
    both = counts == 2
    return sums[both] - 1.0, pair_prompt[both]


def _interval(weights: np.ndarray | None, sums: np.ndarray, counts: np.ndarray) -> list[float] | None:
    """Percentile interval of Σ w·sum / Σ w·count over the resampled prompt weights."""
    if weights is None:
        return None
    totals = weights @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(totals > 0, (weights @ sums) / totals, np.nan)
    return percentile_interval(values)


def _mean(sums: np.ndarray, counts: np.ndarray) -> float | None:
    total = counts.sum()
    return float(sums.sum() / total) if total > 0 else None


def _system_fit(judged: _Judged, resamples: int, seed: int) -> dict[str, Any]:
    usable = np.isfinite(judged.fit)
    # Prompts without a single judged pair tell nothing; resampling them would only add empty draws.
    kept_prompts, prompt = np.unique(judged.prompt[usable], return_inverse=True)
    n_prompts = kept_prompts.shape[0]
    win_sums, win_counts = _per_prompt(prompt.reshape(-1), judged.fit[usable], n_prompts)
    differences, difference_prompt = _pair_differences(judged, usable)
    remap = np.full(int(judged.prompt.max()) + 1 if judged.prompt.size else 0, -1, dtype=np.int64)
    remap[kept_prompts] = np.arange(n_prompts)
    diff_sums, diff_counts = _per_prompt(remap[difference_prompt], differences, n_prompts)
    # One prompt (or none) gives no spread to resample: an interval of width 0 would claim certainty.
    weights = None
    if resamples > 0 and n_prompts >= 2:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(n_prompts, np.full(n_prompts, 1.0 / n_prompts), size=resamples).astype(np.float64)
    return {
        "persona_fit_win_rate": _mean(win_sums, win_counts),
        "persona_fit_ci95": _interval(weights, win_sums, win_counts),
        "pairwise_difference": _mean(diff_sums, diff_counts),
        "pairwise_difference_ci95": _interval(weights, diff_sums, diff_counts),
        "n_pairs": int(usable.sum()),
        "n_missing": int((~usable).sum()),
        "n_pair_differences": int(differences.shape[0]),
        "n_persona_fit_prompts": int(n_prompts),
    }


def empty_fit() -> dict[str, Any]:
    """The persona-fit entry of a system without any judged pair."""
    return {"persona_fit_win_rate": None, "persona_fit_ci95": None, "pairwise_difference": None,
            "pairwise_difference_ci95": None, "n_pairs": 0, "n_missing": 0, "n_pair_differences": 0,
            "n_persona_fit_prompts": 0}


def persona_fit(verdicts: Iterable[Verdict], resamples: int = DEFAULT_RESAMPLES,
                seed: int = DEFAULT_SEED) -> dict[str, dict[str, Any]]:
    """Persona-fit win rate and pairwise difference per system, with 95% bootstrap intervals.

    `verdicts` are judgments of `expand_pairs` items (recognised by their metadata, else their id).
    A verdict whose p_a is null (no call could be parsed) is left out and counted in `n_missing`.
    Each system's bootstrap uses a generator seeded with `seed` alone, so its interval does not
    depend on which other systems are in the file. Raises ValueError on a verdict of another kind or
    two verdicts of the same pair.
    """
    return {system: _system_fit(judged, resamples, seed) for system, judged in _group(verdicts).items()}
