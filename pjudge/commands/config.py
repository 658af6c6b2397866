"""`pjudge config`: the effective settings of this environment, secrets masked."""

from __future__ import annotations

import json
import sys

import click

from pjudge.common import EXIT_BAD_INPUT, echo_json, handle_errors, settings_problems, variable_name


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)


@click.command("config")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def config_command(fmt: str) -> None:
    """Print the effective settings: each variable's value from the environment, else its default.
    Secrets are masked: API keys as '***', the password of a database or Redis URL struck."""
    from judge.settings import Settings, settings

    try:
        current = settings()
    except Exception as exc:  # noqa: BLE001 - only the settings' ValidationError is ours to say
        problems = settings_problems(exc)
        if problems is None:
            raise
        for line in problems:
            click.echo(f"error: {line}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    shown = current.masked()
    if fmt == "json":
        echo_json({"settings": {variable_name(field): value for field, value in shown.items()},
                   "set": sorted(variable_name(field) for field in current.model_fields_set)})
        return
    rows = [(variable_name(field), _shown(value), "" if field in current.model_fields_set else "(default)",
             Settings.model_fields[field].description or "") for field, value in shown.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])
