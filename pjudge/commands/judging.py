"""`pjudge judge`: judge a JSONL file of items in-process, with a progress bar."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from judge._evaluate import judge_with_progress, to_cache
from judge.cache import CallCache
from judge.jsonl import read_items, write_jsonl
from judge.profiles import CascadeProfile, JudgeProfile, Judging, load_judging, load_profile
from judge.records import PairItem, Verdict
from judge.runner import Progress, new_event_loop
from pjudge.common import FloatRange, echo_json, handle_errors, probe_output, refuse_overwriting_inputs

F = TypeVar("F", bound=Callable[..., Any])


def _base_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--base-url checked as a profile's base_url is when called (judge.endpoints.parse_endpoint): a
    bad one is a usage error (exit 2) before anything runs, never shown with a password in it."""
    from judge.endpoints import EndpointError, parse_endpoint

    if value is None:
        return value
    try:
        parse_endpoint(value)
    except EndpointError as exc:
        raise click.BadParameter(f"the base URL {exc}") from None
    return value


def profile_options(func: F) -> F:
    """Options that pick and override a judge profile (shared by judge, submit and demo)."""
    options = [
        click.option("--profile", "profile_name", default=None,
                     help="Built-in or stored profile name, or a path to a profile file [default: persona-certainty]."),
        click.option("--provider", type=click.Choice(["openai", "anthropic", "openai-compatible", "replay"]),
                     default=None),
        click.option("--model", default=None),
        click.option("--base-url", default=None, callback=_base_url,
                     help="Provider base URL (else the SDK's own variable)."),
        click.option("--template", default=None, help="Template name or path to a .toml template."),
        click.option("--samples", type=click.IntRange(1, 32), default=None, help="Samples k in each order."),
        click.option("--swap/--no-swap", default=None, help="Judge in both orders [default: on]."),
        click.option("--adaptive/--no-adaptive", default=None,
                     help="Adaptive sampling: one sample per order, more (up to --samples) only while the "
                          "verdict is unsettled (README, 'Adaptive sampling') [default: off]."),
        click.option("--adaptive-margin", type=FloatRange(0, 1), default=None,
                     help="With --adaptive: the least certainty that settles a verdict whose orders do not "
                          "contradict each other "
                          "[default: 0.05]."),
        click.option("--temperature", type=FloatRange(0, 2), default=None),
        click.option("--certainty-threshold", type=FloatRange(0, 1), default=None,
                     help="Abstain when the aggregated certainty is below this."),
        click.option("--replay", "replay_path", default=None, help="Recorded outputs for provider replay."),
        click.option("--transport", type=click.Choice(["sdk", "direct"]), default=None,
                     help="HTTP client: 'direct' (openai-compatible only; its default): the SDK's requests and "
                          "retry rules on a lean aiohttp client; or 'sdk', the official SDK's (the default of "
                          "openai and anthropic)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def resolve_profile(profile_name: str | None, **overrides: Any) -> JudgeProfile:
    if overrides.get("replay_path") and not overrides.get("provider"):
        overrides["provider"] = "replay"
    return load_profile(profile_name, **overrides)


def resolve_judging(profile_name: str | None, **overrides: Any) -> Judging:
    """A judge profile with the CLI's overrides, or a cascade (SPEC 2.1), which takes none: a
    flag such as --model given with a cascade is bad input (exit 2)."""
    if overrides.get("replay_path") and not overrides.get("provider"):
        overrides["provider"] = "replay"
    return load_judging(profile_name, **overrides)


def files_read(judging: Judging) -> list[str]:
    """The files a profile reads when judging (each stage's recorded outputs and template files),
    which an output must not overwrite however the profile named them."""
    judges = judging.judges if isinstance(judging, CascadeProfile) else [judging]
    return [path for judge in judges for path in (judge.replay_path, judge.template) if path]


def open_cache(no_cache: bool) -> CallCache:
    return to_cache(not no_cache)


def run_judging(profile: Judging, items: list[PairItem], output: Path, concurrency: int,
                cache: CallCache, show_progress: bool = True) -> tuple[list[Verdict], Progress, bool]:
    """Judge items (as `evaluate` does: judge._evaluate.judge_with_progress) and write verdicts
    in input order; on Ctrl-C write what finished and say so (a cascade's verdicts exist only once
    its last stage is done: an interrupted one writes none)."""
    progress = Progress()
    finished: dict[str, Verdict] = {}
    interrupted = False
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(judge_with_progress(items, profile, cache, concurrency=concurrency, show=show_progress,
                                           counts=progress, finished=finished))
    except KeyboardInterrupt:
        interrupted = True
    verdicts = [finished[item.id] for item in items if item.id in finished]
    write_jsonl(output, verdicts)
    return verdicts, progress, interrupted


def summarize(verdicts: list[Verdict], progress: Progress) -> dict[str, Any]:
    labelled = [v for v in verdicts if v.human_label is not None]
    decided = [v for v in labelled if v.winner in ("A", "B")]
    both = [v for v in verdicts if v.consistent is not None]
    summary: dict[str, Any] = {
        "items": len(verdicts),
        "calls": progress.calls,
        "failed_calls": progress.failed_calls,
        "cached_calls": progress.cached_calls,
        "cost_usd": round(progress.cost_usd, 6),
        "undecided": sum(v.winner is None for v in verdicts),
        "abstained": sum(v.abstained for v in verdicts),
        "labelled": len(labelled),
        "accuracy_no_tie": round(sum(v.winner == v.human_label for v in decided) / len(decided), 4) if decided else None,
        "position_consistency": round(sum(bool(v.consistent) for v in both) / len(both), 4) if both else None,
        "simulated": any(v.judge.model.startswith("sim-") for v in verdicts),
    }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    click.echo(
        f"{summary['items']} verdicts, {summary['calls']} calls ({summary['cached_calls']} cached, "
        f"{summary['failed_calls']} failed), cost ${summary['cost_usd']:.4f}"
    )
    if summary["accuracy_no_tie"] is not None:
        click.echo(f"agreement with human labels (no tie): {summary['accuracy_no_tie']:.3f} "
                   f"over {summary['labelled']} labelled items")
    if summary["position_consistency"] is not None:
        click.echo(f"position consistency: {summary['position_consistency']:.3f}")
    if summary["simulated"]:
        click.echo("note: these verdicts come from a simulated judge (model sim-*), not a real LLM")


@click.command("judge")
@click.argument("items_path", metavar="ITEMS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write verdicts (JSON Lines).")
@profile_options
@click.option("--concurrency", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Calls in flight at most.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the call cache.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--batch", "mode", flag_value="batch", default=None,
              help="Send the calls through the provider's batch API (profile mode 'batch': half price, answers "
                   "within 24 h). Resumable: the batches in flight are kept in the call cache's file "
                   "(PJUDGE_CACHE), and the same command run again after an interruption picks them up.")
@click.option("--interactive", "mode", flag_value="interactive", help="One call at a time, whatever the profile's mode.")
@handle_errors
def judge_command(items_path: Path, output: Path, profile_name: str | None, concurrency: int, no_cache: bool,
                  output_format: str, quiet: bool, **overrides: Any) -> None:
    """Judge ITEMS.jsonl in-process (no server needed) and write VERDICTS.jsonl.

    --profile may name a cascade (SPEC 2.1): stage 1 judges every item, each later stage what the
    earlier ones did not accept; the other profile flags then cannot be given (set them in the stages).

    A rerun of the same items and profile is answered from the call cache (PJUDGE_CACHE).
    """
    refuse_overwriting_inputs({"-o": output}, [items_path, overrides.get("replay_path"), profile_name,
                                               overrides.get("template")])
    items = read_items(items_path)
    profile = resolve_judging(profile_name, **overrides)
    refuse_overwriting_inputs({"-o": output}, files_read(profile))
    probe_output(output)
    show_progress = not quiet and output_format == "text" and sys.stderr.isatty()
    if isinstance(profile, JudgeProfile) and profile.mode == "batch":
        if no_cache:
            raise click.UsageError("--batch keeps its provider batches in the call cache's file: drop --no-cache")
        from pjudge.commands.batch_judging import run_batch_judging

        verdicts, progress, interrupted = run_batch_judging(profile, items, output, show_progress)
    else:
        verdicts, progress, interrupted = run_judging(profile, items, output, concurrency, open_cache(no_cache),
                                                      show_progress)
    summary = summarize(verdicts, progress)
    summary["output"] = str(output)
    if output_format == "json":
        echo_json(summary)
    else:
        print_summary(summary)
    if interrupted:
        click.echo(f"interrupted: {len(verdicts)} of {len(items)} verdicts written to {output}", err=True)
        sys.exit(130)
