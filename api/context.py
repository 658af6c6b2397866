"""Settings and per-app state shared by the blueprints (kept off module globals so that several
apps, e.g. one per test, can live in one process)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy.engine import Engine

from api.metrics import ApiMetrics, DatabaseCollector
from api.throttle import AuthThrottle
from judge.prices import PriceTable, price_table
from judge.settings import Settings, settings
from store.models import Job
from store.repo import hash_key

Enqueue = Callable[[Job], object]  # sends a stored job to the workers; what it returns is unused
# Sends positions [start, end) of a job started early (api.pages) to the workers.
EnqueueRange = Callable[[Job, int, int], object]

@dataclass(frozen=True)
class ApiSettings:
    """What the API needs of judge.settings.Settings, read once when the app is built: the
    `config` given to create_app (PJUDGE_* names), else the environment, else the default."""

    config: Settings
    batch_size: int
    max_body_bytes: int
    max_upload_bytes: int  # an NDJSON upload of items (api.pages), read a line at a time
    # Hashes of the keys listed in PJUDGE_API_KEYS; the keys themselves are not kept.
    env_key_hashes: frozenset[str]
    # Off by default: a profile sent over HTTP may not name files on the server (profile or
    # template paths, replay_path), or a client could make the server read any file it can.
    allow_server_paths: bool
    metrics_require_auth: bool
    stats_max_verdicts: int
    # What jobs on the server's provider keys cost, by model (PJUDGE_PRICES over the built-in
    # prices): read when the app is built, so a bad table stops the start, not a request.
    prices: PriceTable
    auth_failures_per_minute: int

    @classmethod
    def load(cls, config: Mapping[str, Any] | None = None) -> ApiSettings:
        overrides = {name[len("PJUDGE_"):].lower(): value for name, value in (config or {}).items()
                     if name.startswith("PJUDGE_")}
        base = Settings(**overrides) if overrides else settings()
        return cls.from_settings(base)

    @classmethod
    def from_settings(cls, config: Settings) -> ApiSettings:
        return cls(
            config=config,
            batch_size=config.batch_size,
            max_body_bytes=int(config.max_body_mb * 1024 * 1024),
            max_upload_bytes=int(config.max_upload_mb * 1024 * 1024),
            env_key_hashes=frozenset(hash_key(key) for key in config.api_key_values),
            allow_server_paths=config.api_allow_server_paths,
            metrics_require_auth=config.metrics_auth,
            stats_max_verdicts=config.stats_max_verdicts,
            prices=price_table(config.prices),
            auth_failures_per_minute=config.auth_failures_per_minute,
        )


@dataclass
class ApiState:
    engine: Engine
    enqueue: Enqueue
    settings: ApiSettings
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    database_metrics: DatabaseCollector | None = None  # made on the first scrape (api.health)
    enqueue_range: EnqueueRange | None = None  # None: worker.tasks.enqueue_range
    throttle: AuthThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = AuthThrottle(self.settings.auth_failures_per_minute)


def state() -> ApiState:
    api_state: ApiState = current_app.extensions["pjudge"]  # set by api.app.create_app
    return api_state
