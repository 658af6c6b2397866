"""Every setting of persona-judge in one object, read from the environment once per process.

Each field is one variable: `PJUDGE_<FIELD>` unless its alias says otherwise (`DATABASE_URL`,
`REDIS_URL`). `settings()` reads them on first use (never at import) and keeps them; a test that
changes the environment calls `reset_settings()`. `pjudge config` prints the effective values
with secrets masked. The module lives at the bottom layer (judge/) so every layer above may read
it; it imports nothing of the project.
"""

from __future__ import annotations

import re
import threading
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


# What store.db.database_url hands SQLAlchemy (it names psycopg 3 for the postgres ones).
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")


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
        default=(), description="Older name of PJUDGE_ENDPOINTS (its entries are added to them).")
    metrics_auth: bool = Field(default=False, description="/metrics needs an API key.")
    stats_max_verdicts: int = Field(default=500_000, ge=1, description="Most verdicts a stats query reads "
                                    "when it cannot use the summaries.")

    # ------------------------------------------------------------ worker
    visibility_timeout: int = Field(default=30, ge=1, description="Seconds before a dead worker's task returns.")
    worker_max_in_flight: int = Field(default=256, ge=1, description="Provider calls in flight per worker host: "
                                      "`pjudge worker` splits it evenly across its processes (at least 1 each).")
    worker_processes: int | None = Field(default=None, ge=1, le=256, description="Worker processes `pjudge worker` "
                                         "runs (its --processes) [default: one per core].")
    # ------------------------------------------------------------ worker judges (issue 12: attacker review)
    worker_max_judges: int = Field(default=32, ge=1, description="Judges (one per distinct profile and "
                                   "endpoint, each with its provider client and connections) a worker "
                                   "process keeps; the least recently used idle one beyond this is closed.")
    sweep_after: float = Field(default=120.0, gt=0, description="Seconds without progress before a job's "
                               "batches are re-sent.")
    sweep_interval: float = Field(default=15.0, gt=0, description="Seconds between sweeps.")
    batch_poll_s: float = Field(default=30.0, gt=0, description="Batch mode: seconds between polls of the "
                                "provider batches in flight (worker and `pjudge judge --batch`).")
    batch_max_tries: int = Field(default=3, ge=1, le=20, description="Batch mode: how many batches a request "
                                 "goes in (errored, expired or cancelled ones are sent again) before its call "
                                 "is an error.")

    # ------------------------------------------------------------ client: `pjudge submit` (infra slice)
    url: str | None = Field(default=None, description="Base URL of the API that `pjudge submit` talks to "
                            "(its --url).")
    api_key: SecretStr | None = Field(default=None, description="API key `pjudge submit` sends (its --key; "
                                      "prefer this variable: a flag shows in the process list).")

    # ------------------------------------------------------------ bounds, quotas and prices (issue 12)
    # A profile sent over HTTP multiplies the provider requests and tokens of every item: orders x
    # samples x (1 + re-asks) calls, each up to (1 + retries) requests of up to max_tokens tokens.
    api_max_samples: int = Field(default=8, ge=1, description="Largest `samples` a profile sent over HTTP "
                                 "may ask for (422 beyond).")
    api_max_reasks: int = Field(default=3, ge=0, description="Largest `max_reasks` over HTTP (422 beyond).")
    api_max_retries: int = Field(default=8, ge=0, description="Largest `max_retries` over HTTP (422 beyond).")
    api_max_tokens: int = Field(default=4096, ge=1, description="Largest `max_tokens` over HTTP (422 beyond).")
    api_max_timeout_s: float = Field(default=300.0, gt=0, description="Largest `timeout_s` over HTTP, in "
                                     "seconds (422 beyond).")
    # A judge's answer is short (the built-in profiles ask for at most 512 tokens): 8,192 characters
    # hold about 2,000 tokens, while each call of a samples-8 item may store this much.
    raw_max_chars: int = Field(default=8192, ge=256, description="Longest raw answer kept on a call, in "
                               "characters (CLI and service): a longer one is cut, parsed as cut, never "
                               "cached, and its call records its full length in `raw_truncated_from`.")
    provider_max_answer_mb: float = Field(default=4.0, gt=0, description="Largest answer body, in MB, the "
                                          "direct transport reads from a provider (a larger one fails the call).")
    quota_items_per_day: int | None = Field(default=None, ge=1, description="Items (pair items) one API key "
                                            "may submit in 24 h, over its jobs of the last 24 h (a staged job "
                                            "counts from its latest page or its start; 429 beyond) "
                                            "[default: no limit].")
    quota_cost_per_day: float | None = Field(default=None, gt=0, description="USD one API key's jobs of the "
                                             "last 24 h may cost; once reached, new jobs are refused (429) and "
                                             "the items of its running jobs get `quota:` error verdicts instead "
                                             "of calls [default: no limit].")
    prices: str = Field(default="", description="Server-side prices of jobs sent over HTTP, USD per million "
                        "tokens by model: inline JSON or a path to a .json/.toml file of {model: "
                        "{input_per_mtok, output_per_mtok}} ('*': any other model), over the built-in ones "
                        "(the built-in profiles' models and the simulator's). A model without a price is "
                        "refused (422).")

    # ------------------------------------------------------------ endpoints and credentials (issue 12:
    # the credential model, cache isolation). judge/endpoints.py applies them.
    endpoints: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Operator-configured provider endpoints besides each provider's default, "
        "OPENAI_BASE_URL, ANTHROPIC_BASE_URL and PJUDGE_BASE_URL (comma-separated, compared exactly: scheme, "
        "host, port, path). `URL`: an endpoint of every provider, given no server key. `provider=URL`: an "
        "endpoint of that provider, given its server key (OPENAI_API_KEY for openai and openai-compatible, "
        "ANTHROPIC_API_KEY for anthropic). `provider=URL|VAR`: given the key in variable VAR instead.")
    client_endpoints: bool = Field(default=True, description="Profiles sent over HTTP may name other base "
                                   "URLs (checked at POST and at call time, never given a server key).")
    allow_private_endpoints: bool = Field(default=False, description="Client-chosen endpoints may be loopback, "
                                          "private, link-local or otherwise non-public addresses (cloud "
                                          "metadata addresses stay refused).")
    api_key_envs: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Variables a profile sent over HTTP may name in api_key_env (comma-separated); "
        "each is sent only where a PJUDGE_ENDPOINTS entry `provider=URL|VAR` (or the provider's own "
        "binding) binds it.")
    secret_key: SecretStr | None = Field(default=None, description="Encrypts the tenants' stored provider keys "
                                         "[default: a key file generated in <home>, mode 0600].")
    shared_cache: bool = Field(default=False, description="API keys share the call-cache entries made with the "
                               "operator's endpoints and keys (else each API key has its own entries).")

    # ------------------------------------------------------------ fairness and bounds (issue 12: scheduling)
    call_deadline_s: float = Field(default=300.0, gt=0, description="Most seconds one provider call may take, "
                                   "the provider's own retries included; then it fails like a provider error.")
    lanes: int = Field(default=16, ge=1, le=256, description="Queue lanes: each tenant with queued batches gets "
                       "a lane of its own (while there are lanes), and workers take from the lanes in turn.")
    tenant_share: float = Field(default=0.5, gt=0, le=1, description="Most of a worker's threads one tenant's "
                                "batches keep while another tenant's batches wait (each keeps the threads over "
                                "the tenants running or waiting, at least one); the rest are handed back.")
    shutdown_grace_s: float = Field(default=5.0, ge=0, description="Seconds a stopping worker lets running "
                                    "batches finish before it hands them back to the queue.")

    # ------------------------------------------------------------ serving edges (issue 12: correct edges)
    serve_connection_limit: int = Field(default=1000, ge=1, description="Most client connections `pjudge serve` "
                                        "(waitress) keeps open at once; more wait unanswered until one closes.")
    serve_channel_timeout: int = Field(default=30, ge=1, description="Seconds a connection with no request in "
                                       "progress stays open (waitress), so idle clients cannot hold every slot.")
    serve_cleanup_interval: int = Field(default=5, ge=1, description="Seconds between closes of idle "
                                        "connections (waitress).")
    auth_failures_per_minute: int = Field(default=30, ge=0, description="Failed authentications a client "
                                          "address may make per minute before 429 (per API process; 0: no limit).")

    # ------------------------------------------------------------ storage, pages and connections (issue 12:
    # attacker review, slice s3)
    verdict_page_mb: float = Field(default=8.0, gt=0, description="Largest page of GET /v1/jobs/{id}/verdicts, "
                                   "in MB of JSON: a page ends early there (always at least one verdict) and "
                                   "its next_cursor continues.")
    max_job_mb: float = Field(default=200.0, gt=0, description="Largest job, in MB of stored pair items (JSON), "
                              "checked before anything is stored: POST /v1/jobs and the pair items "
                              "/v1/personalization expands its responses into (422 beyond).")
    max_job_items: int = Field(default=1_000_000, ge=1, description="Most pair items of a staged job (filled "
                               "in pages by POST /v1/jobs/{id}/items; 422 beyond).")
    max_open_jobs: int = Field(default=100, ge=1, description="Most staged jobs one API key may hold open to "
                               "pages at once (POST /v1/jobs with staged: true is a 409 beyond: start or "
                               "cancel one); empty staged jobs count in no quota.")
    max_page_items: int = Field(default=10_000, ge=1, description="Most pair items of one JSON page of "
                                "POST /v1/jobs/{id}/items (422 beyond; an NDJSON upload is bounded by "
                                "max_job_items and max_upload_mb).")
    max_upload_mb: float = Field(default=1024.0, gt=0, description="Largest NDJSON upload to "
                                 "POST /v1/jobs/{id}/items, in MB (413 beyond): read a line at a time and "
                                 "spooled to a temporary file, never held in memory.")
    serve_header_timeout: float = Field(default=10.0, gt=0, description="Seconds a connection may take to send "
                                        "a request's headers, counted from its first byte (waitress); then it "
                                        "is closed, however slowly it keeps sending.")
    serve_connections_per_address: int = Field(default=50, ge=1, description="Most open connections from one "
                                               "client address (waitress); more are closed at once.")

    # ------------------------------------------------------------ observability (issue 17)
    log_format: Literal["text", "json"] = Field(default="text", description="Log lines of `pjudge serve` and "
                                                "`pjudge worker`: text, or json (one object per event with "
                                                "job, batch and item ids where known; secrets struck).")
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535, description="Port on which `pjudge "
                                            "worker` serves the Prometheus metrics of all its processes "
                                            "(multiprocess mode) at /metrics [default: not served].")
    worker_metrics_host: str = Field(default="127.0.0.1", description="Address the workers' metrics port "
                                     "listens on (0.0.0.0 for a scraper on another host; no auth there).")
    metrics_dir: str | None = Field(default=None, description="Folder of the worker processes' metric files "
                                    "(prometheus_client multiprocess mode), emptied when `pjudge worker` "
                                    "starts [default: a new temporary folder].")
    otel: bool = Field(default=False, description="OpenTelemetry spans for jobs, batches and calls (needs the "
                       "`otel` extra); also on when OTEL_EXPORTER_OTLP_ENDPOINT is set.")
    session_secret: SecretStr | None = Field(default=None, description="Signs the session cookies of "
                                             "/dashboard (give every API replica the same one) [default: a "
                                             "random one per process: a restart signs everyone out].")

    # ------------------------------------------------------------ webhooks (issue 16.4: worker/webhooks.py)
    webhook_allow_private: bool = Field(default=False, description="A job's webhook_url may be a loopback, "
                                        "private, link-local or otherwise non-public address (cloud metadata "
                                        "addresses stay refused); checked at POST and again at each delivery.")
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800), description="Seconds before each "
        "retry of a webhook delivery that failed (comma-separated; about 24 h in all by default): the first "
        "attempt, then one retry per entry, then the event is given up (`failed` in /deliveries).")
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120, description="Most seconds one webhook "
                                     "delivery may take (connect, send, answer); then it counts as failed.")
    webhook_poll_s: float = Field(default=2.0, gt=0, description="Seconds between a worker's looks for ended "
                                  "jobs with a webhook and for deliveries due.")

    @field_validator("api_keys", "api_base_urls", "endpoints", "api_key_envs", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        # Checked when read, so that every command names the variable; never the value (a password).
        text = value.get_secret_value() if value is not None else ""
        scheme, separator, _ = text.partition("://")
        if text and not (separator and scheme in DATABASE_SCHEMES):
            raise ValueError("must be a sqlite:// or postgresql:// URL (postgres:// and postgresql+psycopg:// too)")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        scheme, separator, rest = text.partition("://")
        if text and not (separator and scheme in ("redis", "rediss", "unix", "redis+socket")):
            raise ValueError("must be a redis://, rediss://, unix:// or redis+socket:// URL")
        if scheme == "unix":  # redis-py's spelling of a socket; Celery's broker (kombu) knows only its own
            return SecretStr("redis+socket://" + rest)
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 <= seconds <= 7 * 86400 for seconds in value):
            raise ValueError("each retry delay is 0 to 604800 seconds")
        return value

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
                value = [_strike_password(part) if isinstance(part, str) else part for part in value]
            elif isinstance(value, str):
                value = _strike_password(value)  # a URL given with user:password@
            shown[name] = value
        return shown


