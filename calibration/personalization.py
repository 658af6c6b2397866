"""Degree of personalization from text distances: DEGRESS, EGISES, ACP, ADP, EDP and PerSEval (SPEC 6).

For one prompt with personas j ≠ k, reference u_j (the persona's own text), a system's response s_j and
a distance σ:
- X_jk = σ(u_j, u_k), Y_jk = σ(s_j, s_k) (simplified variant); with an anchor document D (the anchor
  system's persona-agnostic response) both are weighted by w_jk = softmax over k of σ(G_j, G_k) / σ(G_j, D).
- DEGRESS_j = mean_k (min(X, Y) + 1e-5) / (max(X, Y) + 1e-5); EGISES = 1 − DEGRESS.
- a_j = σ(s_j, u_j); ACP_j, ADP and EDP_j penalise inaccurate responses; PerSEval = DEGRESS · EDP.
Per-prompt values are means over personas; a system's values are means over its prompts.

Everything is computed on flat numpy arrays: one row per (prompt, system, persona) and one row per
ordered persona pair, grouped contiguously, so that a corpus of thousands of prompts takes seconds.

Where SPEC 6 leaves room, the choices are:
- a reference without any token counts as no reference: that persona is left out of the prompt;
- an undefined Y_jk (a response without any token) makes the pair's DEGRESS term 0, the worst value,
  as an undefined a_j counts as 1, the worst distance; in the softmax its ratio counts as 0;
- a ratio σ(G_j, G_k)/σ(G_j, D) whose denominator is 0 or undefined is 0 (the softmax still weighs it);
- weighted X and Y are not rounded (σ itself is, by the distance);
- the anchor D of a prompt is the `anchor_system`'s persona-agnostic response, the same D for X and Y;
  without `anchor_system` the simplified variant is used even when persona-agnostic lines exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibration.personalization_distances import (
    TextDistance,
    distance_names,
    get_distance,
    is_empty_text,
    register_distance,
    tokenize,
)
from calibration.personalization_io import PromptResponses, ResponseSet, read_responses, validate_responses
from judge.jsonl import InputError, InputProblem

__all__ = [
    "PersonalizationReport",
    "SystemScores",
    "TextDistance",
    "distance_names",
    "evaluate",
    "evaluate_file",
    "get_distance",
    "perseval_sigmoid",
    "read_responses",
    "register_distance",
    "tokenize",
    "validate_responses",
]

PROPORTION_EPSILON = 1e-5  # DEGRESS: (min + ε) / (max + ε)
EDP_EPSILON = 1e-7  # ACP, ADP denominators and the EDP offset
ACP_ALPHA, ACP_BETA = 4.0, 1.0
ADP_ALPHA, ADP_BETA = 4.0, 1.0
EDP_ALPHA, EDP_BETA = 3.0, 1.0
UNDEFINED_ACCURACY = 1.0  # an undefined a_j counts as the largest distance


def perseval_sigmoid(x: np.ndarray | float, alpha: float, beta: float) -> np.ndarray:
    """S_{α,β}(x) = 1 / (1 + 10^α · e^(−10^β · x)); x ≥ 0 here, so the exponential cannot overflow."""
    sigmoid: np.ndarray = 1.0 / (1.0 + 10.0**alpha * np.exp(-(10.0**beta) * np.asarray(x, dtype=np.float64)))
    return sigmoid


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SystemScores:
    system: str
    n_prompts: int
    n_skipped: int
    degress: float | None
    egises: float | None
    edp: float | None
    perseval: float | None
    distance_to_reference: float | None  # mean a_j: how far responses are from the persona's reference
    skipped_prompts: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_prompts": self.n_prompts,
            "n_skipped": self.n_skipped,
            "degress": self.degress,
            "egises": self.egises,
            "edp": self.edp,
            "perseval": self.perseval,
            "distance_to_reference": self.distance_to_reference,
        }


@dataclass(frozen=True)
class PersonalizationReport:
    """Scores per system, per (prompt, system) and per (prompt, system, persona).

    Per-prompt and per-persona scores are kept as arrays (`prompt_*`, `persona_*`) and turned into
    dictionaries only on request, so large corpora stay cheap.
    """

    distance: str
    anchor_system: str | None
    systems: dict[str, SystemScores]
    # one entry per evaluated (prompt, system)
    prompt_ids: list[str]
    prompt_systems: list[str]
    prompt_n_personas: np.ndarray
    prompt_degress: np.ndarray
    prompt_adp: np.ndarray
    prompt_edp: np.ndarray
    prompt_perseval: np.ndarray
    prompt_distance_to_reference: np.ndarray
    # one entry per evaluated (prompt, system, persona); persona_prompt indexes the per-prompt arrays
    persona_prompt: np.ndarray
    persona_ids: list[str]
    persona_degress: np.ndarray
    persona_distance_to_reference: np.ndarray
    persona_acp: np.ndarray
    persona_edp: np.ndarray

    @property
    def variant(self) -> str:
        return "simplified" if self.anchor_system is None else "anchored"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `pjudge personalization --format json`."""
        return {
            "distance": self.distance,
            "variant": self.variant,
            "anchor_system": self.anchor_system,
            "systems": {name: scores.as_dict() for name, scores in self.systems.items()},
        }

    def prompt_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "prompt_id": self.prompt_ids[i],
                "system": self.prompt_systems[i],
                "n_personas": int(self.prompt_n_personas[i]),
                "degress": float(self.prompt_degress[i]),
                "egises": float(1.0 - self.prompt_degress[i]),
                "adp": float(self.prompt_adp[i]),
                "edp": float(self.prompt_edp[i]),
                "perseval": float(self.prompt_perseval[i]),
                "distance_to_reference": float(self.prompt_distance_to_reference[i]),
            }
            for i in range(len(self.prompt_ids))
        ]

    def persona_rows(self) -> list[dict[str, Any]]:
        rows = []
        for i, block in enumerate(self.persona_prompt.tolist()):
            degress = float(self.persona_degress[i])
            edp = float(self.persona_edp[i])
            rows.append({
                "prompt_id": self.prompt_ids[block],
                "system": self.prompt_systems[block],
                "persona_id": self.persona_ids[i],
                "degress": degress,
                "egises": 1.0 - degress,
                "distance_to_reference": float(self.persona_distance_to_reference[i]),
                "acp": float(self.persona_acp[i]),
                "adp": float(self.prompt_adp[block]),
                "edp": edp,
                "perseval": degress * edp,
            })
        return rows

    def to_markdown(self) -> str:
        title = f"Degree of personalization ({self.distance}, {self.variant}"
        title += f", anchor system '{self.anchor_system}')" if self.anchor_system else ")"
        lines = [f"## {title}", "",
                 "| rank | system | prompts | skipped | DEGRESS | EGISES | EDP | PerSEval | σ(response, reference) |",
                 "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        ranked = sorted(self.systems.values(),
                        key=lambda s: (s.perseval is None, -(s.perseval or 0.0)))
        for rank, scores in enumerate(ranked, start=1):
            cells = [_fmt(v) for v in (scores.degress, scores.egises, scores.edp, scores.perseval,
                                       scores.distance_to_reference)]
            lines.append(f"| {rank} | {scores.system} | {scores.n_prompts} | {scores.n_skipped} | "
                         + " | ".join(cells) + " |")
        lines += ["", "Ranked by PerSEval (higher = more personalized while accurate). Means over prompts "
                  "of per-prompt means over personas; prompts with fewer than 2 personas with a reference "
                  "are skipped."]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


