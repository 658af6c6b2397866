"""The SPEC 4 report of a list of verdicts (`pjudge report`, the demo, the API's fallbacks).

The verdicts become columns (calibration.table), their per-group Counts (calibration.counts: the
same projection the service applies when it stores a verdict) and then the report
(calibration.from_counts.report_from_counts: the same function the service's SQL path calls), so
that a number means the same everywhere by construction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from calibration.certainty import coverage_auc, split_counts
from calibration.cost import cost_of_verdicts
from calibration.counts import Rows, grid_index, project
from calibration.from_counts import BOOTSTRAP_METHOD, DEFAULT_DELTA, json_safe, report_from_counts
from calibration.hitl import resolve_cuts
from calibration.stages import Then, stage_report
from calibration.table import build_table
from judge.jsonl import gc_paused
from judge.records import Verdict

MISSING_GROUP = "(missing)"
__all__ = ["BOOTSTRAP_METHOD", "DEFAULT_DELTA", "MISSING_GROUP", "build_report", "group_key", "json_safe"]


def group_key(value: Any) -> str:
    """A metadata value as a JSON object key: strings as they are, other values as JSON."""
    if value is None:
        return MISSING_GROUP
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _group_codes(verdicts: Sequence[Verdict], group_by: str) -> tuple[list[str], np.ndarray]:
    """(sorted group names, each verdict's index into them)."""
    keys: list[str] = []
    seen: dict[tuple[type, Any], str] = {}  # json.dumps once per distinct value, not per verdict
    for v in verdicts:
        value = v.metadata.get(group_by)
        try:
            key = seen.get((type(value), value))
            if key is None:
                key = seen[(type(value), value)] = group_key(value)
        except TypeError:  # unhashable (list, dict): no cache
            key = group_key(value)
        keys.append(key)
    names = sorted(set(keys))
    index = {name: i for i, name in enumerate(names)}
    return names, np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))


def build_report(
    verdicts: Sequence[Verdict],
    threshold: float = 0.8,
    hitl: float = 0.2,
    group_by: str | None = None,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    cascade_then: Then = "human",
) -> dict[str, Any]:
    """Every SPEC 4 statistic of `verdicts` (see calibration.from_counts.report_from_counts), plus
    coverage_auc, which needs every verdict's certainty, the `cost` section (calibration.cost), and
    for a cascade's verdicts `cascade_stages` (calibration.stages; `cascade_then`: the cascade's
    `then`, which decides whether its escalated items wait for a label)."""
    with gc_paused():
        table = build_table(verdicts)
    rows = Rows.of(table)
    risk = target_accuracy is not None
    total = project(rows, risk=risk)[0]
    members: dict[str | None, np.ndarray | None] = {None: None}
    by_group = None
    auc: dict[str | None, float | None] = {None: coverage_auc(table)}
    off_grid = grid_index(threshold) is None
    if off_grid:
        total.split = split_counts(table, threshold)[0]
    if group_by is not None:
        names, codes = _group_codes(verdicts, group_by)
        grouped = project(rows, codes, len(names), risk=risk)
        splits = split_counts(table, threshold, codes, len(names)) if off_grid else None
        by_group = {}
        for g, name in enumerate(names):
            member_rows = np.flatnonzero(codes == g)
            members[name] = member_rows
            auc[name] = coverage_auc(table.subset(member_rows))
            if splits is not None:
                grouped[g].split = splits[g]
            by_group[name] = grouped[g]
    report = report_from_counts(
        total, resolve_cuts(table, members), (v.judge.model for v in verdicts), by_group=by_group,
        group_by=group_by, threshold=threshold, hitl=hitl, target_accuracy=target_accuracy, delta=delta,
        bootstrap_resamples=bootstrap_resamples, seed=seed, coverage_auc=auc)
    stages = stage_report(verdicts, cascade_then)
    if stages is not None:  # a single judge's report keeps exactly its keys
        report["cascade_stages"] = json_safe(stages)
    report["cost"] = cost_of_verdicts(verdicts)
    return report
