"""Running a cascade (SPEC 2.1): stage 1 judges every item, each later stage only the items the
earlier ones did not accept; one verdict per item combines the stages that judged it.

The stages are ordinary `Judge`s (judge/runner.py: provider, cache, limits and re-asks as for any
profile). `CascadeRun` is the bookkeeping both drivers share: `judge_cascade` runs it in-process
(`pjudge judge`, notebooks), the worker runs it stage by stage inside one task (worker/tasks.py),
making each stage's answers durable before the next starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from judge.aggregation import DECIMALS
from judge.profiles import CascadeProfile, JudgeProfile, Judging
from judge.records import JudgeInfo, PairItem, StageVerdict, Verdict

if TYPE_CHECKING:  # the runner only where the stages run: store imports this module for judge_info
    from judge.cache import CallCache
    from judge.runner import Judge

CASCADE_PROVIDER = "cascade"
MAX_MODEL = 255  # jobs.model and verdicts.model are VARCHAR(255)


def confidence(verdict: Verdict) -> float | None:
    """max(p_a, 1 - p_a), rounded as SPEC 3.1; None without a p_a."""
    if verdict.p_a is None:
        return None
    return round(max(verdict.p_a, 1.0 - verdict.p_a), DECIMALS)


def accepts(verdict: Verdict, threshold: float | None) -> bool:
    """A stage keeps its verdict: decided (A or B) and its confidence at least the threshold. No
    threshold: the stage accepts nothing."""
    if threshold is None or verdict.winner not in ("A", "B"):
        return False
    value = confidence(verdict)
    return value is not None and value >= round(threshold, DECIMALS)


def judge_info(judging: Judging) -> JudgeInfo:
    """The `judge` of a job's verdicts: a single profile's own; a cascade's name, provider
    "cascade" and its stages' models joined by " > " (cheap to strong; cut to 255 characters), so
    that stats filtered by profile or model find the cascade's verdicts apart from any stage
    judging alone."""
    if isinstance(judging, JudgeProfile):
        return JudgeInfo(profile=judging.name, provider=judging.provider, model=judging.model)
    model = " > ".join(judge.model for judge in judging.judges)
    return JudgeInfo(profile=judging.name, provider=CASCADE_PROVIDER, model=model[:MAX_MODEL])


def stages_of(judging: Judging) -> list[JudgeProfile]:
    """The judge profiles that run: the cascade's stages, or the one profile."""
    return list(judging.judges) if isinstance(judging, CascadeProfile) else [judging]


def stage_verdict(profile: JudgeProfile, verdict: Verdict) -> StageVerdict:
    return StageVerdict(profile=profile.name, provider=profile.provider, model=profile.model,
                        winner=verdict.winner, p_a=verdict.p_a, certainty=verdict.certainty,
                        cost_usd=round(sum(call.cost_usd or 0.0 for call in verdict.calls), 9))


def combine(cascade: CascadeProfile, item: PairItem, judged: Sequence[Verdict]) -> Verdict:
    """The item's verdict from the verdicts of the stages that judged it (stage 0 first): the
    accepting stage's top-level fields, or the last stage's with `abstained: true` (escalated).
    Every call carries its stage; `stages` one entry per stage that judged the item."""
    if not judged:
        raise ValueError(f"item {item.id!r}: no stage judged it")
    last = len(judged) - 1
    deciding = judged[last]
    accepted = accepts(deciding, cascade.thresholds[last])
    calls = [call.model_copy(update={"stage": index}) for index, verdict in enumerate(judged)
             for call in verdict.calls]
    return deciding.model_copy(update={
        "judge": judge_info(cascade), "calls": calls, "abstained": not accepted,
        "stage": last if accepted else None,
        "stages": [stage_verdict(profile, verdict) for profile, verdict in zip(cascade.judges, judged, strict=False)],
    })


def escalated_verdict(cascade: CascadeProfile, verdict: Verdict) -> Verdict:
    """A verdict made without judging (an error: quota, access, internal) as a cascade's: escalated
    (abstained, no accepting stage) with no stage that judged it."""
    return verdict.model_copy(update={"judge": judge_info(cascade), "abstained": True, "stage": None,
                                      "stages": []})


class CascadeRun:
    """Which items each stage judges, and the combined verdicts at the end. Drive it with
    `stages()`: each step gives (stage index, the items still open); hand that stage's verdicts of
    exactly those items to `record` before taking the next step."""

    def __init__(self, cascade: CascadeProfile, items: Iterable[PairItem]):
        self.cascade = cascade
        self.items = list(items)
        self.judged: dict[str, list[Verdict]] = {item.id: [] for item in self.items}
        if len(self.judged) != len(self.items):
            raise ValueError("item ids must be unique within a cascade run")
        self.open: list[PairItem] = list(self.items)
        self._stage = 0

    def stages(self) -> Iterable[tuple[int, list[PairItem]]]:
        while self._stage < len(self.cascade.judges) and self.open:
            yield self._stage, list(self.open)

    def record(self, stage: int, verdicts: Iterable[Verdict]) -> None:
        if stage != self._stage:
            raise ValueError(f"stage {stage} recorded while stage {self._stage} runs")
        by_id = {verdict.id: verdict for verdict in verdicts}
        missing = [item.id for item in self.open if item.id not in by_id]
        if missing:
            raise ValueError(f"stage {stage} has no verdict for {len(missing)} item(s), e.g. {missing[0]!r}")
        threshold = self.cascade.thresholds[stage]
        still_open = []
        for item in self.open:
            verdict = by_id[item.id]
            self.judged[item.id].append(verdict)
            if not accepts(verdict, threshold):
                still_open.append(item)
        self.open = still_open
        self._stage += 1

    def verdicts(self) -> list[Verdict]:
        """One verdict per item, in the items' order (every stage recorded)."""
        if self.open and self._stage < len(self.cascade.judges):
            raise ValueError(f"stage {self._stage} has not run yet")
        return [combine(self.cascade, item, self.judged[item.id]) for item in self.items]


async def judge_cascade(cascade: CascadeProfile, items: Sequence[PairItem], judges: Sequence[Judge],
                        max_items_in_flight: int | None = None,
                        on_stage: Callable[[int, list[PairItem]], None] | None = None) -> list[Verdict]:
    """Judge `items` with the cascade, one `Judge` per stage (same order as cascade.judges); the
    verdicts in input order. Each judge keeps its own cache and limits. `on_stage(k, items)` is
    told before stage k judges its items."""
    if len(judges) != len(cascade.judges):
        raise ValueError(f"{len(judges)} judges for a cascade of {len(cascade.judges)} stages")
    run = CascadeRun(cascade, items)
    for stage, open_items in run.stages():
        if on_stage is not None:
            on_stage(stage, open_items)
        verdicts = [verdict async for verdict in judges[stage].judge_stream(open_items, max_items_in_flight)]
        run.record(stage, verdicts)
    return run.verdicts()


async def judge_items(judging: Judging, items: list[PairItem], cache: CallCache | None = None,
                      concurrency: int = 64) -> list[Verdict]:
    """judge.runner.judge_all for a profile or a cascade: verdicts in input order, each stage with
    its own Judge on the same cache."""
    from contextlib import AsyncExitStack

    from judge.runner import Judge, judge_all

    if isinstance(judging, JudgeProfile):
        return await judge_all(judging, items, cache, concurrency)
    async with AsyncExitStack() as stack:
        judges = [await stack.enter_async_context(Judge(stage, cache=cache, max_in_flight=concurrency))
                  for stage in judging.judges]
        return await judge_cascade(judging, items, judges)