# --------------------------------------------------------------------------------------------- planning


class _TextPool:
    """Distinct texts get one index each; the distance prepares each distinct text once."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.texts: list[str] = []
        self.empty: list[bool] = []

    def add(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.texts)
            self.texts.append(text)
            self.empty.append(is_empty_text(text))
        return found


@dataclass
class _Plan:
    """Rows (prompt, system, persona) grouped by block (prompt, system), blocks in prompt order."""

    row_reference: list[int] = field(default_factory=list)
    row_response: list[int] = field(default_factory=list)
    row_persona: list[str] = field(default_factory=list)
    block_size: list[int] = field(default_factory=list)
    block_anchor: list[int] = field(default_factory=list)  # text index, -1 without anchor
    block_prompt: list[str] = field(default_factory=list)
    block_system: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)


def _kept_personas(prompt: PromptResponses, pool: _TextPool) -> list[str]:
    """Personas with a reference that has at least one token (an empty one tells nothing of the persona)."""
    kept = []
    for persona in prompt.personas:
        reference = prompt.references.get(persona)
        if reference is not None and not pool.empty[pool.add(reference)]:
            kept.append(persona)
    return kept


def _plan(responses: ResponseSet, pool: _TextPool, anchor_system: str | None) -> _Plan:
    plan = _Plan(skipped={system: [] for system in responses.systems})
    missing_anchor: list[InputProblem] = []
    for prompt in responses.prompts:
        if not prompt.responses:
            continue  # only persona-agnostic lines: nothing to evaluate
        kept = _kept_personas(prompt, pool)
        if len(kept) < 2:
            for system in prompt.responses:
                plan.skipped[system].append(prompt.prompt_id)
            continue
        anchor = -1
        if anchor_system is not None:
            if anchor_system not in prompt.anchors:
                missing_anchor.append(InputProblem(
                    prompt.first_line, "persona_id",
                    f"prompt '{prompt.prompt_id}' has no persona-agnostic response (persona_id null) "
                    f"from anchor system '{anchor_system}'"))
                continue
            anchor = pool.add(prompt.anchors[anchor_system])
        references = [pool.add(prompt.references[persona]) for persona in kept]
        for system, answers in prompt.responses.items():
            plan.row_reference.extend(references)
            plan.row_response.extend(pool.add(answers[persona]) for persona in kept)
            plan.row_persona.extend(kept)
            plan.block_size.append(len(kept))
            plan.block_anchor.append(anchor)
            plan.block_prompt.append(prompt.prompt_id)
            plan.block_system.append(system)
    if missing_anchor:
        raise InputError(responses.source, missing_anchor)
    return plan


def _check_anchor_system(responses: ResponseSet, anchor_system: str) -> None:
    if anchor_system not in responses.anchor_systems():
        known = ", ".join(repr(s) for s in responses.anchor_systems()) or "none"
        raise InputError(responses.source, [InputProblem(
            None, "system",
            f"anchor system '{anchor_system}' has no persona-agnostic response (persona_id null); "
            f"systems with one: {known}")])


# --------------------------------------------------------------------------------------------- kernels


class _Sigma:
    """Distances between pooled texts, each distinct pair computed once, NaN when a text is empty."""

    def __init__(self, measure: TextDistance, pool: _TextPool):
        self.measure = measure
        self.prepared = measure.prepare(pool.texts)
        self.empty = np.asarray(pool.empty, dtype=bool)

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        n = max(self.empty.shape[0], 1)
        if self.measure.symmetric:
            left, right = np.minimum(left, right), np.maximum(left, right)
        unique, inverse = np.unique(left * n + right, return_inverse=True)
        unique_left, unique_right = unique // n, unique % n
        values = np.asarray(self.measure.between(self.prepared, unique_left, unique_right), dtype=np.float64)
        values[self.empty[unique_left] | self.empty[unique_right]] = np.nan
        return values[inverse.reshape(-1)]


def _softmax_weighted(values: np.ndarray, to_anchor: np.ndarray, starts: np.ndarray,
                      counts: np.ndarray) -> np.ndarray:
    """w · values with w = softmax over each group of σ(G_j, G_k)/σ(G_j, D).

    `to_anchor` is σ(G_j, D) repeated for every pair of row j; groups are contiguous (`starts`,
    `counts`). A ratio with an undefined numerator or a zero/undefined denominator is 0.
    """
    usable = np.isfinite(values) & np.isfinite(to_anchor) & (to_anchor != 0)
    ratio = np.zeros_like(values)
    ratio[usable] = values[usable] / to_anchor[usable]
    # Subtracting each group's maximum keeps exp finite (ratios reach 10^4 when σ(G_j, D) = 0.0001).
    shifted = np.exp(ratio - np.repeat(np.maximum.reduceat(ratio, starts), counts))
    weights = shifted / np.repeat(np.add.reduceat(shifted, starts), counts)
    weighted: np.ndarray = weights * values
    return weighted


def _pairs(block_size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (j, k), j ≠ k, within every block, grouped by j.

    Returns the row index of j and of k for every pair, and the first pair and pair count of each row.
    """
    block_start = np.cumsum(block_size) - block_size
    row_block = np.repeat(np.arange(block_size.shape[0]), block_size)
    rows = np.arange(row_block.shape[0])
    others = block_size[row_block] - 1
    pair_start = np.cumsum(others) - others
    left = np.repeat(rows, others)
    offset = np.arange(left.shape[0]) - np.repeat(pair_start, others)  # 0 .. n-2 within row j
    local_j = np.repeat(rows - block_start[row_block], others)
    local_k = offset + (offset >= local_j)  # skip k == j
    right = np.repeat(block_start[row_block], others) + local_k
    return left, right, pair_start, others


