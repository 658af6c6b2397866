"""SQLModel tables: jobs, items, job inputs, calls, verdicts, API keys, the call cache, and the
verdict summaries behind the dashboard statistics.

Writes are idempotent by construction: calls are unique on (job, item, stage, order, sample) and
verdicts on (job, item), so a redelivered task can never add a second row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    false,
    true,
)
from sqlmodel import Field, SQLModel, col

from calibration.counts import FLOAT_FIELDS, INT_FIELDS


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


class Credential(SQLModel, table=True):
    """A tenant's own provider key (POST /v1/credentials), encrypted at rest (store/vault.py); a
    job names it in its profile (`credential`), and only a worker building that job's provider
    decrypts it."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_credentials_owner_name"),)

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=64)  # hash of the API key that stored it
    name: str = Field(max_length=128)
    provider: str = Field(max_length=64)
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency"),
        Index("ix_jobs_owner_created", "owner", "created_at"),
        Index("ix_jobs_owner_quota_at", "owner", "quota_at"),
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
    batch_size: int = 32
    n_items: int = 0
    n_verdicts: int = 0
    n_calls: int = 0
    n_failed_calls: int = 0
    n_failed_items: int = 0
    cost_usd: float = 0.0
    # JSON {metadata key: summarized?} fixed at creation (store.summaries.plan_group_keys): which
    # keys get by-group summary rows. Never changes, so workers may cache it.
    summary_keys: str | None = Field(default=None, sa_column=Column(Text))
    # SHA-256 of the request the job was made from (store.repo.request_fingerprint): a replayed
    # Idempotency-Key must come with the same request.
    request_fingerprint: str | None = Field(default=None, max_length=64)
    # The job's budget in USD (store.budget): no new calls once cost_usd reaches it; null: none.
    max_cost_usd: float | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    # A staged job (store.pages) takes pages of items while this is true: from its creation until
    # POST /v1/jobs/{id}/start. It is never done while true, even with a verdict for every item so far.
    open_for_items: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    # While a staged job is open: JSON of the metadata group names its pages hold so far
    # (store.summaries.PlanState), from which start fixes summary_keys; null otherwise.
    plan_state: str | None = Field(default=None, sa_column=Column(Text))
    # From when the job's items and cost count in its owner's daily quota (store.repo
    # _quota_window): its creation, or a staged job's latest page or its start, so that a job
    # filled or started long after its creation counts from then. Set by store.repo.create_job;
    # nullable only because SQLite adds a column that way (0017 copies created_at into older rows).
    quota_at: datetime | None = None


# Positions (job_items, verdicts) are INTEGER columns: PostgreSQL refuses a larger value even in a
# comparison (SQLAlchemy casts the parameter to the column's type), so a client's cursor is bounded first.
MAX_POSITION = 2**31 - 1


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


