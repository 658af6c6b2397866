"""Shared CLI plumbing: error handling with the documented exit codes, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click

from judge.jsonl import InputError

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


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
        except Exception as exc:  # noqa: BLE001 - the top of the CLI
            from judge.providers.base import redact

            click.echo(f"error: {redact(str(exc)) or type(exc).__name__}", err=True)
            sys.exit(EXIT_FAILURE)

    return wrapper


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
