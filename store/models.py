"""SQLModel tables: jobs, items, job inputs, calls, verdicts, API keys, the call cache.

Writes are idempotent by construction: calls are unique on (job, item, order, sample) and
verdicts on (job, item), so a redelivered task can never add a second row.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(default="")
    key_hash: str = Field(index=True, unique=True, max_length=64)
    prefix: str = Field(max_length=16)  # shown in listings; the key itself is never stored
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    owner: str = Field(max_length=64)  # hash of the API key that created it
    kind: str = Field(default="pairwise", max_length=32)
    status: str = Field(default="queued", max_length=16, index=True)
    idempotency_key: str | None = Field(default=None, max_length=255)
    profile_name: str = Field(max_length=255)
    provider: str = Field(max_length=64)
    model: str = Field(max_length=255)
    profile_json: str = Field(sa_column=Column(Text, nullable=False))
    batch_size: int = 16
    n_items: int = 0
    n_verdicts: int = 0
    n_calls: int = 0
    n_failed_calls: int = 0
    n_failed_items: int = 0
    cost_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)


class JobItem(SQLModel, table=True):
    __tablename__ = "job_items"
    __table_args__ = (
        UniqueConstraint("job_id", "item_id", name="uq_job_items_job_item"),
        Index("ix_job_items_job_position", "job_id", "position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    item_id: str = Field(max_length=512)
    position: int
    item_json: str = Field(sa_column=Column(Text, nullable=False))


class JobInput(SQLModel, table=True):
    """What a job was made from beyond its pair items, when its report needs it: for a
    personalization job, the responses lines (the text measures are computed from them) and options.
    Its own table so that reading a job never loads a blob that can be as large as the request."""

    __tablename__ = "job_inputs"

    job_id: str = Field(primary_key=True, foreign_key="jobs.id", max_length=36)
    inputs_json: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class CallRow(SQLModel, table=True):
    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("job_id", "item_id", "order", "sample", name="uq_calls_job_item_order_sample"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    item_id: str = Field(max_length=512)
    order: str = Field(default="", max_length=2)
    sample: int = 0
    raw: str | None = Field(default=None, sa_column=Column(Text))
    choice: str | None = Field(default=None, max_length=3)
    certainty: float | None = None
    scores_json: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    latency_s: float | None = None
    cached: bool = False
    attempts: int = 1
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class VerdictRow(SQLModel, table=True):
    __tablename__ = "verdicts"
    __table_args__ = (
        UniqueConstraint("job_id", "item_id", name="uq_verdicts_job_item"),
        Index("ix_verdicts_job_position", "job_id", "position"),
        Index("ix_verdicts_profile_model_created", "profile", "model", "created_at"),
        Index("ix_verdicts_created", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    item_id: str = Field(max_length=512)
    position: int
    winner: str | None = Field(default=None, max_length=3)
    p_a: float | None = None
    certainty: float | None = None
    consistent: bool | None = None
    abstained: bool = False
    bpde: float | None = None
    human_label: str | None = Field(default=None, max_length=3)
    len_a: int | None = None
    len_b: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    n_calls: int = 0
    n_failed_calls: int = 0
    cost_usd: float = 0.0
    profile: str = Field(max_length=255)
    provider: str = Field(max_length=64)
    model: str = Field(max_length=255)
    metadata_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class CacheEntry(SQLModel, table=True):
    """The call cache shared by all workers (same keys as judge.cache)."""

    __tablename__ = "call_cache"

    key: str = Field(primary_key=True, max_length=64)
    raw: str = Field(sa_column=Column(Text, nullable=False))
    input_tokens: int | None = None
    output_tokens: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
