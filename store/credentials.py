"""Tenants' provider keys: stored encrypted per owner (the API key's hash), listed without the
key, decrypted only by a worker building the provider of the owner's own job."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from store import vault
from store.db import transaction
from store.models import Credential


def create(engine: Engine, owner: str, name: str, provider: str, api_key: str) -> Credential | None:
    """The stored credential; None when the owner already has one of that name."""
    row = Credential(owner=owner, name=name, provider=provider, ciphertext=vault.encrypt(api_key))
    try:
        with transaction(engine) as conn:
            result = conn.execute(insert(Credential).values(**row.model_dump(exclude={"id"})))
    except IntegrityError:
        return None
    row.id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    return row


def listing(engine: Engine, owner: str) -> list[tuple[str, str, datetime]]:
    """(name, provider, created_at) of the owner's credentials, by name."""
    with engine.connect() as conn:
        rows = conn.execute(select(col(Credential.name), col(Credential.provider), col(Credential.created_at))
                            .where(col(Credential.owner) == owner).order_by(col(Credential.name))).all()
    return [(r[0], r[1], r[2]) for r in rows]


def provider_of(engine: Engine, owner: str, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(col(Credential.provider)).where(
            col(Credential.owner) == owner, col(Credential.name) == name)).scalar_one_or_none()


def remove(engine: Engine, owner: str, name: str) -> bool:
    with transaction(engine) as conn:
        result = conn.execute(delete(Credential).where(
            col(Credential.owner) == owner, col(Credential.name) == name))
    return bool(result.rowcount)


def key_of(engine: Engine, owner: str, name: str) -> tuple[str, str] | None:
    """(provider, decrypted key) of the owner's credential; None when it no longer exists."""
    with engine.connect() as conn:
        row = conn.execute(select(col(Credential.provider), col(Credential.ciphertext))
                           .where(col(Credential.owner) == owner, col(Credential.name) == name)).first()
    return None if row is None else (row[0], vault.decrypt(row[1]))