# --------------------------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class _Scores:
    """Per-block (prompt, system) and per-row (prompt, system, persona) results of the kernels."""

    size: np.ndarray
    row_block: np.ndarray
    degress: np.ndarray  # per row
    accuracy: np.ndarray  # per row: a_j, undefined counted as 1
    acp: np.ndarray  # per row
    edp: np.ndarray  # per row
    adp: np.ndarray  # per block

    def block_mean(self, values: np.ndarray) -> np.ndarray:
        if not self.size.shape[0]:
            return np.zeros(0)
        means: np.ndarray = np.add.reduceat(values, np.cumsum(self.size) - self.size) / self.size
        return means


def _score(plan: _Plan, sigma: _Sigma, anchored: bool) -> _Scores:
    size = np.asarray(plan.block_size, dtype=np.int64)
    block_start = np.cumsum(size) - size
    row_block = np.repeat(np.arange(size.shape[0]), size)
    reference = np.asarray(plan.row_reference, dtype=np.int64)
    response = np.asarray(plan.row_response, dtype=np.int64)
    left, right, pair_start, others = _pairs(size)

    # DEGRESS: how the distance between two personas' responses compares with the distance between
    # their references, per ordered pair (j, k), averaged over k.
    x = sigma(reference[left], reference[right])
    y = sigma(response[left], response[right])
    if anchored:
        anchor = np.asarray(plan.block_anchor, dtype=np.int64)[row_block]
        x = _softmax_weighted(x, sigma(reference, anchor)[left], pair_start, others)
        y = _softmax_weighted(y, sigma(response, anchor)[left], pair_start, others)
    defined = np.isfinite(x) & np.isfinite(y)
    proportion = np.zeros_like(x)  # an undefined pair counts as no personalization at all
    proportion[defined] = ((np.minimum(x[defined], y[defined]) + PROPORTION_EPSILON)
                           / (np.maximum(x[defined], y[defined]) + PROPORTION_EPSILON))
    degress = np.add.reduceat(proportion, pair_start) / others

    # EDP: accuracy a_j and its inconsistency (ACP) and drop (ADP) penalties within each block.
    accuracy = sigma(response, reference)
    accuracy[~np.isfinite(accuracy)] = UNDEFINED_ACCURACY
    a_min = np.minimum.reduceat(accuracy, block_start)
    a_mean = np.add.reduceat(accuracy, block_start) / size
    acp = perseval_sigmoid((accuracy - a_min[row_block]) / (a_mean - a_min + EDP_EPSILON)[row_block],
                           ACP_ALPHA, ACP_BETA)
    adp = perseval_sigmoid(a_min / (1.0 - a_min + EDP_EPSILON), ADP_ALPHA, ADP_BETA)
    edp = 1.0 - perseval_sigmoid(acp + adp[row_block], EDP_ALPHA, EDP_BETA) + EDP_EPSILON
    return _Scores(size=size, row_block=row_block, degress=degress, accuracy=accuracy, acp=acp, edp=edp,
                   adp=adp)


