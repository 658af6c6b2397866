"""/v1/personalization: degree of personalization of systems' responses, as a service (SPEC 6).

POST takes SPEC 1.3 response lines, validates them with the same reader as `pjudge personalization`
(calibration.personalization_io), expands every ordered persona pair of every prompt and system into
a pair item (calibration.persona_fit.persona_fit_job_items) and stores them as an ordinary job of kind
"personalization": the workers judge them like any job, with the call cache, retries and cost
accounting. The response lines are stored with the job (store.repo.create_job `inputs`), because the
text measures (DEGRESS, EGISES, EDP, PerSEval) are computed from them, not from the pair items.

GET /{id}/report answers 409 until the job is done: a document whose persona-fit half is missing or
partial would read like a finished result with no estimate. Once done, it is the same document
`pjudge personalization --judge ... --format json` prints for the same responses and verdicts
(assembled by calibration.personalization_document), plus `job_id`; `judge.verdicts` is the URL of
the pair verdicts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from flask import Blueprint, Response
from pydantic import ValidationError

from api.auth import authenticate, current_owner
from api.context import state
from api.errors import ApiError, invalid, json_response, not_found, problem, pydantic_problems, summarize
from api.jobs import (
    MAX_NESTING,
    check_job_size,
    daily_quota,
    idempotency_conflict,
    job_out,
    owned_job,
    quota_error,
)
from api.jobs import _idempotency_key as idempotency_key  # the same header rules as POST /v1/jobs
from api.parsing import deeper_than, parse_query, read_json_body
from api.profiles import resolve_profile, webhook_url_of
from api.schemas import (
    MAX_ITEM_ID,
    PersonalizationAccepted,
    PersonalizationCreate,
    PersonalizationOptions,
    PersonalizationReportQuery,
    job_status,
)
from judge.jsonl import InputError
from judge.profiles import JudgeProfile
from judge.records import PairItem
from store import repo, webhooks
from store.models import Job

if TYPE_CHECKING:
    from calibration.personalization_io import ResponseSet

log = logging.getLogger("pjudge.api")
bp = Blueprint("personalization", __name__, url_prefix="/v1/personalization")

KIND: Literal["personalization"] = "personalization"
INPUTS_VERSION = 1
# n personas of a prompt make n(n-1) pair items per system: a small body can ask for a huge job.
MAX_PAIRS = 100_000
Problems = list[dict[str, str | None]]


@bp.before_request
def _authenticate() -> None:
    authenticate()


# ---------------------------------------------------------------- validation

@dataclass(frozen=True)
class _Accepted:
    """A fully validated request: what is stored, and the pair items."""

    lines: list[Any]
    options: PersonalizationOptions
    profile: JudgeProfile
    items: list[PairItem]
    unjudgeable: dict[str, int]

    def inputs(self) -> dict[str, Any]:
        """The job's stored inputs: everything the report needs besides the verdicts."""
        return {"version": INPUTS_VERSION, "responses": self.lines, "personas": self.options.personas,
                "prompts": self.options.prompts, "systems": self.options.systems,
                "distance": self.options.distance, "anchor_system": self.options.anchor_system,
                "unjudgeable": self.unjudgeable}


# The reader's hints name the CLI's side files; over HTTP the same data are request fields.
_HINTS = {"a --personas file of {persona_id, persona}": "a `personas` object {persona_id: description}",
          "a --prompts file of {prompt_id, prompt}": "a `prompts` object {prompt_id: text}"}


def _http_message(message: str) -> str:
    for cli, http in _HINTS.items():
        message = message.replace(cli, http)
    return message


def _input_problems(error: InputError, unplaced: str) -> Problems:
    """InputError of the responses reader, whose `line` is the index in `responses`; a problem
    without a line is about the request field `unplaced` (e.g. `systems`, `anchor_system`)."""
    details: Problems = []
    for p in error.problems:
        if p.line is None:
            path = unplaced
        else:
            path = f"responses[{p.line}]" + (f".{p.field}" if p.field else "")
        details.append(problem(path, _http_message(p.message)))
    return details


def _refuse(details: Problems, what: str = "invalid request") -> ApiError:
    return invalid(summarize(details, what), details)


def _read_body() -> dict[str, Any]:
    body = read_json_body()
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object {responses, profile, personas?, prompts?, systems?, "
                      "distance?, anchor_system?}", [problem(None, "expected an object")])
    unknown = [problem(str(k)[:100], "unknown field") for k in body if k not in PersonalizationCreate.model_fields]
    if unknown:
        raise _refuse(unknown)
    return body


def _validate_lines(raw: Any) -> ResponseSet:
    from calibration.personalization_io import validate_responses

    if not isinstance(raw, list) or not raw:
        raise _refuse([problem("responses", "required: a non-empty list of response lines (SPEC 1.3)")])
    try:
        responses = validate_responses(enumerate(raw), "responses")
    except InputError as exc:
        raise _refuse(_input_problems(exc, "responses"), "invalid responses") from None
    # Free-form descriptions nested deeper than this could be stored but never serialised back out.
    deep = [problem(f"responses[{i}].persona", f"nested more than {MAX_NESTING} levels deep")
            for i, row in enumerate(raw) if deeper_than(row.get("persona"), MAX_NESTING)]
    if deep:
        raise _refuse(deep, "invalid responses")
    if not responses.systems:
        raise _refuse([problem("responses", "no persona responses: every line has persona_id null")],
                      "invalid responses")
    return responses


