"""`pjudge export`: the preference rows of local verdicts for training (judge.exports), as GET
/v1/jobs/{id}/export makes them for a job of the service: JSON Lines or Parquet."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from judge.exports import (
    PERSONA_MODES,
    Decision,
    ExportError,
    PersonaMode,
    Selection,
    is_parquet,
    jsonl_lines,
    preference_rows,
    resolve_persona,
    write_rows,
)
from judge.jsonl import InputError, InputProblem, read_items, read_verdicts
from pjudge.common import FloatRange, handle_errors, probe_output, refuse_overwriting_inputs


@click.command("export")
@click.argument("items_path", metavar="ITEMS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("verdicts_path", metavar="VERDICTS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write: Parquet for a .parquet name, else JSON Lines [default: JSON Lines on stdout].")
@click.option("--persona", type=click.Choice(PERSONA_MODES), default=None,
              help="raw: the persona as stored (JSON Lines only); column: as text; fold: into the prompt "
                   "[default: raw for JSON Lines, column for Parquet].")
@click.option("--conversational", is_flag=True, help="TRL's conversational format (lists of role/content messages).")
@click.option("--min-certainty", type=FloatRange(0.0, 1.0), default=None,
              help="Only verdicts at least this certain.")
@click.option("--consistent-only", is_flag=True, help="Only verdicts whose two orders agree.")
@handle_errors
def export_command(items_path: Path, verdicts_path: Path, output: Path | None, persona: PersonaMode | None,
                   conversational: bool, min_certainty: float | None, consistent_only: bool) -> None:
    """Write prompt/chosen/rejected rows (the columns TRL's DPOTrainer reads) of VERDICTS.jsonl.

    Only decided verdicts (winner A or B) that did not abstain become rows, in the order of
    ITEMS.jsonl (where prompts and responses come from), with id, winner, p_a, certainty,
    consistent and judge beside them.
    """
    refuse_overwriting_inputs({"-o": output}, [items_path, verdicts_path])
    probe_output(output)
    parquet = output is not None and is_parquet(output)
    selection = Selection(persona=resolve_persona(persona, parquet), conversational=conversational,
                          min_certainty=min_certainty, consistent_only=consistent_only)
    try:
        selection.check(parquet)
    except ExportError as exc:
        raise click.UsageError(f"--{exc.field.replace('_', '-')}: {exc}") from None
    items = read_items(items_path)
    decisions = {verdict.id: Decision.of(verdict) for verdict in read_verdicts(verdicts_path)}
    known = {item.id for item in items}
    unknown = [item_id for item_id in decisions if item_id not in known]
    if unknown:
        raise InputError(str(verdicts_path), [InputProblem(None, "id", f"verdict of item {unknown[0]!r}, which "
                                                           f"{items_path} does not have ({len(unknown)} such)")])
    pairs = ((item.model_dump(mode="json", exclude_none=True), decisions[item.id]) for item in items
             if item.id in decisions)
    rows = preference_rows(pairs, selection)
    if output is None:
        for line in jsonl_lines(rows):
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        return
    count = write_rows(output, rows, selection)
    click.echo(f"wrote {count} rows to {output}", err=True)