def _no_scores() -> _Scores:
    empty = np.zeros(0)
    return _Scores(size=np.zeros(0, dtype=np.int64), row_block=np.zeros(0, dtype=np.int64), degress=empty,
                   accuracy=empty, acp=empty, edp=empty, adp=empty)


def evaluate(responses: ResponseSet, distance: str | TextDistance = "jsd",
             anchor_system: str | None = None) -> PersonalizationReport:
    """SPEC 6 for every system of `responses`; the anchored variant when `anchor_system` is given."""
    measure = get_distance(distance) if isinstance(distance, str) else distance
    if anchor_system is not None:
        _check_anchor_system(responses, anchor_system)
    pool = _TextPool()
    plan = _plan(responses, pool, anchor_system)
    if plan.block_size:
        scores = _score(plan, _Sigma(measure, pool), anchored=anchor_system is not None)
    else:  # every prompt skipped
        scores = _no_scores()
    prompt_degress = scores.block_mean(scores.degress)
    prompt_edp = scores.block_mean(scores.edp)
    prompt_perseval = scores.block_mean(scores.degress * scores.edp)
    prompt_accuracy = scores.block_mean(scores.accuracy)
    systems = _system_scores(responses.systems, plan, prompt_degress, prompt_edp, prompt_perseval,
                             prompt_accuracy)
    return PersonalizationReport(
        distance=measure.name, anchor_system=anchor_system, systems=systems,
        prompt_ids=plan.block_prompt, prompt_systems=plan.block_system, prompt_n_personas=scores.size,
        prompt_degress=prompt_degress, prompt_adp=scores.adp, prompt_edp=prompt_edp,
        prompt_perseval=prompt_perseval, prompt_distance_to_reference=prompt_accuracy,
        persona_prompt=scores.row_block, persona_ids=plan.row_persona, persona_degress=scores.degress,
        persona_distance_to_reference=scores.accuracy, persona_acp=scores.acp, persona_edp=scores.edp,
    )


