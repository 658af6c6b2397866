"""The call cache: raw answers keyed by a hash of the normalized request.

The key covers everything that can change an answer (provider kind, model, messages, sampling
parameters, template name/version/text hash, sample index, attempt) and who answered it: the
endpoint (normalized base URL) and a fingerprint of the credential (judge.endpoints.Access.
cache_scope; never the key), so an answer from one server never stands for another's. Not the item
id: a rerun of the same items and profile against the same endpoint costs zero calls. The service
also scopes entries per tenant (worker/cache.py).

An entry keeps the answer and its token counts, not what the provider's prompt cache served: a
replayed call was not sent and costs nothing, so it claims no prompt-cache savings (its Call has no
cached_input_tokens or cache_write_tokens; judge.records.Call).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from judge.private import private_sqlite
from judge.providers.base import CallRequest, CallResult


def cache_key(provider: str, template_key: str, request: CallRequest, scope: str = "") -> str:
    normalized: dict[str, Any] = {
        "provider": provider,
        "scope": scope,
        "model": request.model,
        "template": template_key,
        "messages": [{"role": m["role"], "content": m["content"]} for m in request.messages],
        "temperature": round(float(request.temperature), 6),
        "max_tokens": int(request.max_tokens),
        "sample": request.sample,
        "attempt": request.attempt,
    }
    blob = json.dumps(normalized, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache(Protocol):
    def get(self, key: str) -> CallResult | None: ...

    def put(self, key: str, result: CallResult) -> None: ...


class NullCache:
    def get(self, key: str) -> CallResult | None:
        return None

    def put(self, key: str, result: CallResult) -> None:
        return None


class SqliteCallCache:
    """A SQLite file shared safely by threads and processes (WAL; each write is its own commit)."""

    def __init__(self, path: str | Path):
        self.path = private_sqlite(Path(path))
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, raw TEXT NOT NULL, "
                "input_tokens INTEGER, output_tokens INTEGER, created REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> CallResult | None:
        row = self._connect().execute(
            "SELECT raw, input_tokens, output_tokens FROM calls WHERE key = ?", (key,)
        ).fetchone()
        return CallResult(text=row[0], input_tokens=row[1], output_tokens=row[2]) if row else None

    def put(self, key: str, result: CallResult) -> None:
        self._connect().execute(
            "INSERT OR REPLACE INTO calls (key, raw, input_tokens, output_tokens, created) VALUES (?, ?, ?, ?, ?)",
            (key, result.text, result.input_tokens, result.output_tokens, time.time()),
        )

    def __len__(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM calls").fetchone()[0])
