"""The library API: `evaluate(items, profile)` in one call (`from judge import evaluate`).

What `pjudge judge` does, from Python: items (dicts, `PairItem`s, a JSON Lines path or a
`datasets.Dataset`) and a profile or cascade in, verdicts in input order out, through the same
`Judge`s (judge/runner.py), cascade driver (judge/cascade.py) and call cache (the CLI's by
default), so that a notebook and the CLI give the same verdicts for the same items.

`evaluate` works in a plain script and inside a running event loop (Jupyter, an async
framework): there `asyncio.run` would fail, so it runs the judging on a worker thread with its own
loop and waits for it. `evaluate_async` is the same, awaitable on the caller's loop.

This module sits above calibration (`EvaluationResult.report` imports it when called): it is the
facade over the layers, kept in the `judge` package so that `from judge import evaluate` works.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
import threading
from collections.abc import Coroutine, Iterable, Mapping
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from judge.cache import CallCache, NullCache, SqliteCallCache
from judge.jsonl import InputError, InputProblem, problems_from_validation, read_items, write_jsonl
from judge.paths import cache_path
from judge.profiles import CascadeProfile, JudgeProfile, Judging, load_judging
from judge.providers.base import CallRequest, CallResult, Provider
from judge.records import Call, PairItem, Verdict
from judge.runner import Judge, Progress, new_event_loop

if TYPE_CHECKING:
    from rich.progress import Progress as Bar

Items = str | os.PathLike[str] | Iterable[PairItem | Mapping[str, Any]]
ProfileSpec = str | os.PathLike[str] | Mapping[str, Any] | JudgeProfile | CascadeProfile | None
CacheSpec = bool | str | os.PathLike[str] | CallCache | None

DEFAULT_CONCURRENCY = 32  # `pjudge judge --concurrency`'s default


class EvaluationResult(list[Verdict]):
    """The verdicts of `evaluate`, one per item in the items' order: a list of `Verdict`, plus
    `report()`, `to_jsonl()`, the profile or cascade that judged (`judging`) and the call counts
    (`progress`: calls, cached_calls, failed_calls, cost_usd)."""

    def __init__(self, verdicts: Iterable[Verdict], judging: Judging, progress: Progress):
        super().__init__(verdicts)
        self.judging = judging
        self.progress = progress

    def report(self, threshold: float = 0.8, hitl: float = 0.2, group_by: str | None = None,
               target_accuracy: float | None = None, delta: float | None = None,
               bootstrap_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
        """The SPEC 4 report, as `pjudge report --format json` computes it (same options: --threshold,
        --hitl, --group-by, --target-accuracy, --delta, --bootstrap, --seed); a cascade's with its
        `then`, as a job's report."""
        if delta is not None and target_accuracy is None:
            raise ValueError("delta needs target_accuracy")
        from calibration.report import build_report  # numpy and scipy only when a report is asked for

        then = self.judging.then if isinstance(self.judging, CascadeProfile) else "human"
        return build_report(self, threshold=threshold, hitl=hitl, group_by=group_by,
                            target_accuracy=target_accuracy, delta=delta,
                            bootstrap_resamples=bootstrap_resamples, seed=seed, cascade_then=then)

    def to_jsonl(self, path: str | os.PathLike[str]) -> int:
        """Write the verdicts as `pjudge judge -o` writes them (one JSON object a line, replaced
        atomically); the number written."""
        return write_jsonl(Path(path), self)


def evaluate(items: Items, profile: ProfileSpec = None, *, concurrency: int = DEFAULT_CONCURRENCY,
             cache: CacheSpec = True, provider: Provider | None = None,
             progress: bool | None = None) -> EvaluationResult:
    """Judge `items` with `profile` and return their verdicts (see `evaluate_async` for the
    arguments). Blocks until done; inside a running event loop it judges on a worker thread with
    its own loop (in a notebook, `await evaluate_async(...)` keeps the loop free meanwhile)."""
    work = _prepare(items, profile, cache, concurrency)  # bad input fails here, on the caller's thread
    coroutine = _run(*work, concurrency=concurrency, provider=provider, progress=progress)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running in this thread: the plain-script case
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(coroutine)
    return _run_on_thread(coroutine)


