"""Log lines: text as before, or one JSON object per event (PJUDGE_LOG_FORMAT=json).

A JSON line holds the time, level, logger and message, and the job, batch and item ids where
known: from the record's `extra` (job_id, batch, item_id) or from the ids bound to the running
context (`bound`, set around a worker's batch; asyncio tasks inherit it). Nothing secret gets out:
the message and any traceback pass through `scrub` (judge.providers.base.redact: key-like strings
and the values of key variables struck; URL passwords masked), as worker.tasks.safe_traceback.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

IDS = ("job_id", "batch", "item_id")
_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("pjudge_log_ids", default=None)
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^@/\s]+@")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def scrub(text: str) -> str:
    """`text` without secrets: key-like strings and key variables' values struck, URL passwords masked."""
    from judge.providers.base import redact

    return _URL_PASSWORD.sub(r"\1***@", redact(text))


@contextlib.contextmanager
def bound(**ids: str | None) -> Iterator[None]:
    """Add `ids` (job_id, batch, item_id) to every log line of this context."""
    current = dict(_context.get() or {})
    current.update({key: value for key, value in ids.items() if value is not None})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


def bound_ids() -> dict[str, str]:
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        ids = bound_ids()
        for key in IDS:
            value = getattr(record, key, None) or ids.get(key)
            if value is not None:
                document[key] = str(value)
        if record.exc_info and record.exc_info[1] is not None:
            document["error"] = scrub("".join(self.formatException(record.exc_info)))
        return json.dumps(document, ensure_ascii=False)


def configure(level: int | str = logging.INFO, fmt: str | None = None, stream: Any = None) -> None:
    """The root logger's one handler: text (TEXT_FORMAT) or JSON lines (PJUDGE_LOG_FORMAT)."""
    if fmt is None:
        from judge.settings import settings

        fmt = settings().log_format
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a library's warnings become lines of the same format
