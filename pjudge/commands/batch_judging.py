"""`pjudge judge --batch`: the calls go through the provider's batch API (judge/batching.py), polled
with a progress bar until every item has its verdict.

Resumable: the batches sent are recorded in the call cache's SQLite file (PJUDGE_CACHE) before
anything else happens; interrupted and run again with the same items and profile, the command
polls those batches instead of sending the requests again, and reads the answers already
downloaded from the cache.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from judge.batch_sqlite import SqliteBatchStore
from judge.batching import BatchJudge, TickResult, judge_in_batches
from judge.cache import SqliteCallCache
from judge.jsonl import write_jsonl
from judge.paths import cache_path
from judge.profiles import JudgeProfile
from judge.providers.base import ProviderError
from judge.providers.batch_api import create_batch_provider
from judge.records import PairItem, Verdict
from judge.runner import Judge, Progress, new_event_loop
from judge.settings import settings


def run_batch_judging(profile: JudgeProfile, items: list[PairItem], output: Path, show_progress: bool = True,
                      poll_s: float | None = None) -> tuple[list[Verdict], Progress, bool]:
    """Judge `items` in provider batches and write the verdicts in input order; on Ctrl-C write
    nothing new (the batches go on at the provider: a rerun picks them up) and say so."""
    poll_s = settings().batch_poll_s if poll_s is None else poll_s
    cache = SqliteCallCache(cache_path())
    store = SqliteBatchStore(cache)
    progress = Progress()
    interrupted = False
    verdicts: list[Verdict] = []

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar(TextColumn("[bold]batch[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("items"),
              TextColumn("{task.fields[live]} batch(es) in flight, {task.fields[sent]} requests sent"),
              TimeElapsedColumn(), console=Console(stderr=True), disable=not show_progress, transient=False)
    task = bar.add_task("items", total=len(items), live=0, sent=0)
    sent = 0

    def on_tick(tick: TickResult) -> None:
        nonlocal sent
        sent += tick.submitted
        if tick.planned:
            bar.update(task, completed=len(items) - tick.waiting, live=tick.live_batches, sent=sent)

    async def main() -> list[Verdict]:
        batches = create_batch_provider(profile)
        try:
            async with Judge(profile, cache=cache) as judge:
                runner = BatchJudge(judge, batches, store, cache, max_tries=settings().batch_max_tries)
                done = await judge_in_batches(runner, list(enumerate(items)), poll_s, on_tick)
        finally:
            await batches.aclose()
        return [verdict for _, verdict in done]

    with bar:
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                verdicts = runner.run(main())
        except KeyboardInterrupt:
            interrupted = True
        except ProviderError:
            store.close()
            raise
    if interrupted:
        live = store.live_batch_ids()
        store.close()
        if live:
            click.echo(f"interrupted: {len(live)} provider batch(es) still running ({', '.join(live[:3])}"
                       f"{'…' if len(live) > 3 else ''}), recorded in {cache.path}; run the same command again "
                       "to pick them up", err=True)
        return [], progress, True
    for verdict in verdicts:
        progress.verdicts += 1
        for call in verdict.calls:
            progress.calls += 1
            progress.failed_calls += call.error is not None
            progress.cached_calls += call.cached
            progress.cost_usd += call.cost_usd or 0.0
    write_jsonl(output, verdicts)
    store.forget_finished()
    store.close()
    return verdicts, progress, False
