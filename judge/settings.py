"""Every setting of persona-judge in one object, read from the environment once per process.

Each field is one variable: `PJUDGE_<FIELD>` unless its alias says otherwise (`DATABASE_URL`,
`REDIS_URL`). `settings()` reads them on first use (never at import) and keeps them; a test that
changes the environment calls `reset_settings()`. `pjudge config` prints the effective values
with secrets masked. The module lives at the bottom layer (judge/) so every layer above may read
it; it imports nothing of the project.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """The service's configuration. Field docs are what `pjudge config` and the README show."""

    model_config = SettingsConfigDict(env_prefix="PJUDGE_", extra="ignore", frozen=True,
                                      populate_by_name=True, validate_default=True)

    # ------------------------------------------------------------ where things live
    home: str | None = Field(default=None, description="User data directory [default: the platform's].")
    cache: str | None = Field(default=None, description="The CLI's call cache file [default: <home>/cache.sqlite].")
    profiles: str = Field(default="", description="Extra profile folders (os.pathsep-separated).")
    templates: str = Field(default="", description="Extra template folders (os.pathsep-separated).")
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL [default: SQLite with WAL at <home>/pjudge.sqlite].")
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url"),
        description="The Celery broker [default: the embedded Redis of <home>].")
    base_url: str | None = Field(default=None, description="Default base URL of provider 'openai-compatible' "
                                 "(an operator-configured endpoint).")
    embedding_model: str = Field(default="", description="Embedding model of the personalization text measures.")

    # ------------------------------------------------------------ API
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(), description="Accepted API keys besides those of `pjudge keys create` (comma-separated).")
    batch_size: int = Field(default=32, ge=1, description="Items per worker task.")
    max_body_mb: float = Field(default=50.0, gt=0, description="Largest request body, in MB (413 beyond).")
    api_allow_server_paths: bool = Field(default=False, description="Let profiles sent over HTTP name files "
                                         "on the server (profile/template paths, replay_path).")
    api_base_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Prefixes a profile's base_url must start with over HTTP (comma-separated).")
    metrics_auth: bool = Field(default=False, description="/metrics needs an API key.")
    stats_max_verdicts: int = Field(default=500_000, ge=1, description="Most verdicts a stats query reads "
                                    "when it cannot use the summaries.")

    # ------------------------------------------------------------ worker
    visibility_timeout: int = Field(default=30, ge=1, description="Seconds before a dead worker's task returns.")
    worker_max_in_flight: int = Field(default=256, ge=1, description="Provider calls in flight per worker process.")
    sweep_after: float = Field(default=120.0, gt=0, description="Seconds without progress before a job's "
                               "batches are re-sent.")
    sweep_interval: float = Field(default=15.0, gt=0, description="Seconds between sweeps.")

    # ------------------------------------------------------------ serving edges (issue 12: correct edges)
    serve_connection_limit: int = Field(default=1000, ge=1, description="Most client connections `pjudge serve` "
                                        "(waitress) keeps open at once; more wait unanswered until one closes.")
    serve_channel_timeout: int = Field(default=30, ge=1, description="Seconds a connection with no request in "
                                       "progress stays open (waitress), so idle clients cannot hold every slot.")
    serve_cleanup_interval: int = Field(default=5, ge=1, description="Seconds between closes of idle "
                                        "connections (waitress).")
    auth_failures_per_minute: int = Field(default=30, ge=0, description="Failed authentications a client "
                                          "address may make per minute before 429 (per API process; 0: no limit).")

    @field_validator("api_keys", "api_base_urls", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @cached_property
    def api_key_values(self) -> tuple[str, ...]:
        return tuple(key.get_secret_value() for key in self.api_keys)

    def masked(self) -> dict[str, Any]:
        """Every field with secrets shown as '***' (and a URL's password struck)."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = mask_url(value.get_secret_value())
            elif isinstance(value, tuple) and value and isinstance(value[0], SecretStr):
                value = ["***"] * len(value)
            elif isinstance(value, tuple):
                value = list(value)
            shown[name] = value
        return shown


def mask_url(value: str) -> str:
    """A URL with its password replaced by '***' (other secrets: '***' whole)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return "***"
    if not parts.scheme or "://" not in value:
        return "***"
    if parts.password is None:
        return value
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


_settings: Settings | None = None
_lock = threading.Lock()


def settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = Settings()
        return _settings


def reset_settings() -> None:
    """Forget the settings read so far (tests that change the environment)."""
    global _settings
    with _lock:
        _settings = None

