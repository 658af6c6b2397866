"""Pydantic models of the API: they validate the requests and, through `model_json_schema`, are the
OpenAPI document (api/openapi.py), so the two cannot drift apart."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from calibration.counts import grid_index
from judge.profiles import DEFAULT_PROFILE, JudgeProfile, Price
from judge.records import Choice, Label, PairItem, StageVerdict, Verdict

# "open": a staged job taking pages of items, not started (api.pages).
JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "budget_exhausted", "open"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
MAX_ITEM_ID = 512  # job_items.item_id is VARCHAR(512)
MAX_NAME = 255
PER_DAY_MAX_DAYS = 62  # per_day of /v1/stats/agreement: the last days of the range


def job_status(value: str) -> JobStatus:
    """A stored job's status (store.models.Job.status, a plain string column) as the API's type."""
    for status in JOB_STATUSES:
        if value == status:
            return status
    raise ValueError(f"unknown job status {value!r}")


# ---------------------------------------------------------------- requests

WEBHOOK_URL = (
    "Where the job's end is posted (http or https, no user name, query or fragment; a public address "
    "unless the server allows others: PJUDGE_WEBHOOK_ALLOW_PRIVATE): one event (job.done, job.failed, "
    "job.cancelled or job.budget_exhausted) signed per Standard Webhooks with your key's secret "
    "(GET /v1/webhook-secret), retried with backoff for about a day until a 2xx answer; redirects are not "
    "followed. Its attempts: GET /v1/jobs/{job_id}/deliveries.")

class ProfileOverrides(JudgeProfile):
    """A judge profile as an object: `profile` (or `name`, or `template`) names the base profile,
    every other field given overrides it. Server file paths (`replay_path`, profile or template
    paths) are refused unless the server allows them (PJUDGE_API_ALLOW_SERVER_PATHS). The fields
    that multiply a job's requests and tokens (samples, max_reasks, max_retries, max_tokens,
    timeout_s) are bounded by the server's PJUDGE_API_MAX_* settings (422 beyond)."""

    model_config = ConfigDict(extra="forbid", title="ProfileOverrides")

    profile: str | None = Field(default=None, min_length=1, max_length=MAX_NAME,
                                description="Name of the base profile [default: persona-certainty].")
    name: str = Field(default=DEFAULT_PROFILE, min_length=1, max_length=MAX_NAME)
    model: str = Field(default="gpt-4o-2024-08-06", min_length=1, max_length=MAX_NAME)
    template: str = Field(default="persona-certainty", min_length=1, max_length=MAX_NAME)
    price: Price = Field(
        default_factory=Price,
        description="On the server's keys refused (422): the server prices those jobs itself, by model (PJUDGE_PRICES); "
                    "kept with your own `credential` or endpoint.")
    base_url: str | None = Field(
        default=None, max_length=2048,
        description="The provider's endpoint: one the server configured (its keys are used there), or your "
                    "own public http(s) endpoint (no userinfo; checked when posted and when called; the "
                    "server's keys are never sent to it: name a stored `credential` for a key).")
    api_key_env: str | None = Field(
        default=None, max_length=128,
        description="Name of a server variable holding a provider key, among those the server allows "
                    "(PJUDGE_API_KEY_ENVS); sent only to an endpoint the operator bound it to (PJUDGE_ENDPOINTS `provider=URL|VAR`).",
    )


class CascadeStageIn(BaseModel):
    """One stage of a cascade: a judge profile (a built-in or stored profile's name, or an object of
    overrides, checked exactly like a job's `profile`) and its threshold."""

    model_config = ConfigDict(extra="forbid", title="CascadeStage")

    profile: Annotated[str, Field(min_length=1, max_length=MAX_NAME)] | ProfileOverrides
    threshold: float | None = Field(
        default=None, ge=0.5, le=1,
        description="The stage accepts a verdict that is decided (A or B) with confidence max(p_a, 1 - p_a) at "
                    "least this; null or absent: it accepts nothing (its verdicts are only logged).")