class JobPage(SQLModel, table=True):
    """A page of items added to a staged job (POST /v1/jobs/{id}/items) under an Idempotency-Key:
    where its items went and the SHA-256 of what they were, so that the page sent again adds
    nothing and answers as the first time (store.pages)."""

    __tablename__ = "job_pages"
    __table_args__ = (UniqueConstraint("job_id", "page_key", name="uq_job_pages_job_key"),
                      # A new job's Idempotency-Key is looked up among its owner's page keys too.
                      Index("ix_job_pages_page_key", "page_key"))

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    page_key: str = Field(max_length=255)
    first_position: int
    n_items: int
    fingerprint: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


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
    __table_args__ = (
        UniqueConstraint("job_id", "item_id", "stage", "order", "sample", name="uq_calls_job_item_stage_order_sample"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    item_id: str = Field(max_length=512)
    order: str = Field(default="", max_length=2)
    sample: int = 0
    raw: str | None = Field(default=None, sa_column=Column(Text))
    raw_truncated_from: int | None = None  # the answer's full length when raw is cut (judge.records.Call)
    choice: str | None = Field(default=None, max_length=3)
    certainty: float | None = None
    scores_json: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # Parts of input_tokens the provider's prompt cache read / wrote (judge.records.Call).
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    saved_cache_usd: float | None = None  # judge.records.Call.saved_cache_usd
    saved_batch_usd: float | None = None  # judge.records.Call.saved_batch_usd
    cost_usd: float | None = None
    latency_s: float | None = None
    cached: bool = False
    attempts: int = 1
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    # The cascade stage that made the call (SPEC 2.1); 0 for a single judge's, whose records carry
    # no stage (store.rows): part of the unique key, so never null.
    stage: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class VerdictRow(SQLModel, table=True):
    __tablename__ = "verdicts"
    __table_args__ = (
        UniqueConstraint("job_id", "item_id", name="uq_verdicts_job_item"),
        Index("ix_verdicts_job_position", "job_id", "position"),
        Index("ix_verdicts_profile_model_created", "profile", "model", "created_at"),
        Index("ix_verdicts_created", "created_at"),
        # The certainty split at an off-grid threshold reads one bin's verdicts, owner-wide or of one job
        # (store.stats; migration 0015).
        Index("ix_verdicts_certainty_bin", "stat_certainty_bin", "job_id"),
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
    # The verdict's inputs to the SPEC 4 statistics, computed once at insert by
    # store.summaries.stat_columns exactly as calibration.table computes them (rounded certainty,
    # confidence and p_a, their histogram bins, the first-sample position outcome, the call counts
    # by position, which response is longer). None of them depends on the human label, so they
    # never change; SQL can aggregate them where the summaries are not fine enough.
    stat_certainty: float | None = None
    stat_certainty_bin: int | None = None  # store.summaries.certainty_bin: -1 .. 100
    stat_confidence: float | None = None
    stat_lambda_bin: int | None = None  # index into SPEC 4's lambda grid: -1 .. 4999
    stat_ece_bin: int | None = None  # 0 .. 9
    stat_p_a: float | None = None
    stat_position: int | None = None  # 0: not judged in both orders, 1: orders disagree, 2: agree
    stat_longer: int | None = None  # 0: lengths unknown or within 30 characters, 1: A longer, 2: B longer
    calls_first: int | None = None  # parsed calls with an order choosing the answer shown first
    calls_second: int | None = None
    calls_tie: int | None = None
    # JSON {metadata key: group name} of the keys this verdict is summarized under (group_json and
    # the by-group summary rows always agree; see store.summaries).
    group_json: str | None = Field(default=None, sa_column=Column(Text))
    # Cascades (SPEC 2.1): the accepting stage (null when escalated) and the JSON list of the
    # stages that judged the item; stages_json null for a single judge.
    stage: int | None = None
    stages_json: str | None = Field(default=None, sa_column=Column(Text))
    # The verdict's cost inputs beside n_calls and cost_usd (calibration.cost.cost_columns): what the
    # reports' cost sections sum. Null where no call records them (cached tokens and savings until
    # prompt caching and batch mode price them; input_tokens on verdicts stored before 0009).
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    saved_batch_usd: float | None = None
    saved_cache_usd: float | None = None


class BudgetReservation(SQLModel, table=True):
    """A batch of a job with a budget, admitted and not yet stored (store.budget): the USD it may
    spend at most (judge.estimate), held against the budget while its calls run. Keyed by the batch,
    so a redelivered batch replaces its own reservation, never adds a second."""

    __tablename__ = "budget_reservations"

    job_id: str = Field(foreign_key="jobs.id", primary_key=True, max_length=36)
    batch_start: int = Field(primary_key=True)
    usd: float
    created_at: datetime = Field(default_factory=utcnow)


# The human queue (store.queue): the waiting verdicts of a job, null BPDE and highest BPDE first, ties
# by position. Partial: only abstained, unlabelled rows are indexed, so it stays as small as the
# queues (migration 0009).
WAITING: ColumnElement[bool] = and_(col(VerdictRow.abstained) == true(), col(VerdictRow.human_label).is_(None))
Index("ix_verdicts_waiting", col(VerdictRow.job_id), col(VerdictRow.bpde).desc(), col(VerdictRow.position),
      sqlite_where=WAITING, postgresql_where=WAITING)


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core Table (for store.bulk.insert_many): SQLModel sets `__table__` on every
    table class, which its type does not declare."""
    table: Table = model.__table__  # type: ignore[attr-defined]  # set by SQLModel, not declared
    return table


class CacheEntry(SQLModel, table=True):
    """The call cache shared by all workers (same keys as judge.cache)."""

    __tablename__ = "call_cache"

    key: str = Field(primary_key=True, max_length=64)
    raw: str = Field(sa_column=Column(Text, nullable=False))
    input_tokens: int | None = None
    output_tokens: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ProviderBatch(SQLModel, table=True):
    """A provider batch of a batch-mode job (judge/batching.py), written before anything is sent:
    status submitting (ids not yet known), live (sent), ended (answers stored), failed (not sent),
    lost (left submitting by a worker that died), cancelled."""

    __tablename__ = "provider_batches"
    __table_args__ = (Index("ix_provider_batches_job_status", "job_id", "status"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    provider: str = Field(max_length=64)
    batch_id: str | None = Field(default=None, max_length=255)
    input_file_id: str | None = Field(default=None, max_length=255)
    status: str = Field(default="submitting", max_length=16)
    n_requests: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ProviderBatchRequest(SQLModel, table=True):
    """One request of a provider batch: its custom_id, the call it is (item position, order,
    sample, attempt, stage) and its cache key (unscoped: the job is the tenant's); once the batch
    ended, its answer or error (status pending, answered, failed)."""

    __tablename__ = "provider_batch_requests"
    __table_args__ = (
        UniqueConstraint("batch_row", "custom_id", name="uq_provider_batch_requests_row_custom_id"),
        Index("ix_provider_batch_requests_job", "job_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_row: int = Field(foreign_key="provider_batches.id")
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    custom_id: str = Field(max_length=64)
    key: str = Field(max_length=64)
    position: int
    order: str = Field(default="", max_length=2)
    sample: int = 0
    attempt: int = 0
    stage: int = 0
    status: str = Field(default="pending", max_length=16)
    raw: str | None = Field(default=None, sa_column=Column(Text))
    input_tokens: int | None = None
    output_tokens: int | None = None
    truncated_from: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))


class ProviderBatchLease(SQLModel, table=True):
    """Which worker process is ticking a batch-mode job (judge/batching.py) until when: one at a
    time, and a holder that died frees it when `until` passes."""

    __tablename__ = "provider_batch_leases"

    job_id: str = Field(primary_key=True, foreign_key="jobs.id", max_length=36)
    holder: str = Field(max_length=64)
    until: datetime


# ---------------------------------------------------------------- webhooks (store/webhooks.py)

class WebhookSecret(SQLModel, table=True):
    """The signing secret of an API key's webhooks (`whsec_...`, Standard Webhooks), encrypted at
    rest like the credentials (store/vault.py); shown only to its owner (GET /v1/webhook-secret)."""

    __tablename__ = "webhook_secrets"

    owner: str = Field(primary_key=True, max_length=64)  # hash of the API key
    ciphertext: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class WebhookEvent(SQLModel, table=True):
    """The one event of a job with a webhook_url, written with the job (status waiting); given its
    type and payload once the job ended (pending), then delivered, or failed when its retries ran
    out. Its id is the `webhook-id` of every attempt; a lease (token, until) lets one worker at a
    time attempt it."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        UniqueConstraint("job_id", name="uq_webhook_events_job"),
        Index("ix_webhook_events_status_due", "status", "next_attempt_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    job_id: str = Field(foreign_key="jobs.id", max_length=36)
    owner: str = Field(max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default="waiting", max_length=16)
    type: str | None = Field(default=None, max_length=64)
    payload: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 0
    next_attempt_at: datetime | None = None
    dispatched_until: datetime | None = None  # a delivery task is queued for it until then
    lease_token: str | None = Field(default=None, max_length=32)
    lease_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    delivered_at: datetime | None = None


class WebhookDelivery(SQLModel, table=True):
    """One attempt at delivering a webhook event: its outcome, never more of the answer than a
    short snippet."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "attempt", name="uq_webhook_deliveries_event_attempt"),
        Index("ix_webhook_deliveries_job", "job_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(foreign_key="webhook_events.id", max_length=64)
    job_id: str = Field(max_length=36)
    attempt: int
    ok: bool = False
    status_code: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text))
    duration_ms: float | None = None
    response_snippet: str | None = Field(default=None, sa_column=Column(Text))
    next_retry_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


# ---------------------------------------------------------------- verdict summaries
# Sufficient statistics of the SPEC 4 report per (job, profile, model, hour of created_at, group),
# added to in the transaction that stores the verdicts (store.summaries). group_key "" is the row
# of all the job's verdicts in that hour; otherwise group_key is a metadata key and group_value
# the verdicts' group name for it (calibration.report.group_key). Plain Core tables: they are only
# ever summed, never loaded as objects.

SUMMARY_KEY = ("job_id", "group_key", "group_value", "hour", "profile", "model")


def _summary_key() -> list[Column[Any]]:  # Column[Any]: string and integer columns
    return [
        Column("job_id", String(36), ForeignKey("jobs.id"), primary_key=True),
        Column("group_key", String(255), primary_key=True),
        Column("group_value", String(255), primary_key=True),
        Column("hour", Integer, primary_key=True),  # hours since 1970-01-01 UTC
        Column("profile", String(255), primary_key=True),
        Column("model", String(255), primary_key=True),
    ]


def _counts(names: tuple[str, ...]) -> list[Column[int]]:
    return [Column(name, Integer, nullable=False, server_default="0") for name in names]


# Every fixed-size count in one row per key (calibration.counts.INT_FIELDS: the scalar counts,
# the reliability bins and the 0.01-wide certainty histogram; FLOAT_FIELDS: the sums of squares and
# of confidence), so that a dashboard query sums a few rows per job instead of a histogram's worth.
summary_main = Table(
    "summary_main", SQLModel.metadata, *_summary_key(), *_counts(INT_FIELDS),
    *(Column(name, Float, nullable=False, server_default="0") for name in FLOAT_FIELDS),
)

# Decided items by lambda bin of SPEC 4's risk grid (only read for risk_control).
LAMBDA_COUNTS = ("n_decided", "n_errors")
summary_lambda = Table(
    "summary_lambda", SQLModel.metadata, *_summary_key(),
    Column("lambda_bin", SmallInteger, primary_key=True), *_counts(LAMBDA_COUNTS),
)

# Labelled verdicts by BPDE value: judge winner x human label counts for the HITL selection (SPEC
# 3.3); bpde_null = 1 for a null BPDE (bpde is then 0). summary_bpde_chunk splits them further by
# chunk of positions, read only where the selection's cut runs through a BPDE value.
HITL_CELLS = tuple(f"w{w}_l{label}" for w in "abtn" for label in "abt")
summary_bpde = Table(
    "summary_bpde", SQLModel.metadata, *_summary_key(),
    Column("bpde_null", SmallInteger, primary_key=True),
    Column("bpde", Float, primary_key=True),
    *_counts(HITL_CELLS),
)
summary_bpde_chunk = Table(
    "summary_bpde_chunk", SQLModel.metadata, *_summary_key(),
    Column("bpde_null", SmallInteger, primary_key=True),
    Column("bpde", Float, primary_key=True),
    Column("chunk", Integer, primary_key=True),  # position // store.summaries.CHUNK
    *_counts(HITL_CELLS),
)

# The cost inputs of the verdicts (calibration.cost.COST_COLUMNS) summed per (job, hour, profile,
# model), group_key "" only: what the reports' cost sections and the dashboard's cost per day read
# instead of the verdict rows. *_n count the verdicts where a nullable input is known (none known:
# the report says null, not 0). Written with summary_main (store.summaries.delta_of); migration 0016
# summed the verdicts stored before.
COST_INTS = ("items", "n_calls", "input_tokens", "cached_input_tokens", "cached_input_n", "saved_batch_n",
             "saved_cache_n")
COST_FLOATS = ("cost_usd", "saved_batch_usd", "saved_cache_usd")
summary_cost = Table(
    "summary_cost", SQLModel.metadata, *_summary_key(), *_counts(COST_INTS),
    *(Column(name, Float, nullable=False, server_default="0") for name in COST_FLOATS),
)

# (job, metadata key) pairs with verdicts that are not summarized under that key (too many values
# in the job, too long, or unknown when the job was created): by_group over such a key is computed
# from the verdicts.
summary_overflow = Table(
    "summary_overflow", SQLModel.metadata,
    Column("job_id", String(36), ForeignKey("jobs.id"), primary_key=True),
    Column("group_key", String(255), primary_key=True),
)
