"""The CLI's batch store (judge/batching.py `BatchStore`): two tables in the call cache's SQLite
file (PJUDGE_CACHE). `pjudge judge --batch` interrupted (Ctrl-C, a crash, a closed laptop) and run
again with the same items and profile finds its provider batches here, polls them instead of
sending the requests again, and reads the answers already downloaded.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from judge.batching import (
    LIVE_BATCH,
    LiveBatch,
    Planned,
    RequestState,
    ended,
    request_state,
)
from judge.cache import SqliteCallCache
from judge.providers.batch_api import BatchOutcome

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS provider_batches (row INTEGER PRIMARY KEY AUTOINCREMENT, provider TEXT NOT NULL, "
    "batch_id TEXT, input_file_id TEXT, status TEXT NOT NULL, error TEXT, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS provider_batch_requests (row INTEGER NOT NULL, custom_id TEXT NOT NULL, "
    "key TEXT NOT NULL, status TEXT NOT NULL, raw TEXT, input_tokens INTEGER, output_tokens INTEGER, "
    "truncated_from INTEGER, error TEXT, PRIMARY KEY (row, custom_id))",
    "CREATE INDEX IF NOT EXISTS ix_provider_batch_requests_key ON provider_batch_requests (key)",
)
# A batch row's status: submitting (row written, batch id not yet), live (sent), ended (answers
# stored), failed (not sent), lost (a process died while sending it).
LIVE = LIVE_BATCH


class SqliteBatchStore:
    def __init__(self, cache: SqliteCallCache):
        self.cache = cache
        self.path = Path(cache.path)
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def close(self) -> None:
        self._conn.close()

    def state(self, key: str) -> RequestState:
        rows = self._conn.execute(
            "SELECT r.status, r.raw, r.input_tokens, r.output_tokens, r.truncated_from, r.error, b.status "
            "FROM provider_batch_requests r JOIN provider_batches b ON b.row = r.row WHERE r.key = ? ORDER BY r.row",
            (key,)).fetchall()
        return request_state(rows)

    def live(self) -> list[LiveBatch]:
        return [LiveBatch(row, batch_id) for row, batch_id in self._conn.execute(
            "SELECT row, batch_id FROM provider_batches WHERE status = 'live' ORDER BY row")]

    def orphans(self) -> list[tuple[int, str | None]]:
        # One CLI at a time per cache file: a row still "submitting" was left by a process that died.
        return [(row, file_id) for row, file_id in self._conn.execute(
            "SELECT row, input_file_id FROM provider_batches WHERE status = 'submitting' ORDER BY row")]

    def lost(self, row: int) -> None:
        self._conn.execute("UPDATE provider_batches SET status = 'lost' WHERE row = ?", (row,))

    def live_batch_ids(self) -> list[str]:
        return [b.batch_id for b in self.live() if b.batch_id]

    def begin(self, provider: str, requests: Sequence[Planned]) -> int:
        with self._conn:
            self._conn.execute("BEGIN")
            cursor = self._conn.execute("INSERT INTO provider_batches (provider, status, created) VALUES (?, ?, ?)",
                                        (provider, "submitting", time.time()))
            row = int(cursor.lastrowid or 0)
            self._conn.executemany(
                "INSERT INTO provider_batch_requests (row, custom_id, key, status) VALUES (?, ?, ?, 'pending')",
                [(row, p.custom_id, p.key) for p in requests])
        return row

    def set_file(self, row: int, input_file_id: str | None) -> None:
        self._conn.execute("UPDATE provider_batches SET input_file_id = ? WHERE row = ?", (input_file_id, row))

    def set_batch(self, row: int, batch_id: str) -> None:
        self._conn.execute("UPDATE provider_batches SET batch_id = ?, status = 'live' WHERE row = ?", (batch_id, row))

    def failed(self, row: int, error: str) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute("UPDATE provider_batches SET status = 'failed', error = ? WHERE row = ?", (error, row))
            self._conn.execute("UPDATE provider_batch_requests SET status = 'failed', error = ? WHERE row = ?",
                               (error, row))

    def finish(self, row: int, outcomes: Sequence[BatchOutcome]) -> None:
        keys = dict(self._conn.execute("SELECT custom_id, key FROM provider_batch_requests WHERE row = ?", (row,)))
        end = ended(keys, outcomes)
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "UPDATE provider_batch_requests SET status = 'answered', raw = ?, input_tokens = ?, "
                "output_tokens = ?, truncated_from = ? WHERE row = ? AND custom_id = ?",
                [(result.text, result.input_tokens, result.output_tokens, result.truncated_from, row, custom_id)
                 for custom_id, result in end.answered.items()])
            self._conn.executemany(
                "UPDATE provider_batch_requests SET status = 'failed', error = ? WHERE row = ? AND custom_id = ?",
                [(error, row, custom_id) for custom_id, error in end.failed.items()])
            self._conn.execute("UPDATE provider_batches SET status = 'ended' WHERE row = ?", (row,))
        for custom_id, result in end.whole.items():  # the call cache
            self.cache.put(keys[custom_id], result)

    def forget_finished(self) -> None:
        """After the verdicts are written: drop the ended batches (their answers are in the call
        cache, so a rerun reads them as cached, as interactive)."""
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute("DELETE FROM provider_batch_requests WHERE row IN "
                               "(SELECT row FROM provider_batches WHERE status NOT IN ('submitting', 'live'))")
            self._conn.execute("DELETE FROM provider_batches WHERE status NOT IN ('submitting', 'live')")