class CascadeIn(BaseModel):
    """A cascade (SPEC 2.1): stage 1 judges every item, each later stage only the items the earlier
    ones did not accept; items no stage accepts are escalated (abstained, stage null)."""

    model_config = ConfigDict(extra="forbid", title="CascadeProfile")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    cascade: list[CascadeStageIn] = Field(min_length=1, max_length=8)
    then: Literal["human", "abstain"] = Field(
        default="human", description="human: escalated items wait in the job's human queue; abstain: they are "
                                     "only marked abstained.")


class CascadeStageShape(BaseModel):
    """CascadeStageIn as first validated: the profile is checked afterwards by api.profiles, field by
    field with its path, like a job's `profile`."""

    model_config = ConfigDict(extra="forbid")

    profile: Annotated[str, Field(min_length=1, max_length=MAX_NAME)] | dict[str, Any]
    threshold: float | None = Field(default=None, ge=0.5, le=1)


class CascadeShape(BaseModel):
    """CascadeIn as first validated (see CascadeStageShape)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_NAME)
    cascade: list[CascadeStageShape] = Field(min_length=1, max_length=8)
    then: Literal["human", "abstain"] = "human"


CredentialName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]


class CredentialCreate(BaseModel):
    """POST /v1/credentials: a provider key of yours, stored encrypted; jobs name it in
    `profile.credential`. The key is never returned."""

    model_config = ConfigDict(extra="forbid")

    name: CredentialName
    provider: Literal["openai", "anthropic", "openai-compatible"]
    api_key: str = Field(min_length=1, max_length=4096, pattern=r"^[!-~]+$",
                         description="The provider key (printable ASCII, no spaces); write-only.")


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=MAX_ITEM_ID)
    human_label: Label | None = Field(description="A, B or tie; null removes the label.")


class JobCreate(BaseModel):
    """POST /v1/jobs. `items` are SPEC 1.1 pair items (validated by judge.jsonl.validate_items)."""

    model_config = ConfigDict(extra="forbid")

    items: list[PairItem] | None = Field(default=None, description="The pair items (at least one); absent (or "
                                         "empty) with staged: true.")
    profile: str | ProfileOverrides | CascadeIn | None = Field(
        default=DEFAULT_PROFILE,
        description="A built-in or stored profile's (or cascade's) name, an object of overrides, or a cascade "
                    "(SPEC 2.1); absent or null: persona-certainty.",
    )
    labels: list[LabelIn] | None = Field(default=None, description="Human labels by item id (override the items').")
    max_cost_usd: float | None = Field(
        default=None, gt=0, description="A budget in USD: once the job's calls have cost this much, no new calls "
        "are made and the job ends `budget_exhausted` (the verdicts made are kept, reported and billed; the items "
        "not judged have no verdict). Batches already running finish, so the cost may pass it by at most about "
        "one batch of calls.")
    webhook_url: str | None = Field(default=None, max_length=2048, description=WEBHOOK_URL)
    staged: bool | None = Field(default=None, description="Create the job empty (status open): add its items in "
                                "pages (POST /v1/jobs/{job_id}/items), then POST /v1/jobs/{job_id}/start.")
    start_early: bool | None = Field(default=None, description="With staged: judge each page as it is stored "
                                     "(status queued from the start); the job is done only after /start.")


class EstimateCreate(BaseModel):
    """POST /v1/jobs/estimate: the items and profile of a job, nothing stored or run."""

    model_config = ConfigDict(extra="forbid")

    items: list[PairItem] = Field(min_length=1)
    profile: str | ProfileOverrides | CascadeIn | None = Field(
        default=DEFAULT_PROFILE, description=JobCreate.model_fields["profile"].description)


# No maximum length here: what limits ids is the length of the pair ids made from them (checked per line).
Identifier = Annotated[str, Field(min_length=1)] | int
PersonaDescription = str | dict[str, Any]


class ResponseLine(BaseModel):
    """One SPEC 1.3 line: a system's response to a prompt for a persona (validated by
    calibration.personalization_io.validate_responses). `persona_id` null: the system's
    persona-agnostic response (the anchor candidate). `persona` and `prompt` describe them to the judge."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: Identifier
    persona_id: Identifier | None
    system: Identifier
    response: str
    reference: str | None = Field(default=None, description="The persona's own preferred text (text measures).")
    persona: PersonaDescription | None = Field(
        default=None, description="The persona's description (a string or an object of attributes); the same on "
                                  "every line of the persona.")
    prompt: str | None = Field(default=None, description="The prompt's text; the same on every line of the prompt.")


