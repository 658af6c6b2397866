"""The SPEC 4 report: every statistic of a list of verdicts in one JSON-serialisable dict.

Used alike by `pjudge report`, the HTTP API and the demo, so that a number means the same everywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.agreement import agreement_table, cohen_kappa, counts, judge_human_alpha
from calibration.bias import (
    first_position_rate,
    length_counts,
    position_consistency,
    position_counts,
    prefers_longer,
)
from calibration.certainty import brier, certainty_split, coverage_auc, coverage_curve, reliability
from calibration.hitl import hitl as hitl_stats
from calibration.risk import risk_control as risk_stats
from calibration.table import NAMES, VerdictTable, build_table, ratio
from judge.jsonl import gc_paused
from judge.records import Verdict

DEFAULT_DELTA = 0.1  # Jung et al. 2024's delta, used when only a target accuracy is given
MISSING_GROUP = "(missing)"
BOOTSTRAP_METHOD = "percentile; items resampled with replacement (multinomial on the judge x human table)"


def statistics(
    table: VerdictTable,
    threshold: float = 0.8,
    hitl: float = 0.2,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The SPEC 4 numbers of one set of verdicts (no by_group), followed by extra keys."""
    c = counts(table)
    high, low = certainty_split(table, threshold)
    ece, reliability_table = reliability(table)
    out: dict[str, Any] = {
        "accuracy": ratio(c["correct"], c["labelled"]),
        "accuracy_no_tie": ratio(c["correct_no_tie"], c["decided"]),
        "counts": c,
        "cohen_kappa": cohen_kappa(table, bootstrap_resamples, seed),
        "krippendorff_alpha": judge_human_alpha(table, bootstrap_resamples, seed),
        "high_certainty": high,
        "low_certainty": low,
        "coverage_curve": coverage_curve(table),
        "ece": ece,
        "brier": brier(table),
        "position_consistency": position_consistency(table),
        "first_position_rate": first_position_rate(table),
        "prefers_longer": prefers_longer(table),
        "hitl": hitl_stats(table, hitl, bootstrap_resamples, seed),
    }
    if target_accuracy is not None:
        out["risk_control"] = risk_stats(
            table, target_accuracy, DEFAULT_DELTA if delta is None else delta
        )
    # Extras, beyond SPEC 4's keys.
    out["coverage_auc"] = coverage_auc(table)
    out["reliability"] = reliability_table
    out["first_position"] = position_counts(table)
    out["length"] = length_counts(table)
    out["abstention"] = _abstention(table)
    out["confusion"] = _confusion(table)
    return out


def _abstention(t: VerdictTable) -> dict[str, Any]:
    """How the profile's own certainty threshold did: decided items it kept, and their accuracy."""
    kept = t.decided & ~t.abstained
    return {
        "abstained": int(t.abstained.sum()),
        "coverage": ratio(kept.sum(), t.decided.sum()),
        "accuracy": ratio((kept & t.correct).sum(), kept.sum()),
    }


def _confusion(t: VerdictTable) -> dict[str, dict[str, int]]:
    """Judge winner (outer key) x human label (inner key) over labelled items with a winner."""
    table = agreement_table(t)
    return {judge: {human: int(table[i, j]) for j, human in enumerate(NAMES)} for i, judge in enumerate(NAMES)}


def group_key(value: Any) -> str:
    """A metadata value as a JSON object key: strings as they are, other values as JSON."""
    if value is None:
        return MISSING_GROUP
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def build_report(
    verdicts: Sequence[Verdict],
    threshold: float = 0.8,
    hitl: float = 0.2,
    group_by: str | None = None,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every SPEC 4 statistic of `verdicts` (by_group when `group_by` names a metadata key,
    risk_control when `target_accuracy` is given; delta defaults to 0.1), plus extras: `simulated`
    (true when any judge model starts with "sim-"), `models`, the bootstrap settings, the full
    reliability table, coverage_auc, position and length counts, abstention, the confusion table.
    Values are JSON-serialisable and never NaN (undefined = None)."""
    with gc_paused():
        table = build_table(verdicts)
    options = {
        "threshold": threshold,
        "hitl": hitl,
        "target_accuracy": target_accuracy,
        "delta": delta,
        "bootstrap_resamples": bootstrap_resamples,
        "seed": seed,
    }
    report = statistics(table, **options)
    if group_by is not None:
        codes: dict[str, list[int]] = {}
        seen: dict[tuple[type, Any], str] = {}  # json.dumps once per distinct value, not per verdict
        for row, v in enumerate(verdicts):
            value = v.metadata.get(group_by)
            try:
                key = seen.get((type(value), value))
                if key is None:
                    key = seen[(type(value), value)] = group_key(value)
            except TypeError:  # unhashable (list, dict): no cache
                key = group_key(value)
            codes.setdefault(key, []).append(row)
        report["by_group"] = {
            key: statistics(table.subset(np.asarray(codes[key])), **options) for key in sorted(codes)
        }
        report["group_by"] = group_by
    report["simulated"] = bool(table.simulated.any())
    report["models"] = sorted({v.judge.model for v in verdicts})
    report["bootstrap"] = {"resamples": bootstrap_resamples, "seed": seed, "method": BOOTSTRAP_METHOD}
    return json_safe(report)


def json_safe(value: Any) -> Any:
    """Plain Python types only, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