def _validate_options(body: Mapping[str, Any]) -> PersonalizationOptions:
    fields = {name: body[name] for name in PersonalizationOptions.model_fields if name in body}
    try:
        # Strict: JSON types as documented (no 3 for a prompt text).
        options = PersonalizationOptions.model_validate(fields, strict=True)
    except ValidationError as exc:
        raise _refuse(pydantic_problems(exc)) from None
    deep = [problem(f"personas.{key[:100]}", f"nested more than {MAX_NESTING} levels deep")
            for key, value in (options.personas or {}).items() if deeper_than(value, MAX_NESTING)]
    if deep:
        raise _refuse(deep)
    return options


def _judge_profile(spec: Any) -> JudgeProfile:
    profile = resolve_profile(spec, state().settings, current_owner())
    if not profile.swap:
        # F_pq is defined as position-debiased: one order would measure the judge's position bias too.
        raise _refuse([problem("profile.swap", "persona fit judges both orders: the profile must not turn swap off")],
                      "invalid profile")
    return profile


def _merged(inline: Mapping[str, Any], given: Mapping[str, Any] | None, field: str,
            check: Callable[[Any], str | None]) -> tuple[dict[str, Any], Problems]:
    """Descriptions of the lines completed by the request's map; a value given in both must agree
    (as with the CLI's side files). Ids the responses do not use are ignored."""
    merged = dict(inline)
    details: Problems = []
    for key, value in (given or {}).items():
        path = f"{field}.{key[:100]}"
        reason = check(value)
        if reason is not None:
            details.append(problem(path, reason))
        elif key not in inline:
            merged[key] = value
        elif json.dumps(inline[key], ensure_ascii=False) != json.dumps(value, ensure_ascii=False):
            details.append(problem(path, "differs from the one given on the responses lines"))
    return merged, details


def _prompt_text_problem(value: object) -> str | None:
    return None if isinstance(value, str) and value.strip() else "must be non-empty text"


def _descriptions(responses: ResponseSet, options: PersonalizationOptions) -> tuple[dict[str, Any], dict[str, str]]:
    from calibration.personalization_io import persona_description_problem

    personas, persona_problems = _merged(responses.persona_descriptions, options.personas, "personas",
                                         persona_description_problem)
    prompts, prompt_problems = _merged(responses.prompt_texts, options.prompts, "prompts", _prompt_text_problem)
    if persona_problems or prompt_problems:
        raise _refuse(persona_problems + prompt_problems)
    return personas, prompts


def _check_size(responses: ResponseSet, systems: Sequence[str] | None) -> None:
    from calibration.personalization_document import ordered_pairs

    pairs = sum(ordered_pairs(responses, systems).values())
    if pairs > MAX_PAIRS:
        raise invalid(f"{pairs} persona pairs to judge, more than {MAX_PAIRS} per job: split the responses "
                      "or judge fewer systems (`systems`)", [problem("responses", f"{pairs} persona pairs")],
                      code="too_many_pairs")


def _pair_items(responses: ResponseSet, personas: dict[str, Any], prompts: dict[str, str],
                systems: Sequence[str] | None) -> list[PairItem]:
    from calibration.persona_fit import persona_fit_job_items

    try:
        items = persona_fit_job_items(responses, personas=personas, prompts=prompts, systems=systems)
    except InputError as exc:  # a persona without description, a prompt without text, an unknown system
        raise _refuse(_input_problems(exc, "systems"), "cannot judge persona fit") from None
    if not items:
        raise _refuse([problem("responses", "no persona pairs to judge: a prompt needs at least two personas "
                                            "answered (with non-blank responses) by the same system")],
                      "cannot judge persona fit")
    too_long = {_line_of(responses, item): len(item.id) for item in items if len(item.id) > MAX_ITEM_ID}
    if too_long:
        raise _refuse([problem(line, f"system, prompt_id and persona_id make a pair id of {n} characters "
                                     f"(at most {MAX_ITEM_ID}, percent-encoded): use shorter ids")
                       for line, n in too_long.items()], "invalid responses")
    return items


def _line_of(responses: ResponseSet, item: PairItem) -> str:
    """`responses[i]` of the line behind a pair item (its system's response for persona p)."""
    meta = item.metadata
    for prompt in responses.prompts:
        if prompt.prompt_id == meta["prompt_id"]:
            line = prompt.response_lines.get((meta["system"], meta["persona_p"]))
            if line is not None:
                return f"responses[{line}]"
    return "responses"


