"""Per-stage report of a cascade's verdicts (SPEC 2.1; issue 14, point 5): how many items reached
each stage, how many it accepted, its accuracy on the labelled accepted ones with a 95%
Clopper–Pearson interval, its cost; the escalated items and the human queue; the cascade's cost
per item against running its last stage alone on every item.

One home for these numbers: `pjudge report` (calibration.report.build_report) and the API's job
report (which streams the verdict columns without the calls, store.queue.stage_verdicts) both call
`stage_report`. It reads only Verdict fields (stage, stages, winner, abstained, bpde, human_label),
one verdict at a time, so a job's verdicts need never be held in memory.

The human queue's rule is `awaits_label` here and store.queue.waiting_condition in SQL: an item
waits when its verdict abstained (escalated by a cascade, or under a single profile's certainty
threshold) and it has no human label, except a cascade's escalated items when the cascade's `then`
is "abstain". Order: highest BPDE first, a null BPDE (no call parsed) above every number, ties in
input order — the order of the HITL selection (SPEC 3.3, calibration.hitl.hitl_selection).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from calibration.from_counts import clopper_pearson_interval
from judge.records import Verdict

Then = Literal["human", "abstain"]
QUEUE_TOP = 10  # queue entries a report lists (the API's /queue pages through all of them)


def awaits_label(verdict: Verdict, then: Then = "human") -> bool:
    """Whether the item waits in the human queue (see the module docstring)."""
    if not verdict.abstained or verdict.human_label is not None:
        return False
    escalated = verdict.stages is not None and verdict.stage is None
    return not (escalated and then == "abstain")


def queue_key(bpde: float | None, position: int) -> tuple[int, float, int]:
    """Sort key of the human queue: a null BPDE first, then highest BPDE, ties by input position."""
    if bpde is None or math.isnan(bpde):
        return (0, 0.0, position)
    return (1, -bpde, position)


@dataclass
class _Stage:
    profiles: dict[str, None] = field(default_factory=dict)  # distinct values in the order seen
    providers: dict[str, None] = field(default_factory=dict)
    models: dict[str, None] = field(default_factory=dict)
    reached: int = 0
    accepted: int = 0
    labelled: int = 0  # accepted and labelled
    correct: int = 0
    cost: float = 0.0


def _joined(values: dict[str, None]) -> str | None:
    return " | ".join(values) if values else None


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _accuracy(correct: int, labelled: int) -> dict[str, Any]:
    lo, hi = clopper_pearson_interval(correct, labelled)
    return {"labelled": labelled, "correct": correct, "accuracy": _ratio(correct, labelled),
            "ci95": None if labelled == 0 else [lo, hi]}


def _queue_entry(v: Verdict) -> dict[str, Any]:
    return {"id": v.id, "bpde": v.bpde, "winner": v.winner, "p_a": v.p_a,
            "certainty": v.certainty, "stage": v.stage}


def stage_report(verdicts: Iterable[Verdict], then: Then = "human",
                 top: int = QUEUE_TOP) -> dict[str, Any] | None:
    """The `cascade_stages` section of a report, over the verdicts that carry `stages` (in input
    order); None when none does (a single judge's verdicts: its report has no such section).

    Per stage k (0-based): `reached` = verdicts with more than k stages, `accepted` = verdicts whose
    `stage` is k, accuracy = accepted labelled verdicts whose stage-k winner equals the label (a tie
    label counts as wrong) with a two-sided 95% Clopper–Pearson interval, `cost_usd` = the sum of
    the stage's `cost_usd` over the items it reached. `cost.last_stage_alone` is an estimate: the
    last stage's mean cost per item it judged times the items."""
    stages: list[_Stage] = []
    items = escalated = escalated_labelled = waiting = 0
    total_cost = 0.0
    heap: list[tuple[tuple[int, float, int], int, Verdict]] = []  # the `top` best by queue_key, as a max-heap
    for position, v in enumerate(verdicts):
        if v.stages is None:
            continue
        items += 1
        while len(stages) < len(v.stages):
            stages.append(_Stage())
        for k, judged in enumerate(v.stages):
            s = stages[k]
            s.profiles.setdefault(judged.profile)
            s.providers.setdefault(judged.provider)
            s.models.setdefault(judged.model)
            s.reached += 1
            s.cost += judged.cost_usd
            total_cost += judged.cost_usd
            if v.stage == k:
                s.accepted += 1
                if v.human_label is not None:
                    s.labelled += 1
                    s.correct += judged.winner == v.human_label
        if v.stage is None:
            escalated += 1
            escalated_labelled += v.human_label is not None
        if awaits_label(v, then):
            waiting += 1
            key = queue_key(v.bpde, position)
            negated = (-key[0], -key[1], -key[2])
            if len(heap) < top:
                heapq.heappush(heap, (negated, position, v))
            elif top and negated > heap[0][0]:
                heapq.heapreplace(heap, (negated, position, v))
    if not items:
        return None
    accepted = sum(s.accepted for s in stages)
    last = stages[-1]
    last_mean = _ratio(last.cost, last.reached)
    alone_total = None if last_mean is None else round(last_mean * items, 9)
    per_item = total_cost / items
    rows = []
    for k, s in enumerate(stages):
        rows.append({"stage": k, "profile": _joined(s.profiles),
                     "provider": _joined(s.providers), "model": _joined(s.models), "reached": s.reached,
                     "accepted": s.accepted, **_accuracy(s.correct, s.labelled), "cost_usd": round(s.cost, 9),
                     "cost_per_item": _ratio(s.cost, s.reached)})
    labelled = sum(s.labelled for s in stages)
    correct = sum(s.correct for s in stages)
    top_entries = [_queue_entry(v) for _, position, v in
                   sorted(heap, key=lambda entry: queue_key(entry[2].bpde, entry[1]))]
    return {
        "items": items,
        "then": then,
        "stages": rows,
        "accepted": accepted,
        "coverage": accepted / items,
        **_accuracy(correct, labelled),
        "escalated": {"items": escalated, "labelled": escalated_labelled,
                      "awaiting_label": escalated - escalated_labelled if then == "human" else 0},
        "cost": {
            "total_usd": round(total_cost, 9),
            "per_item": per_item,
            "last_stage_alone": {
                "estimate": True,
                "basis": "the last stage's mean cost per item it judged, times the items",
                "per_item": last_mean,
                "total_usd": alone_total,
            },
            "saving_per_item": None if last_mean is None else last_mean - per_item,
        },
        "queue": {"waiting": waiting, "top": top_entries},
    }
