"""Shared CLI plumbing: error handling with the documented exit codes, JSON output."""

from __future__ import annotations

import functools
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from judge.jsonl import InputError, replaced_file

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


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


def settings_problems(error: Exception) -> list[str] | None:
    """'VARIABLE: message' for each bad setting when `error` is the settings' ValidationError (never
    the value: it may be a secret); else None."""
    from pydantic import ValidationError

    from judge.settings import Settings

    if not isinstance(error, ValidationError) or error.title != Settings.__name__:
        return None
    lines = []
    for detail in error.errors(include_input=False, include_url=False):
        field = str(detail["loc"][0]) if detail["loc"] else ""
        message = detail["msg"].removeprefix("Value error, ")
        lines.append(f"{variable_name(field) if field in Settings.model_fields else field}: {message}")
    return lines


def setting_default(name: str) -> Callable[[], Any]:
    """A click default read from the settings: a bad environment is a usage error (exit 2) naming the
    variable, not a traceback (click computes defaults before the command's own error handling)."""

    def default() -> Any:
        from judge.settings import settings

        try:
            value = getattr(settings(), name)
        except Exception as exc:  # noqa: BLE001 - only the settings' own ValidationError is rewritten
            problems = settings_problems(exc)
            if problems is None:
                raise
            raise click.UsageError("; ".join(problems)) from None
        return value.get_secret_value() if hasattr(value, "get_secret_value") else value

    return default


def bad_input_types() -> tuple[type[BaseException], ...]:
    from judge.profiles import ProfileError
    from judge.templates import TemplateError

    return (InputError, ProfileError, TemplateError)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Bad input exits 2 with a message naming file, line and field; anything else exits 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except bad_input_types() as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # stdout closed early (`pjudge config | head -1`): nothing to report, and nothing more may be
            # flushed to it at exit (Python would print "Exception ignored ... BrokenPipeError").
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError, io.UnsupportedOperation):  # a stdout without a descriptor
                pass
            sys.exit(EXIT_FAILURE)
        except Exception as exc:  # noqa: BLE001 - the top of the CLI
            from judge.providers.base import redact

            problems = settings_problems(exc)
            if problems is not None:  # a bad environment variable: bad input, named
                for line in problems:
                    click.echo(f"error: {line}", err=True)
                sys.exit(EXIT_BAD_INPUT)

            click.echo(f"error: {redact(str(exc)) or type(exc).__name__}", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))


class FloatRange(click.FloatRange):
    """click.FloatRange that also refuses NaN and, unbounded, infinity: click compares the bounds only,
    and NaN fails no comparison (`--threshold nan`, `--noise nan` passed as numbers)."""

    name = "float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:  # an unreadable path: not provably the same file
        return False


def refuse_overwriting_inputs(outputs: dict[str, Path | str | None], inputs: Sequence[Path | str | None]) -> None:
    """Usage error (exit 2) when an output option names one of the command's input files: the run
    would replace what it reads (`pjudge judge items.jsonl -o items.jsonl` lost the items).
    `outputs` maps each option's flag to its path."""
    given = [Path(p) for p in inputs if p is not None]
    for flag, output in outputs.items():
        if output is None:
            continue
        for path in given:
            if same_file(Path(output), path):
                raise click.BadParameter(f"'{output}' is an input of this command; write the output elsewhere",
                                         param_hint=f"'{flag}'")


def probe_output(path: Path | str | None, flag: str = "-o") -> None:
    """Fail before any work (judge calls, a submitted job) when `path` cannot be written: an empty
    path or a folder is a usage error (exit 2); otherwise its folder is made and a scratch file
    created and removed there, as the atomic writers do at the end (exit 1 when that fails)."""
    if path is None:
        return
    if str(path) in ("", ".") or Path(path).is_dir():
        shown = f"'{path}' is a directory" if str(path) else "an empty path"
        raise click.BadParameter(f"{shown}, not a file", param_hint=f"'{flag}'")
    target = replaced_file(path)  # where AtomicFile will write
    if target is None:  # /dev/stdout, a FIFO: written in place
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, scratch = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=target.parent)
        os.close(descriptor)
        os.unlink(scratch)
    except OSError as exc:
        raise click.FileError(str(target), hint=f"cannot write there: {exc.strerror or exc}") from None