class PersonalizationOptions(BaseModel):
    """The fields of POST /v1/personalization besides `responses` and `profile`."""

    model_config = ConfigDict(extra="forbid")

    personas: dict[str, PersonaDescription] | None = Field(
        default=None, description="Persona descriptions by persona_id (fill what the lines leave out; must agree).")
    prompts: dict[str, str] | None = Field(
        default=None, description="Prompt texts by prompt_id (fill what the lines leave out; must agree).")
    systems: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME)]] | None = Field(
        default=None, min_length=1, description="Judge only these systems [default: every system].")
    distance: Literal["jsd"] = Field(default="jsd", description="Text distance of the PerSEval measures.")
    anchor_system: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME,
        description="Weigh pairs against this system's persona-agnostic responses (anchored DEGRESS).")


class PersonalizationCreate(PersonalizationOptions):
    """POST /v1/personalization: degree of personalization of the responses, with judge-based persona fit."""

    responses: list[ResponseLine] = Field(min_length=1)
    profile: str | ProfileOverrides | None = Field(
        default=DEFAULT_PROFILE,
        description="The persona-fit judge, as in POST /v1/jobs; it must judge both orders (swap on).",
    )
    webhook_url: str | None = Field(default=None, max_length=2048, description=WEBHOOK_URL)


class _Query(BaseModel):
    # Unknown parameters are refused: a typo (?treshold=0.7) must not silently give the default.
    # NaN and infinities never pass as numbers.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class VerdictsQuery(_Query):
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page.")
    limit: int = Field(default=100, ge=1, le=1000)


class QueueQuery(_Query):
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page.")
    limit: int = Field(default=100, ge=1, le=1000)


class ReportQuery(_Query):
    threshold: float = Field(default=0.8, ge=0, le=1, description="Certainty split of high/low_certainty.")
    hitl: float = Field(default=0.2, ge=0, le=1, description="Share beta of labelled items sent to humans.")
    group_by: str | None = Field(default=None, min_length=1, max_length=MAX_NAME, description="A metadata key.")
    target_accuracy: float | None = Field(default=None, gt=0, le=1, description="Adds risk_control.")
    delta: float | None = Field(default=None, gt=0, lt=1, description="Risk level of risk_control [default 0.1].")


# since/until: the statistics step to the hour or day after (and the microsecond before) a time.
TIME_RANGE = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC))
ISO_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"


def _iso_time(value: Any) -> Any:
    """ISO 8601 text only (pydantic alone would also read "0.5" as a Unix time); UTC if naive."""
    if not isinstance(value, str) or not re.match(ISO_TIME, value):
        raise ValueError("expected an ISO 8601 date or date-time, e.g. 2025-01-31 or 2025-01-31T12:00:00Z")
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # 2025-13-01; 0001-01-01T00:00+01:00 has no UTC year
        raise ValueError("not a valid date or time") from None
    if not TIME_RANGE[0] <= parsed <= TIME_RANGE[1]:  # the hours and days around it must exist too
        raise ValueError(f"out of range: from {TIME_RANGE[0].date()} to {TIME_RANGE[1].date()}")
    return parsed


IsoTime = Annotated[datetime, BeforeValidator(_iso_time), WithJsonSchema({"type": "string", "pattern": ISO_TIME})]


