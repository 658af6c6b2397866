"""`pjudge demo`: the whole path on the embedded default, ending in an agreement summary."""

from __future__ import annotations

from pathlib import Path

import click

import judge
from judge.cache import SqliteCallCache
from judge.jsonl import read_items
from judge.paths import user_data_dir
from pjudge.commands.judging import print_summary, resolve_profile, run_judging, summarize
from pjudge.common import echo_json, handle_errors

EXAMPLE_ITEMS = Path(judge.__file__).parent / "examples" / "items.jsonl"


@click.command("demo")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the verdicts [default: <data dir>/demo/verdicts.jsonl].")
@click.option("--first-bias", default=0.3, show_default=True, type=click.FloatRange(0, 1))
@click.option("--noise", default=0.05, show_default=True, type=click.FloatRange(0, 1))
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def demo_command(output: Path | None, first_bias: float, noise: float, output_format: str) -> None:
    """Judge the bundled example items against the simulated LLM judge, in both orders."""
    from llm_sim.server import ServerSettings, SimServerThread

    demo_dir = user_data_dir() / "demo"
    output = output or demo_dir / "verdicts.jsonl"
    items = read_items(EXAMPLE_ITEMS)
    settings = ServerSettings(first_bias=first_bias, noise=noise, seed=7)
    with SimServerThread(settings) as sim:
        if output_format == "text":
            click.echo(f"simulated judge at {sim.url} (first-bias {first_bias}, noise {noise}); "
                       f"judging {len(items)} example items in both orders")
        profile = resolve_profile("persona-certainty", provider="openai-compatible", model="sim-judge",
                                  base_url=f"{sim.url}/v1")
        # A cache of the demo's own, so that the demo always shows real calls on its first run.
        cache = SqliteCallCache(demo_dir / f"cache-{first_bias}-{noise}.sqlite")
        verdicts, progress, _ = run_judging(profile, items, output, 16, cache, show_progress=output_format == "text")
    summary = summarize(verdicts, progress)
    summary["output"] = str(output)
    if output_format == "json":
        echo_json(summary)
    else:
        print_summary(summary)
        click.echo(f"verdicts written to {output}")