# Query parameters that carry secrets in database and broker URLs (`?password=`, `?sslpassword=`,
# `?auth_token=`, `?api_key=`...): any name containing one of these words.
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)


def mask_url(value: str) -> str:
    """A URL with its password, and the value of every query parameter named like a secret,
    replaced by '***' (other secrets: '***' whole)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(value)
    except ValueError:
        return "***"
    if not parts.scheme or "://" not in value:
        return "***"
    masked = parts
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + ":***"
        masked = masked._replace(netloc=f"{user}@{netloc[-1]}")
    if parts.query:
        masked = masked._replace(query=_mask_query(parts.query))
    # Rebuilt only when something was struck: urlunsplit drops the empty host of sqlite:////abs/path.
    return value if masked == parts else urlunsplit(masked)


def shown_url(value: str) -> str:
    """A URL the user gave, for a message: masked (mask_url) when it may hold a secret (userinfo or
    a query), else as given, even when it is no URL at all."""
    return mask_url(value) if "@" in value or "?" in value else value


def _mask_query(query: str) -> str:
    shown = []
    for pair in query.split("&"):
        name, separator, _ = pair.partition("=")
        shown.append(f"{name}=***" if separator and _SECRET_PARAMETER.search(name) else pair)
    return "&".join(shown)


def _strike_password(value: str) -> str:
    """A plain setting as it is, unless it is a URL with a password or a query: then the secrets struck."""
    return mask_url(value) if "://" in value and ("@" in value or "?" in value) else value


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

