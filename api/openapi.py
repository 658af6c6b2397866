"""GET /v1/openapi.json: an OpenAPI 3.1 document built from the pydantic models in api/schemas.py
(the same ones that validate the requests) and the route table below."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api import schemas as s
from api.errors import json_response
from judge.records import Verdict

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
ERRORS = {400: "Unreadable request (malformed JSON, wrong content type, bad query parameter).",
          401: "Missing, unknown or revoked key.",
          404: "No such job (or credential) for this key.",
          409: "Conflict with the job's state or an earlier request.",
          413: "Body larger than the server's limit (PJUDGE_MAX_BODY_MB).",
          415: "Body sent with a Content-Encoding (gzip, br...): send it uncompressed.",
          422: "Readable but invalid input; details name each field (e.g. items[516].response_b).",
          429: "Too many requests: over this key's daily quota (PJUDGE_QUOTA_ITEMS_PER_DAY, "
               "PJUDGE_QUOTA_COST_PER_DAY), or too many failed authentications from this address "
               "(PJUDGE_AUTH_FAILURES_PER_MINUTE); Retry-After gives the seconds to wait."}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"},
          "description": "The job_id returned by POST /v1/jobs."}
PERSONALIZATION_JOB_ID = {**JOB_ID, "description": "The job_id returned by POST /v1/personalization."}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    "description": "Repeat a POST with the same key (and the same request) to get the same job, never a second.",
}


REPORT_FROM_SUMMARIES = (
    "Summed in SQL from per-job summaries kept up to date as verdicts and labels land, so the cost does "
    "not grow with the number of verdicts: the same numbers as `pjudge report` on the same verdicts, "
    "without `coverage_auc`. since/until are exact (whole hours come from the summaries, the cut hours "
    "at either end from the verdicts). A threshold off the 0.01 grid is split by one query over the "
    "verdict rows (slower). group_by over a metadata key that is not summarized for some job (more than "
    "64 distinct values in the job, a value over 200 bytes, more than 16 keys, or a key the job's items "
    "did not have) is computed from the verdicts."
)


# A body's schema: a model (its JSON schema, by reference) or a raw JSON schema.
Schema = type[BaseModel] | dict[str, Any]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    ok: dict[int, tuple[str, Schema | None]]  # status -> (description, model or raw schema)
    errors: tuple[int, ...] = (400, 401, 404)
    query: type[BaseModel] | None = None
    body: Schema | None = None
    parameters: tuple[dict[str, Any], ...] = ()
    public: bool = False
    content_type: str = "application/json"
    other_content: tuple[tuple[str, Schema], ...] = ()  # further (content type, schema) of the 2xx answers
    tags: tuple[str, ...] = field(default=("jobs",))
    description: str | None = None


ROUTES: tuple[Route, ...] = (
    Route("post", "/v1/jobs", "Submit pair items for judging.",
          {202: ("Job stored and queued.", s.JobAccepted),
           200: ("The job created earlier with this Idempotency-Key.", s.JobAccepted)},
          errors=(400, 401, 409, 413, 422, 429), body=s.JobCreate, parameters=(IDEMPOTENCY_KEY,)),
    Route("post", "/v1/jobs/estimate", "Calls, tokens and cost of a job, before anything runs (nothing is stored).",
          {200: ("The estimate.", s.EstimateOut)}, errors=(400, 401, 413, 422), body=s.EstimateCreate,
          description="Validated and bounded like POST /v1/jobs. calls = items x orders x samples (re-asks not "
                      "counted); input tokens of the real prompts, by tiktoken for provider openai where it is "
                      "installed, else one token per 4 characters (counted_by names the method); output tokens "
                      "at max_tokens, an upper bound; cost at the server's price for the model."),
    Route("get", "/v1/jobs/{job_id}", "Status, counts and cost of a job.", {200: ("The job.", s.JobOut)},
          parameters=(JOB_ID,), errors=(401, 404)),
    Route("get", "/v1/jobs/{job_id}/verdicts", "Verdicts (SPEC 1.2) in item order, one page at a time.",
          {200: ("A page of verdicts.", s.VerdictPage)}, query=s.VerdictsQuery, parameters=(JOB_ID,),
          description="A page holds up to `limit` verdicts and ends early once its JSON would pass "
                      "PJUDGE_VERDICT_PAGE_MB (8 MB by default; a page always holds at least one verdict): "
                      "follow next_cursor until it is null rather than counting verdicts."),
    Route("get", "/v1/jobs/{job_id}/queue", "Items waiting for a human label, highest BPDE first, one page at a time.",
          {200: ("A page of the human queue.", s.QueuePage)}, query=s.QueueQuery, parameters=(JOB_ID,),
          description="An item waits when its verdict abstained (escalated by a cascade, or under the profile's "
                      "certainty threshold) and it has no human label; a cascade whose `then` is abstain queues "
                      "none. Order: a null BPDE (no call parsed) first, then the highest BPDE, ties in input order, "
                      "as the HITL selection (SPEC 3.3). Labels posted to /labels complete items: they leave the "
                      "queue, and counts.awaiting_label of the job counts those left. Pages end at `limit` entries "
                      "or PJUDGE_VERDICT_PAGE_MB, like /verdicts: follow next_cursor until it is null."),
    Route("post", "/v1/jobs/{job_id}/labels", "Attach human labels to a job's items by id.",
          {200: ("Labels applied.", s.LabelsOut)}, errors=(400, 401, 404, 413, 422),
          body={"type": "array", "items": {"$ref": REF.format(model="LabelIn")}}, parameters=(JOB_ID,)),
    Route("get", "/v1/jobs/{job_id}/report", "The statistics of SPEC section 4 for the job's verdicts.",
          {200: ("The report.", s.Report)}, query=s.ReportQuery, parameters=(JOB_ID,), errors=(400, 401, 404, 422),
          description=REPORT_FROM_SUMMARIES + " 422 too_many_verdicts where the verdicts must be loaded "
                      "(group_by over such a key, or a cascade's per-stage section) and the job has more than "
                      "PJUDGE_STATS_MAX_VERDICTS."),
    Route("post", "/v1/jobs/{job_id}/cancel", "Cancel a queued or running job.",
          {200: ("The job is cancelled.", s.CancelOut)}, errors=(401, 404, 409), parameters=(JOB_ID,)),
    Route("get", "/v1/jobs/{job_id}/export", "Preference pairs of the decided, non-abstained verdicts.",
          {200: ("JSON Lines, one DpoLine per line; with as=parquet a Parquet file of the same columns.",
                 s.DpoLine)}, query=s.ExportQuery, parameters=(JOB_ID,), content_type="application/x-ndjson",
          other_content=(("application/vnd.apache.parquet", {"type": "string", "contentEncoding": "binary"}),),
          description="The rows TRL's DPOTrainer reads (prompt, chosen, rejected) of the verdicts with winner A or "
                      "B that did not abstain, filtered by min_certainty and consistent_only, in item order, with "
                      "id, winner, p_a, certainty, consistent and judge for weighted or filtered training. Streamed "
                      "from keyset pages: the answer's size is the job's, the server's memory is not."),
    Route("post", "/v1/jobs/{job_id}/items", "Add a page of items to a staged job (all or none of them).",
          {200: ("The page is stored (or was, under this Idempotency-Key: Idempotent-Replayed).", s.PageAccepted)},
          errors=(400, 401, 404, 409, 413, 422, 429), body=s.ItemsPage, parameters=(JOB_ID, IDEMPOTENCY_KEY),
          description="A JSON page {items} of at most PJUDGE_MAX_PAGE_ITEMS items, or an NDJSON body "
                      "(Content-Type application/x-ndjson, one pair item a line, up to PJUDGE_MAX_UPLOAD_MB; errors "
                      "name `line N`). One request is stored whole or not at all. The same Idempotency-Key with the "
                      "same items adds nothing and answers as the first time; with other items, 409. An id the job "
                      "already holds is a 422 naming the line; a job started (unless start_early), finished or "
                      "cancelled is a 409. The daily item quota and PJUDGE_MAX_JOB_ITEMS are checked per page."),
    Route("post", "/v1/jobs/{job_id}/start", "Start a staged job: no more pages, its items go to the workers.",
          {202: ("Started.", s.JobAccepted), 200: ("It was started already (nothing changed).", s.JobAccepted)},
          errors=(401, 404, 409, 429), parameters=(JOB_ID,)),
    Route("get", "/v1/jobs/{job_id}/verdicts.jsonl", "Every verdict (SPEC 1.2) in item order, streamed.",
          {200: ("JSON Lines, one verdict per line, as /verdicts pages them.", Verdict)}, parameters=(JOB_ID,),
          errors=(401, 404), content_type="application/x-ndjson"),
    Route("post", "/v1/personalization",
          "Degree of personalization of response lines (SPEC 1.3, 6): store them and queue the persona-fit "
          "judging of every ordered persona pair as a job of kind personalization.",
          {202: ("Job stored and queued.", s.PersonalizationAccepted),
           200: ("The job created earlier with this Idempotency-Key.", s.PersonalizationAccepted)},
          errors=(400, 401, 409, 413, 422, 429), body=s.PersonalizationCreate, parameters=(IDEMPOTENCY_KEY,),
          tags=("personalization",)),
    Route("get", "/v1/personalization/{job_id}", "Status, counts and cost of a personalization job.",
          {200: ("The job.", s.JobOut)}, parameters=(PERSONALIZATION_JOB_ID,), errors=(401, 404),
          tags=("personalization",)),
    Route("get", "/v1/personalization/{job_id}/report",
          "DEGRESS, EGISES, EDP, PerSEval and the persona-fit win rate per system (409 until the job is done).",
          {200: ("The report (the document of pjudge personalization --judge --format json).",
                 s.PersonalizationReport)},
          errors=(400, 401, 404, 409), query=s.PersonalizationReportQuery, parameters=(PERSONALIZATION_JOB_ID,),
          tags=("personalization",)),
    Route("get", "/v1/stats/agreement", "The SPEC 4 statistics over the caller's jobs matching the filters.",
          {200: ("The report.", s.Report)}, errors=(400, 401, 422), query=s.StatsQuery, tags=("stats",),
          description=REPORT_FROM_SUMMARIES + " 422 too_many_verdicts only where the verdicts must be loaded "
                      "(group_by over such a key) and more than PJUDGE_STATS_MAX_VERDICTS match."),
    Route("post", "/v1/credentials",
          "Store a provider key of yours, encrypted; jobs use it by naming it in profile.credential (with "
          "the server's endpoints or your own base_url). The key is never returned.",
          {201: ("Stored.", s.CredentialOut)}, errors=(400, 401, 409, 413, 422), body=s.CredentialCreate,
          tags=("credentials",)),
    Route("get", "/v1/credentials", "Your stored credentials: name, provider, created_at (never the key).",
          {200: ("The credentials.", s.CredentialList)}, errors=(401,), tags=("credentials",)),
    Route("delete", "/v1/credentials/{name}", "Delete a stored credential (jobs naming it then fail their calls).",
          {204: ("Deleted.", None)}, errors=(401, 404), tags=("credentials",),
          parameters=({"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": "The credential's name."},)),
    Route("get", "/v1/jobs/{job_id}/deliveries", "The job's webhook event and its delivery attempts, oldest first.",
          {200: ("A page of delivery attempts.", s.DeliveryPage)}, query=s.DeliveriesQuery, parameters=(JOB_ID,),
          tags=("webhooks",),
          description="A job posted with webhook_url has one event, sent once the job ends (done, failed, "
                      "cancelled, budget_exhausted) and retried with backoff until a 2xx answer, for about a day "
                      "(PJUDGE_WEBHOOK_RETRY_SCHEDULE). Every attempt has a row: status code or error, duration, "
                      "the start of the answer, and when the next attempt is due. The job's own status never "
                      "depends on its webhook."),
    Route("get", "/v1/webhook-secret", "Your key's webhook signing secret (whsec_..., made on first use).",
          {200: ("The secret.", s.WebhookSecretOut)}, errors=(401,), tags=("webhooks",),
          description="Events carry the Standard Webhooks headers webhook-id, webhook-timestamp and "
                      "webhook-signature (v1, HMAC-SHA256 of id.timestamp.body under this secret): verify them "
                      "with standardwebhooks.Webhook(secret).verify(body, headers), and deduplicate by "
                      "webhook-id (a retry sends the same id)."),
    Route("get", "/healthz", "Liveness and database check.",
          {200: ("Healthy.", s.Health), 503: ("The database is unreachable.", s.Health)},
          errors=(), public=True, tags=("operations",)),
    Route("get", "/metrics", "Prometheus text exposition (no auth unless PJUDGE_METRICS_AUTH is set).",
          {200: ("Metrics.", {"type": "string"})}, errors=(), public=True, content_type="text/plain",
          tags=("operations",)),
    Route("get", "/v1/openapi.json", "This document.", {200: ("OpenAPI 3.1.", {"type": "object"})},
          errors=(), public=True, tags=("operations",)),
)


def _drop_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: `X | None` documents as X."""
    options = schema.get("anyOf")
    if options:
        rest = [o for o in options if o.get("type") != "null"]
        if len(rest) == 1:
            merged = {k: v for k, v in schema.items() if k != "anyOf"}
            merged.update(rest[0])
            return merged
    return schema


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = _drop_null(dict(prop))
        prop.pop("title", None)
        if prop.get("default", 0) is None:  # "absent" is not a value of the parameter's type
            prop.pop("default")
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameters.append(parameter)
    return parameters


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(s.JobCreate, "validation"), (s.LabelIn, "validation"),
                                                  (s.EstimateCreate, "validation"),
                                                  (s.PersonalizationCreate, "validation"),
                                                  (s.CredentialCreate, "validation"),
                                                  (s.ErrorBody, "serialization"), (Verdict, "serialization")]
    for route in ROUTES:
        if isinstance(route.body, type) and issubclass(route.body, BaseModel):
            models.append((route.body, "validation"))
        for _, model in route.ok.values():
            if isinstance(model, type) and issubclass(model, BaseModel):
                models.append((model, "serialization"))
    return list(dict.fromkeys(models))