class StatsQuery(ReportQuery):
    profile: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    since: IsoTime | None = Field(default=None, description="Verdicts stored at or after (ISO 8601; UTC if naive). "
                                  "Exact to the microsecond.")
    until: IsoTime | None = Field(default=None, description="Verdicts stored before (ISO 8601; UTC if naive). "
                                  "Exact to the microsecond.")
    group_by: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME,
        description="A metadata key, or one of profile, model, job: by the verdicts' judge profile, model or "
                    "job id (these three names take precedence over metadata keys of the same name).")
    per_day: bool = Field(
        default=False, description="Adds per_day: the statistics per UTC day (and per profile and model) of the "
        f"range, at most its last {PER_DAY_MAX_DAYS} days; needs a threshold on the 0.01 grid.")

    @field_validator("until")
    @classmethod
    def _until_not_before_since(cls, until: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")  # validated before (declared before until)
        if until is not None and isinstance(since, datetime) and until < since:
            raise ValueError("must not be before since (verdicts stored at or after since and before until)")
        return until

    @field_validator("per_day")
    @classmethod
    def _per_day_on_the_grid(cls, per_day: bool, info: ValidationInfo) -> bool:
        threshold = info.data.get("threshold")  # validated before (ReportQuery's field)
        if per_day and isinstance(threshold, float) and grid_index(threshold) is None:
            raise ValueError("per_day needs a threshold on the 0.01 grid (0.8, 0.75, ...)")
        return per_day


class ExportQuery(_Query):
    """GET /v1/jobs/{id}/export (judge.exports says what each option does)."""

    format: Literal["dpo"] = Field(default="dpo", description="Preference rows (prompt/chosen/rejected), the "
                                   "columns TRL's DPOTrainer reads.")
    as_: Literal["jsonl", "parquet"] = Field(default="jsonl", alias="as",
                                             description="JSON Lines (streamed) or a Parquet file (row groups).")
    persona: Literal["raw", "column", "fold"] | None = Field(
        default=None, description="raw: the stored persona (text or object), absent when none (JSON Lines only); "
        "column: text or null on every row; fold: into the prompt ([User Profile] / [User Question]). "
        "Default: raw for JSON Lines, column for Parquet.")
    conversational: bool = Field(default=False, description="TRL's conversational format: prompt, chosen and "
                                 "rejected as lists of {role, content} messages (a folded persona is the system "
                                 "message).")
    min_certainty: float | None = Field(default=None, ge=0, le=1, description="Only verdicts at least this "
                                        "certain (a verdict without a certainty is left out).")
    consistent_only: bool = Field(default=False, description="Only verdicts whose two orders agree.")


class PersonalizationReportQuery(_Query):
    bootstrap: int = Field(default=1000, ge=0, le=2000, description="Bootstrap resamples over prompts (0: no intervals).")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the bootstrap.")


# ---------------------------------------------------------------- responses

class JobAccepted(BaseModel):
    job_id: str
    status: JobStatus


class PageAccepted(BaseModel):
    """POST /v1/jobs/{job_id}/items: where the page's items went."""

    job_id: str
    status: JobStatus
    first_position: int = Field(description="The position of the page's first item in the job.")
    added: int = Field(description="Items of this page.")
    items: int = Field(description="Items of the job so far.")


class ItemsPage(BaseModel):
    """POST /v1/jobs/{job_id}/items as JSON (or an NDJSON body: one pair item a line)."""

    model_config = ConfigDict(extra="forbid")

    items: list[PairItem] = Field(min_length=1)


class JobCounts(BaseModel):
    items: int
    verdicts: int
    calls: int
    failed_calls: int
    failed_items: int
    awaiting_label: int = Field(description="Items waiting in the human queue (GET /v1/jobs/{job_id}/queue): "
                                "abstained (escalated by a cascade, or under the profile's certainty threshold) "
                                "and without a human label; a cascade with then = abstain queues none.")


class JobOut(BaseModel):
    job_id: str
    kind: str = Field(description="pairwise (POST /v1/jobs) or personalization (POST /v1/personalization).")
    status: JobStatus
    counts: JobCounts
    cost_usd: float
    max_cost_usd: float | None = Field(default=None, description="The job's budget in USD (null: none).")
    profile: str
    provider: str
    model: str
    created_at: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None


class EstimateOut(BaseModel):
    """What judging the items with the profile would take (judge.estimate)."""

    calls: int = Field(description="items x orders x samples; re-asks are not counted.")
    input_tokens: int
    output_tokens: int = Field(description="max_tokens per call: an upper bound.")
    cost_usd: float = Field(description="At the price this server would charge the job.")
    counted_by: str = Field(description="How the tokens were counted: tiktoken:<encoding>, or estimate:chars/4.")
    notes: list[str]
    stages: list[EstimateOut] | None = Field(default=None, description="Cascades: each stage's estimate.")


class VerdictPage(BaseModel):
    verdicts: list[Verdict]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


class QueueVerdict(BaseModel):
    """The verdict behind a queue entry (SPEC 1.2, 2.1): stage and stages are null for a single judge."""

    winner: Choice | None
    p_a: float | None
    certainty: float | None
    bpde: float | None
    abstained: bool
    stage: int | None = Field(description="Always null here: a queued item was accepted by no stage.")
    stages: list[StageVerdict] | None = Field(description="A cascade's stages that judged the item, in order.")


class QueueEntry(BaseModel):
    item: PairItem = Field(description="The pair item as posted (it has no human label yet).")
    verdict: QueueVerdict


class QueuePage(BaseModel):
    items: list[QueueEntry] = Field(description="Waiting items: a null BPDE (no call parsed) first, then the "
                                    "highest BPDE, ties in input order.")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


class LabelsOut(BaseModel):
    updated: int = Field(description="Verdicts whose label changed (items without a verdict yet are labelled too).")
    labels: int = Field(description="Labels applied to the job's items.")


class CancelOut(BaseModel):
    job_id: str
    status: JobStatus


class Interval(BaseModel):
    value: float | None
    ci95: list[float | None] | None


class ReportCounts(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: int
    labelled: int
    decided: int
    correct: int
    correct_no_tie: int


class Report(BaseModel):
    """The statistics of SPEC section 4 (plus extra keys the report adds)."""

    model_config = ConfigDict(extra="allow")

    accuracy: float | None
    accuracy_no_tie: float | None
    counts: ReportCounts
    cohen_kappa: Interval
    krippendorff_alpha: Interval
    high_certainty: dict[str, Any]
    low_certainty: dict[str, Any]
    coverage_curve: list[dict[str, Any]]
    ece: float | None
    brier: float | None
    position_consistency: float | None
    first_position_rate: float | None
    prefers_longer: float | None
    hitl: dict[str, Any]
    by_group: dict[str, dict[str, Any]] | None = None
    risk_control: dict[str, Any] | None = None
    per_day: list[dict[str, Any]] | None = Field(
        default=None, description="With per_day=true (GET /v1/stats/agreement): one entry per UTC day, oldest first, "
        "{day, since, until, the statistics of that day's verdicts but hitl and risk_control, cost, by_judge: the "
        "same per profile and model}; each equals GET /v1/stats/agreement with that since and until (and profile "
        "and model).")
    cascade_stages: dict[str, Any] | None = Field(
        default=None, description="A cascade's verdicts only (SPEC 2.1): per stage {stage, profile, provider, model, "
        "reached, accepted, labelled, correct, accuracy, ci95 (Clopper-Pearson), cost_usd, cost_per_item}; the "
        "escalated items, the cost per item against the last stage alone (an estimate) and the human queue's "
        "waiting count with its first items by BPDE.")


class PersonalizationAccepted(BaseModel):
    job_id: str
    status: JobStatus
    kind: Literal["personalization"]
    pairs: int = Field(description="Persona pair items to judge (each in both orders).")


class PersonalizationScores(BaseModel):
    """One system: the PerSEval family (SPEC 6) and the judge-based persona fit."""

    model_config = ConfigDict(extra="allow")

    n_prompts: int
    n_skipped: int
    degress: float | None
    egises: float | None
    edp: float | None
    perseval: float | None
    distance_to_reference: float | None
    persona_fit_win_rate: float | None
    persona_fit_ci95: list[float] | None
    pairwise_difference: float | None
    pairwise_difference_ci95: list[float] | None
    n_pairs: int
    n_missing: int
    n_pair_differences: int
    n_persona_fit_prompts: int
    n_unjudgeable_pairs: int
    judge_cost_usd: float


class PersonalizationJudge(BaseModel):
    profile: str
    provider: str
    model: str
    items: int
    calls: int
    cached_calls: int
    failed_calls: int
    cost_usd: float
    bootstrap: int
    seed: int
    verdicts: str | None = Field(description="Where the pair verdicts can be read.")
    simulated: bool = Field(description="The judge is the simulated LLM (model sim-*), not a real one.")


class PersonalizationReport(BaseModel):
    """The document of `pjudge personalization --judge ... --format json`, plus job_id."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    distance: str
    variant: Literal["simplified", "anchored"]
    anchor_system: str | None
    systems: dict[str, PersonalizationScores]
    judge: PersonalizationJudge


class DpoMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class DpoJudge(BaseModel):
    profile: str
    provider: str
    model: str


class DpoLine(BaseModel):
    """One line of GET /v1/jobs/{id}/export?format=dpo (JSON Lines); a row of its Parquet file."""

    id: str
    prompt: str | list[DpoMessage] = Field(description="Text, or messages with conversational=true.")
    chosen: str | list[DpoMessage]
    rejected: str | list[DpoMessage]
    persona: str | dict[str, Any] | None = Field(
        default=None, description="persona=raw: present when the item had one; column: text or null; fold: absent.")
    winner: Literal["A", "B"] | None = Field(default=None, description="The response chosen.")
    p_a: float | None = None
    certainty: float | None = None
    consistent: bool | None = None
    judge: DpoJudge | None = None


class CredentialOut(BaseModel):
    name: str
    provider: str
    created_at: AwareDatetime


class CredentialList(BaseModel):
    credentials: list[CredentialOut]


class Health(BaseModel):
    status: Literal["ok", "error"]
    database: Literal["ok", "error"]


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorBody(BaseModel):
    error: ErrorInfo


# ---------------------------------------------------------------- webhooks (api/webhooks.py)

class DeliveriesQuery(_Query):
    cursor: str | None = Field(default=None, pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page.")
    limit: int = Field(default=100, ge=1, le=1000)


class WebhookEventOut(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt (receivers deduplicate by it).")
    url: str
    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the job has not ended; pending: being delivered (retries included); delivered: "
                    "a 2xx answer; failed: every retry failed.")
    type: str | None = Field(description="job.done, job.failed, job.cancelled or job.budget_exhausted; null "
                                         "while waiting.")
    attempts: int
    next_attempt_at: AwareDatetime | None
    delivered_at: AwareDatetime | None


class DeliveryOut(BaseModel):
    attempt: int
    ok: bool
    status_code: int | None = Field(description="The receiver's HTTP status (null: no answer).")
    error: str | None
    duration_ms: float | None
    response_snippet: str | None = Field(description="The start of the receiver's answer (at most 256 "
                                                     "characters).")
    next_retry_at: AwareDatetime | None = Field(description="When the next attempt is due (null: none).")
    created_at: AwareDatetime


class DeliveryPage(BaseModel):
    event: WebhookEventOut | None = Field(description="The job's webhook event (null: the job has no webhook_url).")
    deliveries: list[DeliveryOut]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last page.")


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="whsec_...: verify the events with it (e.g. standardwebhooks.Webhook(secret)"
                                    ".verify(body, headers)).")
