"""`pjudge personalization`: degree of personalization of systems' responses (SPEC section 6)."""

from __future__ import annotations

from pathlib import Path

import click

from pjudge.common import echo_json, handle_errors


@click.command("personalization")
@click.argument("responses", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--distance", default="jsd", show_default=True, metavar="NAME",
              help="Registered text distance σ: jsd (unigram Jensen–Shannon), embedding (optional "
                   "sentence-transformers with a local model in PJUDGE_EMBEDDING_MODEL).")
@click.option("--anchor-system", default=None, metavar="SYSTEM",
              help="Weigh pairs against this system's persona-agnostic response (persona_id null) "
                   "to each prompt (the document-anchored DEGRESS); without it, the simplified variant.")
@click.option("--format", "output_format", type=click.Choice(["json", "md"]), default="md", show_default=True)
@handle_errors
def personalization_command(responses: Path, distance: str, anchor_system: str | None,
                            output_format: str) -> None:
    """DEGRESS, EGISES, EDP and PerSEval per system for RESPONSES.jsonl (SPEC 1.3).

    One line per (prompt, persona, system): {"prompt_id", "persona_id", "system", "response",
    "reference"}; personas without a reference are left out, prompts with fewer than two such
    personas are skipped and counted.
    """
    # Imported here so that `pjudge --help` does not load numpy.
    from calibration.personalization import distance_names, evaluate_file

    if distance not in distance_names():
        raise click.BadParameter(f"unknown distance '{distance}' (known: {', '.join(distance_names())})",
                                 param_hint="'--distance'")
    report = evaluate_file(responses, distance=distance, anchor_system=anchor_system)
    if output_format == "json":
        echo_json(report.to_dict())
    else:
        click.echo(report.to_markdown(), nl=False)