def _system_scores(system_names: Sequence[str], plan: _Plan, degress: np.ndarray, edp: np.ndarray,
                   perseval: np.ndarray, accuracy: np.ndarray) -> dict[str, SystemScores]:
    """Means over each system's evaluated prompts; None for a system whose prompts were all skipped."""
    code = {name: i for i, name in enumerate(system_names)}
    block_system = np.asarray([code[name] for name in plan.block_system], dtype=np.int64)
    counts = np.bincount(block_system, minlength=len(code))

    def means(values: np.ndarray) -> list[float | None]:
        sums = np.bincount(block_system, weights=values, minlength=len(code))
        return [float(total / count) if count else None for total, count in zip(sums, counts, strict=True)]

    mean_degress, mean_edp = means(degress), means(edp)
    mean_perseval, mean_accuracy = means(perseval), means(accuracy)
    result = {}
    for name, i in code.items():
        degress_i = mean_degress[i]
        result[name] = SystemScores(
            system=name, n_prompts=int(counts[i]), n_skipped=len(plan.skipped[name]),
            degress=degress_i, egises=None if degress_i is None else 1.0 - degress_i,
            edp=mean_edp[i], perseval=mean_perseval[i], distance_to_reference=mean_accuracy[i],
            skipped_prompts=tuple(plan.skipped[name]),
        )
    return result


def evaluate_file(path: str | Path, distance: str | TextDistance = "jsd",
                  anchor_system: str | None = None) -> PersonalizationReport:
    return evaluate(read_responses(path), distance=distance, anchor_system=anchor_system)
