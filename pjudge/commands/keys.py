"""`pjudge keys`: create, list and revoke API keys (stored hashed; a key is shown once)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from pjudge.common import EXIT_BAD_INPUT, echo_json, handle_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def _engine() -> Engine:
    from store.db import get_engine

    return get_engine()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@click.group("keys")
def keys_command() -> None:
    """API keys of `pjudge serve` (in the database named by DATABASE_URL)."""


@keys_command.command("create")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def create(name: str, fmt: str) -> None:
    """Create a key and print it (the last word of the output). Only its hash is stored: it
    cannot be shown again."""
    from store import repo

    key, row = repo.create_api_key(_engine(), name=name)
    if fmt == "json":
        echo_json({"id": row.id, "name": row.name, "prefix": row.prefix, "key": key})
        return
    label = f" '{name}'" if name else ""
    click.echo(f"created key {row.id}{label} (prefix {row.prefix}); store it now, it is not shown again:")
    click.echo(key)


@keys_command.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def list_keys(fmt: str) -> None:
    """List keys: id, name, prefix, created, revoked (never the keys themselves)."""
    from store import repo

    rows = repo.list_api_keys(_engine())
    documents = [{"id": r.id, "name": r.name, "prefix": r.prefix, "created_at": _iso(r.created_at),
                  "revoked_at": _iso(r.revoked_at)} for r in rows]
    if fmt == "json":
        echo_json(documents)
        return
    if not documents:
        click.echo("no keys")
        return
    click.echo(f"{'id':>4}  {'prefix':<12} {'created':<25} {'revoked':<25} name")
    for d in documents:
        click.echo(f"{d['id']:>4}  {d['prefix']:<12} {d['created_at'] or '':<25} {d['revoked_at'] or '-':<25} {d['name']}")


@keys_command.command("revoke")
@click.argument("key_id_or_prefix")
@handle_errors
def revoke(key_id_or_prefix: str) -> None:
    """Revoke a key by its id or its prefix (as `keys list` shows them); it stops working at once."""
    from store import repo

    count = repo.revoke_api_key(_engine(), key_id_or_prefix)
    if not count:
        click.echo(f"error: no active key with id or prefix '{key_id_or_prefix}'", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    click.echo(f"revoked {count} key(s)")


@keys_command.command("webhook-secret")
@click.argument("key_id_or_prefix")
@handle_errors
def webhook_secret(key_id_or_prefix: str) -> None:
    """Print the webhook signing secret (whsec_...) of an active key, by its id or prefix, made on
    first use; the key's owner reads the same one at GET /v1/webhook-secret (the only way for a
    key listed in PJUDGE_API_KEYS)."""
    from store import repo, webhooks

    engine = _engine()
    rows = [r for r in repo.list_api_keys(engine) if r.revoked_at is None
            and (str(r.id) == key_id_or_prefix or r.prefix == key_id_or_prefix)]
    if len(rows) != 1:
        problem = "no active key" if not rows else "more than one active key"
        click.echo(f"error: {problem} with id or prefix '{key_id_or_prefix}'", err=True)
        raise SystemExit(EXIT_BAD_INPUT)
    click.echo(webhooks.secret_of(engine, rows[0].key_hash))
