"""Judge cascades with a guarantee on the whole cascade (SPEC 4 `cascade`), and a planner over them.

A cascade runs stage 1 on every item; each later stage sees only the items no earlier stage
accepted; what no stage accepts goes to humans. Calibration (Jung et al. 2024, "Trust or
Escalate"): for stage k, SPEC 4's `risk_control` rule (calibration.risk, the one home of the
fixed-sequence walk) at level 1 - delta/K (Bonferroni over the K stages) on the labelled items that
reach stage k. Each stage's accepted set then has accuracy >= target with probability >= 1 - delta/K,
so all of them at once, and hence the union of what the cascade keeps, with probability >= 1 - delta.

The input is one list of verdicts per stage (the same items judged by different judges), joined
by item id onto the labelled items of the first stage; the first stage's labels are the truth.
`plan` evaluates every ordered sub-cascade of the stages and keeps those no other beats on both cost
per item and coverage. Pure: no files, no HTTP, no CLI (pjudge.commands.calibrate reads the files).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.risk import accepted_by, risk_control
from calibration.table import CODES, VerdictTable, build_table, ratio
from judge.jsonl import InputError, InputProblem
from judge.records import Verdict

BoolArray = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.bool_] | npt.NDArray[np.int64] | Sequence[int] | None
"""Which of the joined items to use: a mask or indices over them; None = all."""


@dataclass(frozen=True)
class StageVerdicts:
    """One stage's input: its verdicts, `name` (SPEC 4: the file's stem) and `source` (the file,
    named in errors)."""

    name: str
    source: str
    verdicts: Sequence[Verdict]


@dataclass(frozen=True)
class Stages:
    """Stages joined onto the labelled items of the first: `tables[k]` row i is stage k's verdict of
    item `ids[i]`, with the first stage's human label. `cost[k]` row i is the summed `cost_usd` of
    that verdict's calls (NaN when none of them has one)."""

    names: tuple[str, ...]
    sources: tuple[str, ...]
    ids: tuple[str, ...]
    tables: tuple[VerdictTable, ...]
    cost: tuple[npt.NDArray[np.float64], ...]
    judges: tuple[tuple[Verdict, ...], ...] = field(repr=False)
    """Every stage's verdicts of the joined items (their `judge`, for a saved profile)."""

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, stages: Sequence[int]) -> Stages:
        """A sub-cascade: these stages, in this order, over the same items."""
        pick = list(stages)
        return Stages(
            names=tuple(self.names[k] for k in pick), sources=tuple(self.sources[k] for k in pick), ids=self.ids,
            tables=tuple(self.tables[k] for k in pick), cost=tuple(self.cost[k] for k in pick),
            judges=tuple(self.judges[k] for k in pick),
        )

    def take(self, rows: npt.NDArray[np.int64]) -> Stages:
        """These rows of the joined items, repeats allowed (a bootstrap sample of the items)."""
        return Stages(
            names=self.names, sources=self.sources, ids=tuple(self.ids[i] for i in rows),
            tables=tuple(t.subset(rows) for t in self.tables), cost=tuple(c[rows] for c in self.cost),
            judges=tuple(tuple(vs[i] for i in rows) for vs in self.judges),
        )

    def mean_cost(self, k: int) -> float | None:
        """Stage k's mean cost per item over the joined items (a verdict without any cost counts 0);
        None when none of its verdicts has a cost."""
        cost = self.cost[k]
        known = np.isfinite(cost)
        if not known.any():
            return None
        return float(np.where(known, cost, 0.0).mean())


def _error(source: str, message: str, field_name: str | None = "id") -> InputError:
    return InputError(source, [InputProblem(None, field_name, message)])


def _by_id(stage: StageVerdicts) -> dict[str, Verdict]:
    out: dict[str, Verdict] = {}
    for v in stage.verdicts:
        if v.id in out:
            raise _error(stage.source, f"item '{v.id}' has more than one verdict; a stage judges each item once")
        out[v.id] = v
    return out


def _verdict_cost(v: Verdict) -> float:
    costs = [c.cost_usd for c in v.calls if c.cost_usd is not None]
    return float(sum(costs)) if costs else float("nan")


