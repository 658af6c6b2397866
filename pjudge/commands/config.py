"""`pjudge config`: the effective settings of this environment, secrets masked."""

from __future__ import annotations

import json
import sys

import click

from pjudge.common import EXIT_BAD_INPUT, echo_json, handle_errors


def variable_name(field: str) -> str:
    """The environment variable of a Settings field: its alias (DATABASE_URL), else PJUDGE_<FIELD>."""
    from pydantic import AliasChoices

    from judge.settings import Settings

    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    if isinstance(alias, str):
        return alias
    return "PJUDGE_" + field.upper()


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
    from pydantic import ValidationError

    from judge.settings import Settings, settings

    try:
        current = settings()
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            field = str(error["loc"][0]) if error["loc"] else ""
            name = variable_name(field) if field in Settings.model_fields else field
            click.echo(f"error: {name}: {error['msg']}", err=True)
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