def _check_text_measures(responses: ResponseSet, options: PersonalizationOptions) -> None:
    """Run the text measures once now: what they refuse (an anchor system without persona-agnostic
    responses) is a 422 of this request, not a report that fails after the judging was paid for."""
    from calibration.personalization import evaluate

    try:
        evaluate(responses, distance=options.distance, anchor_system=options.anchor_system)
    except InputError as exc:
        raise _refuse(_input_problems(exc, "anchor_system")) from None


def _accept(body: Mapping[str, Any]) -> _Accepted:
    responses = _validate_lines(body.get("responses"))
    options = _validate_options(body)
    profile = _judge_profile(body.get("profile"))
    personas, prompts = _descriptions(responses, options)
    _check_size(responses, options.systems)
    items = _pair_items(responses, personas, prompts, options.systems)
    check_job_size(items, "responses")  # n personas make n(n-1) copies of each response
    _check_text_measures(responses, options)
    from calibration.personalization_document import unjudgeable_pairs

    return _Accepted(lines=body["responses"], options=options, profile=profile, items=items,
                     unjudgeable=unjudgeable_pairs(responses, items, options.systems))


# ---------------------------------------------------------------- helpers

def _model(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(document.model_dump(mode="json"), status, headers)


def _enqueue(job: Job) -> None:
    try:
        state().enqueue(job)
    except Exception as exc:  # noqa: BLE001 - the job is stored; the sweeper re-sends queued jobs
        # The type only: a broker error text can hold its URL, password included.
        log.warning("job %s stored but not enqueued (%s); it stays queued for the sweeper", job.id,
                    type(exc).__name__)


def _personalization_job(job_id: str) -> Job:
    """The caller's personalization job; a job of another kind is not one (404), like another key's."""
    job = owned_job(job_id)
    if job.kind != KIND:
        raise not_found("personalization job")
    return job


def _not_done(job: Job) -> ApiError:
    if job.status in repo.ACTIVE:
        message = (f"the report is ready when the job is done; it is {job.status} ({job.n_verdicts} of "
                   f"{job.n_items} persona pairs judged): poll GET /v1/personalization/{job.id}")
    else:
        message = f"the job is {job.status}: it has no report"
    return ApiError(409, "job_not_done", message, [problem("status", job.status)])


def _report_document(job: Job, query: PersonalizationReportQuery) -> dict[str, Any]:
    from calibration.personalization import evaluate
    from calibration.personalization_document import CallTotals, add_persona_fit, judge_section
    from calibration.personalization_io import validate_responses

    engine = state().engine
    inputs = repo.job_inputs(engine, job.id)
    if inputs is None:  # stored in the job's own transaction: a bug, not bad input
        raise RuntimeError(f"personalization job {job.id} has no stored inputs")
    responses = validate_responses(enumerate(inputs["responses"]), "responses")  # valid when stored
    text = evaluate(responses, distance=inputs["distance"], anchor_system=inputs["anchor_system"])
    document = {"job_id": job.id, **text.to_dict()}
    verdicts = repo.all_verdicts(engine, job.id, with_raw=False)  # counts and costs: no raw answers
    add_persona_fit(document, verdicts, inputs["unjudgeable"], resamples=query.bootstrap, seed=query.seed)
    profile = repo.job_profile(job)
    if not isinstance(profile, JudgeProfile):  # api.profiles.resolve_profile refuses cascades here
        raise RuntimeError(f"personalization job {job.id} has a cascade profile")
    document["judge"] = judge_section(profile, job.n_items, CallTotals.of(verdicts), query.bootstrap,
                                      query.seed, f"/v1/jobs/{job.id}/verdicts")
    return document


# ---------------------------------------------------------------- routes

@bp.post("")
def create() -> Response:
    key = idempotency_key()
    body = _read_body()
    accepted = _accept(body)
    settings = state().settings
    webhook_url = webhook_url_of(body, settings)
    try:
        created = repo.create_job(state().engine, current_owner(), accepted.items, accepted.profile,
                                  idempotency_key=key, batch_size=settings.batch_size, kind=KIND,
                                  inputs=accepted.inputs(), quota=daily_quota(), webhook_url=webhook_url)
    except repo.QuotaExceeded as exc:
        raise quota_error(exc, "responses") from None
    job = created.job
    headers = {"Location": f"/v1/personalization/{job.id}"}
    answer = PersonalizationAccepted(job_id=job.id, status=job_status(job.status), kind=KIND,
                                     pairs=job.n_items)
    if not created.created:
        if not created.same_request:
            raise idempotency_conflict(job)
        headers["Idempotent-Replayed"] = "true"
        return _model(answer, 200, headers)
    if webhook_url is not None:
        webhooks.secret_of(state().engine, job.owner)  # as POST /v1/jobs
    _enqueue(job)
    return _model(answer, 202, headers)


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return _model(job_out(_personalization_job(job_id)))


@bp.get("/<job_id>/report")
def report(job_id: str) -> Response:
    job = _personalization_job(job_id)
    query = parse_query(PersonalizationReportQuery)
    if job.status != "done":
        raise _not_done(job)
    return json_response(_report_document(job, query))