async def evaluate_async(items: Items, profile: ProfileSpec = None, *, concurrency: int = DEFAULT_CONCURRENCY,
                         cache: CacheSpec = True, provider: Provider | None = None,
                         progress: bool | None = None) -> EvaluationResult:
    """Judge `items` with `profile` on the running event loop; the verdicts in the items' order.

    - `items`: `PairItem`s or mappings of their fields (e.g. dicts, a `datasets.Dataset`'s rows, any
      iterable of them), or the path of a JSON Lines file (`pjudge judge`'s input). Validated whole
      before any call: an `InputError` names each bad row (`items[3]`, or the file's line) and field.
    - `profile`: a built-in or stored profile name, a profile file's path, a mapping of profile
      fields (over a base profile, as in an API job), a `JudgeProfile`, or a cascade (its name, file,
      mapping or `CascadeProfile`). None: `persona-certainty`, as `pjudge judge` without --profile.
    - `concurrency`: calls in flight at most (`pjudge judge --concurrency`).
    - `cache`: True (default): the CLI's call cache (PJUDGE_CACHE, else cache.sqlite in the user data
      directory), so that a rerun costs no calls; False or None: none; a path: a SQLite cache file
      there; or any object with the cache's get/put (judge.cache.CallCache).
    - `provider`: an object with `complete(request)` and `aclose()` (judge.providers.base.Provider)
      answering every call instead of the profile's provider (every stage's, for a cascade). It is
      not closed: it stays the caller's.
    - `progress`: a progress bar on stderr; None (default): only when stderr is a terminal (not in
      Jupyter, not when piped or logged).
    """
    work = _prepare(items, profile, cache, concurrency)
    return await _run(*work, concurrency=concurrency, provider=provider, progress=progress)


