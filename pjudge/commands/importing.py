"""`pjudge import FORMAT PATH... -o VERDICTS.jsonl [--labels FILE]` (SPEC section 5)."""

from __future__ import annotations

from typing import Any

import click

from judge.importers import FORMATS, import_verdicts
from judge.jsonl import write_jsonl
from judge.records import Verdict
from pjudge.common import echo_json, handle_errors, probe_output, refuse_overwriting_inputs


def summary(source_format: str, paths: list[str], output: str, verdicts: list[Verdict]) -> dict[str, Any]:
    labelled = [v for v in verdicts if v.human_label is not None]
    return {
        "format": source_format,
        "files": paths,
        "output": output,
        "verdicts": len(verdicts),
        "labelled": len(labelled),
        # Labelled items with a winner A or B: the `decided` count of the report (SPEC 4).
        "decided": sum(1 for v in labelled if v.decided),
        "unparsed": sum(1 for v in verdicts if v.winner is None),
    }


def _format_help() -> str:
    return "; ".join(f"{name}: {importer.description}" for name, importer in FORMATS.items())


@click.command("import", help=f"""Turn recorded outputs of published judge tools into verdicts.

FORMAT is one of: {_format_help()}.

Raw judge text is re-parsed with this project's parsers where the tool recorded it. Every file is
read and checked before anything is written: bad input exits with code 2 and no output.""")
@click.argument("source_format", metavar="FORMAT", type=click.Choice(list(FORMATS)))
@click.argument("paths", metavar="PATH...", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Verdicts file to write (JSON Lines).")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Human labels for faireval/fastchat: CHATGPT / VICUNA13B / TIE, one per line, "
                   "line i for the i-th question in question_id order.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Summary printed to stdout.")
@handle_errors
def import_command(source_format: str, paths: tuple[str, ...], output: str, labels: str | None,
                   output_format: str) -> None:
    files = list(paths)
    refuse_overwriting_inputs({"-o": output}, [*files, labels])
    # Everything is imported (and validated) before the output file is opened.
    verdicts = import_verdicts(source_format, files, labels=labels)
    probe_output(output)
    write_jsonl(output, verdicts)
    document = summary(source_format, files, output, verdicts)
    if output_format == "json":
        echo_json(document)
        return
    click.echo(
        f"imported {document['verdicts']} verdicts from {len(files)} file(s) into {output} "
        f"({document['labelled']} labelled, {document['decided']} labelled and decided, "
        f"{document['unparsed']} without a winner)"
    )
