"""Settings and per-app state shared by the blueprints (kept off module globals so that several
apps, e.g. one per test, can live in one process)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy.engine import Engine

from api.metrics import HttpMetrics
from store.repo import hash_key

Enqueue = Callable[[Any], Any]

DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_BODY_MB = 50.0
DEFAULT_STATS_MAX_VERDICTS = 500_000


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class ApiSettings:
    """Read once when the app is built: from `config`, else the environment, else the default."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
    # Hashes of the keys listed in PJUDGE_API_KEYS; the keys themselves are not kept.
    env_key_hashes: frozenset[str] = frozenset()
    # Off by default: a profile sent over HTTP may not name files on the server (profile or
    # template paths, replay_path), or a client could make the server read any file it can.
    allow_server_paths: bool = False
    # Prefixes a profile's base_url must start with (PJUDGE_API_BASE_URLS, comma-separated); empty
    # accepts any. Set it on a shared server: a client-chosen base_url receives the server's key.
    allowed_base_urls: tuple[str, ...] = ()
    metrics_require_auth: bool = False
    stats_max_verdicts: int = DEFAULT_STATS_MAX_VERDICTS

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None) -> ApiSettings:
        config = dict(config or {})

        def get(name: str, default: Any) -> Any:
            if name in config:
                return config[name]
            return os.environ.get(name, default)

        keys = get("PJUDGE_API_KEYS", "")
        if isinstance(keys, str):
            keys = keys.split(",")
        hashes = frozenset(hash_key(k.strip()) for k in keys if k and k.strip())
        batch_size = int(get("PJUDGE_BATCH_SIZE", DEFAULT_BATCH_SIZE))
        if batch_size < 1:
            raise ValueError("PJUDGE_BATCH_SIZE must be at least 1")
        max_mb = float(get("PJUDGE_MAX_BODY_MB", DEFAULT_MAX_BODY_MB))
        if max_mb <= 0:
            raise ValueError("PJUDGE_MAX_BODY_MB must be positive")
        base_urls = get("PJUDGE_API_BASE_URLS", "")
        if isinstance(base_urls, str):
            base_urls = base_urls.split(",")
        return cls(
            batch_size=batch_size,
            max_body_bytes=int(max_mb * 1024 * 1024),
            env_key_hashes=hashes,
            allow_server_paths=_truthy(get("PJUDGE_API_ALLOW_SERVER_PATHS", False)),
            allowed_base_urls=tuple(u.strip() for u in base_urls if u and u.strip()),
            metrics_require_auth=_truthy(get("PJUDGE_METRICS_AUTH", False)),
            stats_max_verdicts=int(get("PJUDGE_STATS_MAX_VERDICTS", DEFAULT_STATS_MAX_VERDICTS)),
        )


@dataclass
class ApiState:
    engine: Engine
    enqueue: Enqueue
    settings: ApiSettings
    metrics: HttpMetrics = field(default_factory=HttpMetrics)


def state() -> ApiState:
    return current_app.extensions["pjudge"]  # type: ignore[no-any-return]