def join_stages(stages: Sequence[StageVerdicts]) -> Stages:
    """The labelled items of the first stage, in its order, and every stage's verdict of each.

    InputError (naming the file) when there are no stages, the first has no labelled item, a stage
    judges an item twice, a later stage lacks a verdict for one of the items (the first missing id
    is named), or gives an item a different non-null human label than the first.
    """
    if not stages:
        raise _error("cascade", "no stages given", None)
    first = stages[0]
    labelled = [v for v in first.verdicts if v.human_label is not None]
    _by_id(first)
    if not labelled:
        raise _error(first.source, "no labelled items (the first stage's human labels define the items)",
                     "human_label")
    ids = tuple(v.id for v in labelled)
    label = np.array([CODES[v.human_label] for v in labelled], dtype=np.int8)
    chosen: list[tuple[Verdict, ...]] = [tuple(labelled)]
    for stage in stages[1:]:
        own = _by_id(stage)
        row = []
        for v in labelled:
            mine = own.get(v.id)
            if mine is None:
                raise _error(stage.source, f"no verdict for item '{v.id}' (labelled in {first.source}); every "
                             "stage must judge every labelled item of the first")
            if mine.human_label is not None and mine.human_label != v.human_label:
                raise _error(stage.source, f"item '{v.id}' is labelled {mine.human_label} here but "
                             f"{v.human_label} in {first.source}: are these the same items?", "human_label")
            row.append(mine)
        chosen.append(tuple(row))
    tables = tuple(replace(build_table(list(vs)), label=label.copy()) for vs in chosen)
    cost = tuple(np.array([_verdict_cost(v) for v in vs], dtype=np.float64) for vs in chosen)
    return Stages(names=tuple(s.name for s in stages), sources=tuple(s.source for s in stages), ids=ids,
                  tables=tables, cost=cost, judges=tuple(chosen))


# ---------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class StageResult:
    """SPEC 4 `cascade.stages[k]`; `reason` (not in the JSON) says why a threshold is null."""

    name: str
    threshold: float | None
    reached: int
    accepted: int
    errors: int
    bound: float | None
    accuracy: float | None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "reached": self.reached,
                "accepted": self.accepted, "errors": self.errors, "bound": self.bound, "accuracy": self.accuracy}


@dataclass(frozen=True)
class CascadeResult:
    """SPEC 4 `cascade`: the thresholds and what they do on the calibration items."""

    target: float
    delta: float
    stages: tuple[StageResult, ...]
    items: int  # |R1|

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.stages)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.stages)

    @property
    def accuracy(self) -> float | None:
        return None if self.accepted == 0 else 1.0 - self.errors / self.accepted

    @property
    def coverage(self) -> float:
        return ratio(self.accepted, self.items) or 0.0

    @property
    def escalated(self) -> int:
        return self.items - self.accepted

    @property
    def thresholds(self) -> tuple[float | None, ...]:
        return tuple(s.threshold for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "delta": self.delta, "stages": [s.as_dict() for s in self.stages],
                "accepted": self.accepted, "errors": self.errors, "accuracy": self.accuracy,
                "coverage": self.coverage, "escalated": self.escalated}


def _mask(n: int, rows: Rows) -> BoolArray:
    if rows is None:
        return np.ones(n, dtype=bool)
    picked = np.asarray(rows)
    if picked.dtype == np.bool_:
        return np.array(picked, dtype=bool)
    mask = np.zeros(n, dtype=bool)
    mask[picked] = True
    return mask


def calibrate(stages: Stages, target: float, delta: float = 0.1, rows: Rows = None) -> CascadeResult:
    """SPEC 4 `cascade` on the joined items (or the `rows` of them): stage k runs `risk_control` at
    level 1 - delta/K on the items that reach it, and accepts its decided ones with confidence >= its
    threshold (none when it is null)."""
    if not 0 < target < 1 or not 0 < delta < 1:
        raise ValueError(f"target and delta must lie in (0, 1), got {target} and {delta}")
    level = delta / len(stages.tables)
    remaining = _mask(len(stages), rows)
    items = int(remaining.sum())
    results = []
    for name, table in zip(stages.names, stages.tables, strict=True):
        reached = int(remaining.sum())
        rc = risk_control(table.subset(remaining), target, level)
        accepted = remaining & accepted_by(table, rc["threshold"])
        errors = int((accepted & ~table.correct).sum())
        # The accepted set is the one the rule counted: one acceptance rule, two callers.
        assert (int(accepted.sum()), errors) == (rc["accepted"], rc["errors"]), (name, rc)
        results.append(StageResult(name=name, threshold=rc["threshold"], reached=reached, accepted=rc["accepted"],
                                   errors=rc["errors"], bound=rc["bound"], accuracy=rc["accuracy"],
                                   reason=rc.get("reason")))
        remaining &= ~accepted
    return CascadeResult(target=target, delta=delta, stages=tuple(results), items=items)