def _run_on_thread(coroutine: Coroutine[Any, Any, EvaluationResult]) -> EvaluationResult:
    """Run `coroutine` on a new thread with its own loop and wait for it. Interrupted while waiting
    (Ctrl-C, a notebook's interrupt), it cancels the judging (its providers close) before raising."""
    outcome: concurrent.futures.Future[EvaluationResult] = concurrent.futures.Future()
    running: dict[str, Any] = {}
    stop = threading.Event()

    async def main() -> EvaluationResult:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        if stop.is_set():  # interrupted before the loop started
            coroutine.close()
            raise asyncio.CancelledError
        return await coroutine

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                outcome.set_result(runner.run(main()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
            outcome.set_exception(exc)

    thread = threading.Thread(target=target, name="pjudge-evaluate", daemon=True)
    thread.start()
    try:
        # Short waits: an interrupt is raised between two of them, even one that is no real signal.
        while not concurrent.futures.wait([outcome], timeout=0.1).done:
            pass
        return outcome.result()
    except BaseException:
        stop.set()
        if not outcome.done() and "loop" in running:
            running["loop"].call_soon_threadsafe(running["task"].cancel)
        thread.join()
        raise


def _prepare(items: Items, profile: ProfileSpec, cache: CacheSpec, concurrency: int
             ) -> tuple[list[PairItem], Judging, CallCache]:
    if type(concurrency) is not int or concurrency < 1:  # not True, not 2.5: callers without a type checker
        raise ValueError(f"concurrency must be a positive integer, not {concurrency!r}")
    return to_items(items), to_judging(profile), to_cache(cache)


def to_items(items: Items) -> list[PairItem]:
    """Validated items, in order: a JSON Lines path is read as `pjudge judge` reads it."""
    if isinstance(items, str | os.PathLike):
        return read_items(Path(items))
    if isinstance(items, Mapping):
        # One dict (a single item) or a datasets.DatasetDict (splits): neither is a list of items.
        if _is_dataset_dict(items):
            raise _input_error(f"a DatasetDict holds splits: pass one, e.g. dataset[{next(iter(items))!r}]")
        raise _input_error("expected a list of items (or a JSON Lines path), not a single mapping: "
                           "wrap it in a list")
    try:
        rows = iter(items)
    except TypeError:
        raise _input_error("expected a list of items, a datasets.Dataset or a JSON Lines path, "
                           f"not {type(items).__name__}") from None
    source = "dataset" if _is_dataset(items) else "items"
    validated, problems = _validate_rows(rows)
    if not validated and not problems:
        problems.append(_RowProblem(None, None, "no items"))
    if problems:
        raise InputError(source, list(problems))
    return validated


def _input_error(message: str) -> InputError:
    return InputError("items", [InputProblem(None, None, message)])


class _RowProblem(InputProblem):
    """A problem of the row at 0-based index `line` of an iterable: `items[3], field 'prompt'`."""

    def describe(self, source: str) -> str:
        where = source if self.line is None else f"{source}[{self.line}]"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


def _validate_rows(rows: Iterable[object]) -> tuple[list[PairItem], list[InputProblem]]:
    items: list[PairItem] = []
    problems: list[InputProblem] = []
    seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        if isinstance(row, PairItem):
            item = row
        elif isinstance(row, Mapping):
            try:
                item = PairItem.model_validate(dict(row))
            except ValidationError as exc:
                problems.extend(_RowProblem(index, problem.field, problem.message)
                                for problem in problems_from_validation(exc, index))
                continue
        else:
            kind = type(row).__name__
            problems.append(_RowProblem(index, None, f"expected a mapping or a PairItem, not {kind}"))
            continue
        if item.id in seen:
            first = seen[item.id]
            problems.append(_RowProblem(index, "id", f"duplicate id '{item.id}' (first at index {first})"))
            continue
        seen[item.id] = index
        items.append(item)
    return items, problems


def _is_dataset(value: object) -> bool:
    """A `datasets.Dataset` (duck-typed: the package stays optional): rows come from iterating it."""
    return hasattr(value, "column_names") and hasattr(value, "features") and not isinstance(value, Mapping)


def _is_dataset_dict(value: Mapping[Any, Any]) -> bool:
    return bool(value) and all(_is_dataset(split) for split in value.values())


def to_judging(profile: ProfileSpec) -> Judging:
    """A judge profile or cascade from any form `evaluate` takes (ProfileError when it is bad)."""
    if isinstance(profile, JudgeProfile | CascadeProfile):
        return profile
    if isinstance(profile, os.PathLike):
        return load_judging(os.fspath(profile))
    if isinstance(profile, Mapping):
        return load_judging(dict(profile))
    return load_judging(profile)


def to_cache(cache: CacheSpec) -> CallCache:
    if cache is True:
        return SqliteCallCache(cache_path())
    if cache is None or cache is False:
        return NullCache()
    if isinstance(cache, str | os.PathLike):
        return SqliteCallCache(Path(cache))
    if callable(getattr(cache, "get", None)) and callable(getattr(cache, "put", None)):
        return cache
    raise TypeError(f"cache must be True, False, None, a path or a CallCache, not {type(cache).__name__}")


class _Borrowed:
    """The caller's provider, shared by every stage and never closed here: it stays the caller's."""

    def __init__(self, provider: Provider):
        self._provider = provider
        self.name = getattr(provider, "name", type(provider).__name__)

    async def complete(self, request: CallRequest) -> CallResult:
        return await self._provider.complete(request)

    async def aclose(self) -> None:
        return None


def calls_per_item(profile: JudgeProfile) -> int:
    """The calls of one item with fixed k (with adaptive sampling: the most)."""
    return profile.samples * (2 if profile.swap else 1)


async def _run(items: list[PairItem], judging: Judging, cache: CallCache, *, concurrency: int,
               provider: Provider | None, progress: bool | None) -> EvaluationResult:
    counts = Progress()
    show = sys.stderr.isatty() if progress is None else progress
    verdicts = await judge_with_progress(items, judging, cache, concurrency=concurrency, show=show, counts=counts,
                                         provider=provider)
    return EvaluationResult(verdicts, judging, counts)


async def judge_with_progress(items: list[PairItem], judging: Judging, cache: CallCache, *, concurrency: int,
                              show: bool, counts: Progress, provider: Provider | None = None,
                              finished: dict[str, Verdict] | None = None) -> list[Verdict]:
    """Judge `items` with a profile or cascade, the progress bar on stderr when `show`: the one
    home of `evaluate` and `pjudge judge`. The verdicts in the items' order; `counts` counts the
    calls and verdicts as they come, and `finished` (by item id) gets every verdict as it comes,
    so that an interrupted caller keeps what finished (a cascade's come only once its last stage
    is done). `provider`: answers every stage's calls and is not closed (`evaluate_async`)."""
    finished = {} if finished is None else finished
    stages = list(judging.judges) if isinstance(judging, CascadeProfile) else [judging]
    # A cascade's later stages judge only what the earlier ones left: their calls join the total
    # when they start. With adaptive sampling the total is the most, set to the calls made at the end.
    total = len(items) * calls_per_item(stages[0])
    bar = _bar(show)
    task = bar.add_task("calls", total=total, failed=0, cached=0, cost=0.0)

    def on_call(call: Call) -> None:
        counts.calls += 1
        counts.failed_calls += call.error is not None
        counts.cached_calls += call.cached
        counts.cost_usd += call.cost_usd or 0.0
        bar.update(task, advance=1, failed=counts.failed_calls, cached=counts.cached_calls,
                   cost=counts.cost_usd)

    def on_stage(stage: int, open_items: list[PairItem]) -> None:
        nonlocal total
        if stage > 0:  # a later stage judges only what the earlier ones left
            total += len(open_items) * calls_per_item(stages[stage])
            bar.update(task, total=total)

    def done(verdict: Verdict) -> None:
        finished[verdict.id] = verdict
        counts.verdicts += 1

    borrowed = _Borrowed(provider) if provider is not None else None
    with bar:
        async with AsyncExitStack() as stack:
            judges = [await stack.enter_async_context(Judge(stage, provider=borrowed, cache=cache,
                                                            max_in_flight=concurrency, on_call=on_call))
                      for stage in stages]
            if isinstance(judging, CascadeProfile):
                from judge.cascade import judge_cascade

                for verdict in await judge_cascade(judging, items, judges, on_stage=on_stage):
                    done(verdict)
            else:
                async for verdict in judges[0].judge_stream(items):
                    done(verdict)
        bar.update(task, total=counts.calls)  # adaptive sampling: the calls it needed
    return [finished[item.id] for item in items]


def _bar(show: bool) -> Bar:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    return Bar(
        TextColumn("[bold]judging[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("calls"),
        TextColumn("{task.fields[failed]} failed, {task.fields[cached]} cached, ${task.fields[cost]:.4f}"),
        TimeRemainingColumn(), console=Console(stderr=True), disable=not show, transient=False,
    )
