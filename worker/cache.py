"""The call cache as a worker uses it: one query reads every first-attempt answer of a batch,
new answers stay in memory, and one statement writes them after the batch. Per-call database
round trips would otherwise cost more CPU than the calls themselves at 0 ms provider latency.

Entries are per tenant: with a `tenant` (the job's owner) every key is hashed with it, so one API
key's jobs never read answers another's stored, nor learn that another judged the same items."""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from judge.providers.base import CallResult
from store.bulk import insert_many
from store.db import transaction
from store.models import CacheEntry, table_of, utcnow
from store.repo import DbCallCache


class BatchCallCache:
    def __init__(self, engine: Engine, keys: list[str], tenant: str = ""):
        self.engine = engine
        self.tenant = tenant
        keys = [self._scoped(key) for key in keys]
        self._fallback = DbCallCache(engine)  # re-asks, whose keys are not known in advance
        self._known: dict[str, CallResult] = {}
        self._new: dict[str, CallResult] = {}
        if keys:
            with engine.connect() as conn:
                for start in range(0, len(keys), 500):
                    rows = conn.execute(
                        select(col(CacheEntry.key), col(CacheEntry.raw), col(CacheEntry.input_tokens),
                               col(CacheEntry.output_tokens))
                        .where(col(CacheEntry.key).in_(keys[start:start + 500]))
                    ).all()
                    for key, raw, input_tokens, output_tokens in rows:
                        self._known[key] = CallResult(text=raw, input_tokens=input_tokens, output_tokens=output_tokens)
        self._keys = set(keys)

    def _scoped(self, key: str) -> str:
        if not self.tenant:
            return key
        return hashlib.sha256(f"{self.tenant}\n{key}".encode()).hexdigest()

    def scoped_key(self, key: str) -> str:
        """The key as stored: hashed with the tenant (the batch-mode store writes entries itself)."""
        return self._scoped(key)

    def get(self, key: str) -> CallResult | None:
        key = self._scoped(key)
        if key in self._known:
            return self._known[key]
        if key in self._new:
            return self._new[key]
        if key in self._keys:
            return None  # read already: a miss
        return self._fallback.get(key)

    def put(self, key: str, result: CallResult) -> None:
        self._new[self._scoped(key)] = result

    def write(self, conn: Connection) -> int:
        """Insert the new answers in `conn`'s transaction; returns how many. Key order: two
        deliveries of one batch then lock the same rows in the same order (no deadlock)."""
        rows = [{"key": key, "raw": r.text, "input_tokens": r.input_tokens, "output_tokens": r.output_tokens,
                 "created_at": utcnow()} for key, r in sorted(self._new.items())]
        insert_many(conn, table_of(CacheEntry), rows, ignore_conflicts=True)
        return len(rows)

    def committed(self) -> None:
        """The transaction that wrote the new answers has committed."""
        self._known.update(self._new)
        self._new.clear()

    def flush(self) -> int:
        """Write the new answers in a transaction of their own."""
        if not self._new:
            return 0
        with transaction(self.engine) as conn:
            written = self.write(conn)
        self.committed()
        return written