@dataclass(frozen=True)
class Outcome:
    """Fixed thresholds applied to items: per stage how many reached it, how many it accepted and
    how many of those disagree with the human label."""

    items: int
    reached: tuple[int, ...]
    accepted: tuple[int, ...]
    errors: tuple[int, ...]

    @property
    def coverage(self) -> float:
        return ratio(sum(self.accepted), self.items) or 0.0

    @property
    def accuracy(self) -> float | None:
        kept = sum(self.accepted)
        return None if kept == 0 else 1.0 - sum(self.errors) / kept

    def cost_per_item(self, stage_costs: Sequence[float]) -> float:
        """sum_k (|R_k| / |R_1|) * cost_k, cost_k a stage's mean cost per item."""
        if self.items == 0:
            return 0.0
        return float(sum(r / self.items * c for r, c in zip(self.reached, stage_costs, strict=True)))


def apply(stages: Stages, thresholds: Sequence[float | None], rows: Rows = None) -> Outcome:
    """Run the cascade with these thresholds on the joined items (or the `rows` of them), e.g. the
    test half of a split whose other half chose the thresholds."""
    remaining = _mask(len(stages), rows)
    items = int(remaining.sum())
    reached, accepted_n, errors = [], [], []
    for table, threshold in zip(stages.tables, thresholds, strict=True):
        reached.append(int(remaining.sum()))
        accepted = remaining & accepted_by(table, threshold)
        accepted_n.append(int(accepted.sum()))
        errors.append(int((accepted & ~table.correct).sum()))
        remaining &= ~accepted
    return Outcome(items=items, reached=tuple(reached), accepted=tuple(accepted_n), errors=tuple(errors))


# ---------------------------------------------------------------------------- the planner


def sub_cascades(k: int) -> list[tuple[int, ...]]:
    """Every non-empty subsequence of stages 0..k-1, order kept: 2^k - 1 of them, shortest first."""
    return [combo for size in range(1, k + 1) for combo in itertools.combinations(range(k), size)]


@dataclass(frozen=True)
class PlanEntry:
    """One sub-cascade calibrated at the target on all the joined items."""

    stages: tuple[str, ...]
    result: CascadeResult
    cost_per_item: float
    pareto: bool

    def as_dict(self) -> dict[str, Any]:
        r = self.result
        return {"stages": list(self.stages), "thresholds": list(r.thresholds), "coverage": r.coverage,
                "accuracy": r.accuracy, "accepted": r.accepted, "errors": r.errors, "escalated": r.escalated,
                "reached": [s.reached for s in r.stages], "cost_per_item": self.cost_per_item,
                "pareto": self.pareto}


@dataclass(frozen=True)
class Plan:
    target: float
    delta: float
    items: int
    stage_costs: Mapping[str, float]
    cost_sources: Mapping[str, str]  # "calls" (the verdicts' cost_usd) or "price" (given)
    entries: tuple[PlanEntry, ...]

    @property
    def front(self) -> list[PlanEntry]:
        """The Pareto front, cheapest first (then highest coverage)."""
        return sorted((e for e in self.entries if e.pareto), key=lambda e: (e.cost_per_item, -e.result.coverage))

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "delta": self.delta, "items": self.items,
            "guarantee": f"accuracy on accepted items >= {self.target} with probability >= {1 - self.delta:.6g}, "
                         "for each sub-cascade on its own",
            "stage_costs": {name: {"cost_per_item": cost, "source": self.cost_sources[name]}
                            for name, cost in self.stage_costs.items()},
            "front": [e.as_dict() for e in self.front],
            "all": [e.as_dict() for e in self.entries],
        }


NO_JUDGE = (0.0, 0.0)
"""(cost, coverage) of sending every item to humans unjudged: it beats any sub-cascade that accepts
nothing yet costs something, so those never make the front."""


def dominated(cost: float, coverage: float, others: Sequence[tuple[float, float]]) -> bool:
    """Some other (cost, coverage) is at most as costly and covers at least as much, one strictly."""
    return any(c <= cost and v >= coverage and (c < cost or v > coverage) for c, v in others)


