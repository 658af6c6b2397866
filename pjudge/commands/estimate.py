"""`pjudge estimate`: calls, tokens and cost of judging ITEMS.jsonl with a profile, before anything
runs (judge.estimate says how each number is counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from judge.estimate import estimate
from judge.jsonl import read_items
from judge.profiles import load_judging
from pjudge.commands.judging import profile_options
from pjudge.common import echo_json, handle_errors


@click.command("estimate")
@click.argument("items_path", metavar="ITEMS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@profile_options
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def estimate_command(items_path: Path, profile_name: str | None, output_format: str, **overrides: Any) -> None:
    """Print {calls, input_tokens, output_tokens, cost_usd, counted_by} of judging ITEMS.jsonl.

    Nothing is called. Output tokens are max_tokens per call (an upper bound); input tokens are
    counted with tiktoken for provider openai when it is installed, else estimated as one token per
    4 characters (counted_by says which). Re-asks are not counted; a cascade is its worst case
    (every stage judges every item).
    """
    if overrides.get("replay_path") and not overrides.get("provider"):
        overrides["provider"] = "replay"
    judging = load_judging(profile_name, **overrides)
    result = estimate(judging, read_items(items_path))
    if output_format == "json":
        echo_json(result.document())
        return
    click.echo(f"{result.calls} calls, {result.input_tokens} input tokens, {result.output_tokens} output tokens "
               f"(at most), ${result.cost_usd:.4f}")
    click.echo(f"counted by {result.counted_by}")
    for note in result.notes:
        click.echo(f"note: {note}")