@lru_cache(maxsize=1)
def build_document() -> dict[str, Any]:
    refs, definitions = models_json_schema(_models(), ref_template=REF)

    def ref(model: Schema, mode: JsonSchemaMode) -> dict[str, Any]:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return refs[(model, mode)]
        return model

    error = {"description": "", "content": {"application/json": {"schema": ref(s.ErrorBody, "serialization")}}}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {"summary": route.summary, "tags": list(route.tags),
                                     "operationId": f"{route.method}_{route.path.strip('/').replace('/', '_')}"
                                     .replace("{", "").replace("}", "").replace(".", "_").replace("-", "_")}
        if route.description:
            operation["description"] = route.description
        parameters = list(route.parameters) + (query_parameters(route.query) if route.query else [])
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": ref(route.body, "validation")}}}
        responses: dict[str, Any] = {}
        for status, (description, model) in route.ok.items():
            responses[str(status)] = {"description": description}
            if model is not None:
                responses[str(status)]["content"] = {route.content_type: {"schema": ref(model, "serialization")}}
                for content_type, schema in route.other_content:
                    responses[str(status)]["content"][content_type] = {"schema": ref(schema, "serialization")}
        # Every route checks keys (401 brings the throttle's 429); every body may come compressed (415).
        implied = (*((429,) if 401 in route.errors else ()), *((415,) if route.body is not None else ()))
        for status in sorted({*route.errors, *implied}):
            responses[str(status)] = {**error, "description": ERRORS[status]}
        operation["responses"] = responses
        if route.public:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method] = operation
    _document_leniencies(definitions.get("$defs", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": "persona-judge", "version": _version(),
                 "description": "LLM-as-a-personalized-judge as a service (SPEC section 8). Every error is "
                                "{\"error\": {\"code\", \"message\", \"details\"}}."},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A key from `pjudge keys create` or PJUDGE_API_KEYS."}},
        },
        "security": [{"bearer": []}],
    }


def _document_leniencies(schemas: dict[str, Any]) -> None:
    """What the validators accept beyond their type annotations (a before-validator does not show
    in model_json_schema): PairItem.metadata may be null, meaning {} (judge/records.py)."""
    metadata = schemas.get("PairItem", {}).get("properties", {}).get("metadata")
    if metadata is not None and "anyOf" not in metadata:
        described = {k: metadata.pop(k) for k in ("title", "default", "description") if k in metadata}
        schemas["PairItem"]["properties"]["metadata"] = {"anyOf": [metadata, {"type": "null"}], **described}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("persona-judge")
    except PackageNotFoundError:
        return "0"


@bp.get("/v1/openapi.json")
def openapi_json() -> Response:
    return json_response(build_document())