def plan(stages: Stages, target: float, delta: float, stage_costs: Mapping[str, float],
         cost_sources: Mapping[str, str] | None = None) -> Plan:
    """Every ordered sub-cascade calibrated at (target, delta) on all the joined items, its
    coverage, realized accuracy and cost per item; `pareto` marks those no other beats on both cost
    (lower or equal) and coverage (higher or equal), one strictly, counting among the others sending
    everything to humans unjudged (`NO_JUDGE`). `stage_costs`: each stage's mean
    cost per item, by name."""
    costs = [float(stage_costs[name]) for name in stages.names]
    runs = []
    for combo in sub_cascades(len(stages.names)):
        sub = stages.select(combo)
        result = calibrate(sub, target, delta)
        outcome = Outcome(items=result.items, reached=tuple(s.reached for s in result.stages),
                          accepted=tuple(s.accepted for s in result.stages),
                          errors=tuple(s.errors for s in result.stages))
        # Rounded so that sums of the same costs in another order compare equal.
        runs.append((sub.names, result, round(outcome.cost_per_item([costs[k] for k in combo]), 12)))
    points = [(cost, result.coverage) for _, result, cost in runs]
    entries = tuple(
        PlanEntry(stages=names, result=result, cost_per_item=cost,
                  pareto=not dominated(cost, result.coverage, [*points[:i], *points[i + 1:], NO_JUDGE]))
        for i, (names, result, cost) in enumerate(runs)
    )
    sources = dict(cost_sources or {})
    return Plan(target=target, delta=delta, items=len(stages),
                stage_costs={name: costs[k] for k, name in enumerate(stages.names)},
                cost_sources={name: sources.get(name, "calls") for name in stages.names}, entries=entries)


# ---------------------------------------------------------------------------- Markdown


def _f(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _why(s: StageResult) -> str:
    return f" ({s.reason})" if s.threshold is None and s.reason else ""


def cascade_markdown(result: CascadeResult) -> str:
    lines = [
        "# Cascade calibration",
        "",
        f"Guarantee: accuracy on accepted items >= {result.target} with probability >= "
        f"{1 - result.delta:.6g} (each of the {len(result.stages)} stages at delta/K = "
        f"{result.delta / len(result.stages):.6g}; fixed-sequence testing, Clopper-Pearson).",
        "",
        "| stage | threshold | reached | accepted | errors | bound | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result.stages:
        lines.append(f"| {s.name} | {_f(s.threshold)}{_why(s)} | {s.reached} | {s.accepted} | {s.errors} | "
                     f"{_f(s.bound)} | {_f(s.accuracy)} |")
    lines += ["", f"Items {result.items}: accepted {result.accepted}, errors {result.errors}, accuracy "
              f"{_f(result.accuracy)}, coverage {_f(result.coverage)}, escalated {result.escalated}."]
    return "\n".join(lines) + "\n"


def plan_markdown(p: Plan) -> str:
    lines = [
        "# Cascade plan",
        "",
        f"Target accuracy {p.target}, delta {p.delta}: each sub-cascade, calibrated on these {p.items} labelled "
        f"items, keeps accuracy >= {p.target} on what it accepts with probability >= {1 - p.delta:.6g}.",
        "",
        "Stage costs per item: " + ", ".join(f"{name} {cost:.6g} USD ({p.cost_sources[name]})"
                                             for name, cost in p.stage_costs.items()) + ".",
        "",
        "| sub-cascade | thresholds | coverage | accuracy | escalated | cost per item (USD) | Pareto |",
        "|---|---|---|---|---|---|---|",
    ]
    order = p.front + [e for e in sorted(p.entries, key=lambda e: e.cost_per_item) if not e.pareto]
    for e in order:
        lines.append(f"| {' → '.join(e.stages)} | {', '.join(_f(t) for t in e.result.thresholds)} | "
                     f"{_f(e.result.coverage)} | {_f(e.result.accuracy)} | {e.result.escalated} | "
                     f"{e.cost_per_item:.6g} | {'yes' if e.pareto else ''} |")
    return "\n".join(lines) + "\n"


__all__ = ["CascadeResult", "Outcome", "Plan", "PlanEntry", "StageResult", "StageVerdicts", "Stages",
           "NO_JUDGE", "apply", "calibrate", "cascade_markdown", "dominated", "join_stages", "plan", "plan_markdown",
           "sub_cascades"]
