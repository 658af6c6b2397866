"""SPEC 6 (DEGRESS, EGISES, EDP, PerSEval) written from the spec alone, in the simplest pure
Python (dictionaries, loops, math.log2): it shares no code with calibration.personalization.
tests/test_personalization.py checks the library against it to 1e-9; `python -m bench
personalization` times the library against it."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

METRICS = ("degress", "egises", "edp", "perseval", "distance_to_reference")


def simple_tokens(text: str) -> list[str]:
    text = re.sub(r"[^\w\s]", "", text)
    text = re.sub(r"\d", "", text.lower())
    return text.split()


def simple_round(value: float) -> float:
    """4 decimals, half to even on the value snapped to 12 decimals (the documented rounding rule)."""
    snapped = Decimal(round(value * 10**12)).scaleb(-12)
    return float(snapped.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))


def simple_jsd(text_a: str, text_b: str) -> float | None:
    """Jensen–Shannon divergence, base 2, of the two unigram distributions; None when undefined."""
    tokens_a, tokens_b = simple_tokens(text_a), simple_tokens(text_b)
    if not tokens_a or not tokens_b:
        return None
    count_a, count_b = Counter(tokens_a), Counter(tokens_b)
    divergence_a = divergence_b = 0.0
    for word in set(count_a) | set(count_b):
        p = count_a[word] / len(tokens_a)
        q = count_b[word] / len(tokens_b)
        m = (p + q) / 2
        if p > 0:
            divergence_a += p * math.log2(p / m)
        if q > 0:
            divergence_b += q * math.log2(q / m)
    return simple_round((divergence_a + divergence_b) / 2)


def sigmoid(x: float, alpha: float, beta: float) -> float:
    return 1 / (1 + 10**alpha * math.exp(-(10**beta) * x))


def anchored(values: dict[str, float | None], to_anchor: float | None) -> dict[str, float | None]:
    """w_k · value_k with w = softmax over k of value_k / σ(G_j, D) (ratio 0 when it cannot be formed)."""
    ratios = {}
    for k, value in values.items():
        usable = value is not None and to_anchor is not None and to_anchor != 0
        ratios[k] = value / to_anchor if usable else 0.0
    top = max(ratios.values())
    exps = {k: math.exp(r - top) for k, r in ratios.items()}
    total = sum(exps.values())
    return {k: None if values[k] is None else exps[k] / total * values[k] for k in values}


def straightforward_scores(lines: list[dict[str, Any]], anchor_system: str | None = None,
                           sigma: Callable[[str, str], float | None] = simple_jsd) -> dict[str, Any]:
    prompts: dict[str, dict[str, Any]] = {}
    for line in lines:
        prompt = prompts.setdefault(line["prompt_id"], {"personas": [], "refs": {}, "resp": {}, "anchor": {}})
        if line["persona_id"] is None:
            prompt["anchor"][line["system"]] = line["response"]
            continue
        if line["persona_id"] not in prompt["personas"]:
            prompt["personas"].append(line["persona_id"])
        if line.get("reference") is not None:
            prompt["refs"][line["persona_id"]] = line["reference"]
        prompt["resp"].setdefault(line["system"], {})[line["persona_id"]] = line["response"]

    per_system: dict[str, dict[str, list[float]]] = {}
    skipped: dict[str, int] = {}
    personas_out: dict[tuple[str, str, str], dict[str, float]] = {}
    for prompt_id, prompt in prompts.items():
        kept = [j for j in prompt["personas"] if j in prompt["refs"] and simple_tokens(prompt["refs"][j])]
        for system, responses in prompt["resp"].items():
            sums = per_system.setdefault(system, {m: [] for m in METRICS})
            skipped.setdefault(system, 0)
            if len(kept) < 2:
                skipped[system] += 1
                continue
            refs = {j: prompt["refs"][j] for j in kept}
            degress = {}
            for j in kept:
                x = {k: sigma(refs[j], refs[k]) for k in kept if k != j}
                y = {k: sigma(responses[j], responses[k]) for k in kept if k != j}
                if anchor_system is not None:
                    document = prompt["anchor"][anchor_system]
                    x = anchored(x, sigma(refs[j], document))
                    y = anchored(y, sigma(responses[j], document))
                terms = []
                for k in x:
                    if x[k] is None or y[k] is None:
                        terms.append(0.0)
                    else:
                        terms.append((min(x[k], y[k]) + 1e-5) / (max(x[k], y[k]) + 1e-5))
                degress[j] = sum(terms) / len(terms)
            accuracy = {}
            for j in kept:
                a = sigma(responses[j], refs[j])
                accuracy[j] = 1.0 if a is None else a
            a_min = min(accuracy.values())
            a_mean = sum(accuracy.values()) / len(accuracy)
            adp = sigmoid(a_min / (1 - a_min + 1e-7), 4, 1)
            edp = {}
            for j in kept:
                acp = sigmoid((accuracy[j] - a_min) / (a_mean - a_min + 1e-7), 4, 1)
                edp[j] = 1 - sigmoid(acp + adp, 3, 1) + 1e-7
                personas_out[(prompt_id, system, j)] = {"degress": degress[j], "edp": edp[j],
                                                        "acp": acp, "distance_to_reference": accuracy[j]}
            n = len(kept)
            sums["degress"].append(sum(degress.values()) / n)
            sums["egises"].append(1 - sum(degress.values()) / n)
            sums["edp"].append(sum(edp.values()) / n)
            sums["perseval"].append(sum(degress[j] * edp[j] for j in kept) / n)
            sums["distance_to_reference"].append(sum(accuracy.values()) / n)

    systems = {}
    for system, sums in per_system.items():
        scores: dict[str, Any] = {"n_prompts": len(sums["degress"]), "n_skipped": skipped[system]}
        for metric in METRICS:
            scores[metric] = sum(sums[metric]) / len(sums[metric]) if sums[metric] else None
        systems[system] = scores
    return {"systems": systems, "personas": personas_out}
