"""The `profile` of a job request: a name or an object of overrides, resolved with
judge.profiles.load_profile after the checks a network-facing server needs: no server files; the
credential policy of judge/endpoints.py (a client-chosen base_url is a public http(s) host;
api_key_env only as the operator allows and only where the operator bound it; a stored credential
only the caller's own); the operator's bounds on every field that multiplies a job's requests and
tokens; and the server's own price (never the client's) for jobs at the operator's endpoints."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from pydantic import ValidationError

from api.context import ApiSettings
from api.errors import ApiError, invalid, problem, pydantic_problems, summarize
from api.schemas import CascadeShape, ProfileOverrides
from judge.endpoints import (
    Endpoint,
    EndpointError,
    bound_variables,
    check_client_host,
    default_endpoint,
    operator_endpoints,
    parse_endpoint,
)
from judge.profiles import (
    BATCH_STAGE,
    DEFAULT_PROFILE,
    BatchStageError,
    CascadeProfile,
    CascadeStage,
    JudgeProfile,
    Judging,
    Price,
    ProfileError,
    ProfileFileError,
    available_profiles,
    check_stage,
    is_cascade,
    load_judging,
    load_profile,
    names_cascade,
    profile_dirs,
)
from judge.providers.base import redact
from judge.templates import TemplateError, template_dirs

# A bare name: no separators, no dots (so never "../x" nor "x.toml", which load_profile and
# get_template would open as files relative to the server's working directory).
log = logging.getLogger(__name__)
REFUSED_HOST = "this server does not call this host (a client-chosen endpoint must resolve to public addresses)"
# fullmatch, not match: "$" also matches before a final newline ("persona-certainty\n" is no plain name).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def _refuse(field: str, message: str) -> ApiError:
    return invalid(f"invalid profile: {field}: {message}", [problem(field, message)])


def _check_name(field: str, value: object, settings: ApiSettings) -> None:
    if isinstance(value, str) and not settings.allow_server_paths and not NAME.fullmatch(value):
        raise _refuse(field, "must be a plain name (letters, digits, '-' and '_'); server file paths are not accepted")


def _public_message(exc: Exception) -> str:
    """A profile's loading error as a client may see it. The server's profile and template files are
    named without their folders (the operator's paths); a file that cannot be read or parsed is
    named only (its parser's message can quote the file), and logged whole for the operator."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ProfileFileError):
        cause = cause.__cause__
    if isinstance(cause, ProfileFileError):
        log.warning("a profile file cannot be read: %s", redact(str(cause)))
        return f"the server's profile '{cause.path.stem}' cannot be read (its operator must fix the file)"
    text = str(exc)
    folders = sorted({str(folder) for folder in profile_dirs() + template_dirs()}, key=len, reverse=True)
    for folder in folders:
        text = text.replace(folder + os.sep, "")
    # The library's hint about file paths does not apply over HTTP.
    return text.replace("; or give a path to a .toml file)", ")").replace("; or give a path)", ")")


def _load(spec: str | dict[str, Any], field: str) -> JudgeProfile:
    try:
        return load_profile(spec)
    except (ProfileError, TemplateError, ValueError, TypeError) as exc:
        raise _refuse(field, _public_message(exc)) from None


# (field, setting): the profile fields that multiply what one item costs, and their bound.
BOUNDED = (("samples", "api_max_samples"), ("max_reasks", "api_max_reasks"), ("max_retries", "api_max_retries"),
           ("max_tokens", "api_max_tokens"), ("timeout_s", "api_max_timeout_s"))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.12g}"


def check_bounds(profile: JudgeProfile, settings: ApiSettings, where: str = "profile") -> None:
    """422 naming every field above the operator's bound (the resolved profile's, whether the
    client set the field or its base profile did: what is checked is what would run)."""
    problems = []
    for name, setting in BOUNDED:
        value, limit = getattr(profile, name), getattr(settings.config, setting)
        if value > limit:
            problems.append(problem(f"{where}.{name}", f"at most {_number(limit)} on this server, got "
                                                       f"{_number(value)} (PJUDGE_{setting.upper()})"))
    if problems:
        raise invalid(summarize(problems, "invalid profile"), problems)


def check_cascade_samples(judges: list[JudgeProfile], settings: ApiSettings) -> None:
    """422 on `profile.cascade` when the stages' samples add up to more than one profile may ask:
    an item can reach every stage, so each stage within the bound would still let a cascade of
    eight ask eight times the requests per item that check_bounds allows a single profile."""
    total, limit = sum(judge.samples for judge in judges), settings.config.api_max_samples
    if total > limit:
        message = (f"the stages ask {total} samples in each order in all, at most {limit} on this server "
                   "(PJUDGE_API_MAX_SAMPLES: a cascade asks an item at most what one profile may)")
        raise invalid(f"invalid profile: profile.cascade: {message}", [problem("profile.cascade", message)])


def server_priced(profile: JudgeProfile, settings: ApiSettings, where: str = "profile") -> JudgeProfile:
    """The profile at the server's price for its model (PJUDGE_PRICES): a job on the server's
    provider keys costs what the operator says. Replay makes no provider call: it costs nothing."""
    if profile.provider == "replay":
        return profile.model_copy(update={"price": Price()})
    price = settings.prices.price_for(profile.model)
    if price is None:
        raise _refuse(f"{where}.model", f"this server has no price for model '{profile.model[:100]}' "
                                       "(the operator sets prices in PJUDGE_PRICES)")
    return profile.model_copy(update={"price": price})


def resolve_profile(spec: Any, settings: ApiSettings, owner: str | None = None, where: str = "profile"
                    ) -> JudgeProfile:
    """The job's profile; `owner` (the caller) is whose stored credentials it may name. A job at
    any of the operator's endpoints is priced by the server, whatever key it uses (a keyless local
    server is the operator's cost too); one at the caller's own endpoint keeps the price it gives
    (its provider bills the caller, not the server). A cascade is refused: see resolve_judging."""
    if isinstance(spec, str):
        _check_name(where, spec, settings)  # before any file is looked at
    if isinstance(spec, str) and names_cascade(spec) or isinstance(spec, dict) and is_cascade(spec):
        raise _refuse(where, "a cascade cannot be used here; give a judge profile")
    return _resolve_one(spec, settings, owner, where)


def _resolve_one(spec: Any, settings: ApiSettings, owner: str | None, where: str) -> JudgeProfile:
    profile, at_operator = _resolve(spec, settings, owner, where)
    check_bounds(profile, settings, where)
    return server_priced(profile, settings, where) if at_operator else profile


def resolve_judging(spec: Any, settings: ApiSettings, owner: str | None = None) -> Judging:
    """The profile of a /v1/jobs job: a judge profile (resolve_profile) or a cascade (SPEC 2.1),
    given as an object or as a stored or built-in cascade's name. Every stage passes exactly the
    checks of a single profile, with its field path (`profile.cascade[i].profile.base_url`): the
    endpoint and key rules, the bounds, the server's price; and no stage in batch mode."""
    if isinstance(spec, str):
        _check_name("profile", spec, settings)  # before any file is looked at
        if names_cascade(spec):
            return _stored_cascade(spec, settings)
    if not (isinstance(spec, dict) and is_cascade(spec)):
        return resolve_profile(spec, settings, owner)
    try:
        shape = CascadeShape.model_validate(spec, strict=True)
    except ValidationError as exc:
        problems = pydantic_problems(exc, "profile")
        raise invalid(summarize(problems, "invalid profile"), problems) from None
    _check_name("profile.name", shape.name, settings)  # the job's profile name, as a judge profile's name is
    judges = []
    for index, stage in enumerate(shape.cascade):
        where = f"profile.cascade[{index}].profile"
        judges.append(_resolve_one(stage.profile, settings, owner, where))
        try:
            check_stage(judges[-1], "object", index)  # the service runs stages one call at a time
        except BatchStageError:
            raise _refuse(f"{where}.mode", BATCH_STAGE) from None
    check_cascade_samples(judges, settings)
    cascade = CascadeProfile(name=shape.name, then=shape.then, cascade=[
        CascadeStage(profile=judge.model_dump(mode="json"), threshold=stage.threshold)
        for stage, judge in zip(shape.cascade, judges, strict=True)])
    cascade.judges = judges
    return cascade


def _stored_cascade(name: str, settings: ApiSettings) -> CascadeProfile:
    """A cascade the operator stored (a profile folder's file) or built in: its stages are the
    operator's, like a stored profile's fields, and pass the bounds and the server's prices."""
    try:
        cascade = load_judging(name)
    except BatchStageError as exc:
        raise _refuse(f"profile.cascade[{exc.index}].profile.mode", BATCH_STAGE) from None
    except (ProfileError, TemplateError, ValueError, TypeError) as exc:
        raise _refuse("profile", _public_message(exc)) from None
    assert isinstance(cascade, CascadeProfile)  # names_cascade
    judges = []
    for index, judge in enumerate(cascade.judges):
        where = f"profile.cascade[{index}].profile"
        check_bounds(judge, settings, where)
        judges.append(server_priced(judge, settings, where))
    check_cascade_samples(judges, settings)
    cascade.judges = judges
    return cascade


def _refuse_host(endpoint: Endpoint, allow_private: bool, where: str) -> None:
    """422 for a client-chosen host the server may not call, with one fixed text whatever the
    reason: the answer must not tell the client how a name resolves inside the server's network."""
    try:
        check_client_host(endpoint, allow_private)
    except EndpointError as exc:
        log.debug("refused client endpoint host %s: %s", endpoint.host, exc)
        raise _refuse(f"{where}.base_url", REFUSED_HOST) from None


def _check_access(fields: dict[str, Any], provider: str, settings: ApiSettings, owner: str | None,
                  where: str = "profile") -> bool:
    """The endpoint and key rules; normalizes `fields["base_url"]` (the URL checked is the URL
    called). True when the job runs at one of the operator's endpoints."""
    config = settings.config
    endpoint = default_endpoint(provider, config)
    operator = True
    if fields.get("base_url") is not None:
        try:
            endpoint = parse_endpoint(fields["base_url"])
        except EndpointError as exc:
            raise _refuse(f"{where}.base_url", str(exc)) from None
        operator = endpoint in operator_endpoints(provider, config)
        if not operator:
            if not config.client_endpoints:
                raise _refuse(f"{where}.base_url", "this server accepts only its configured provider endpoints")
            _refuse_host(endpoint, config.allow_private_endpoints, where)
        fields["base_url"] = endpoint.url
    key_env, credential = fields.get("api_key_env"), fields.get("credential")
    if key_env is not None:
        if credential is not None:
            raise _refuse(f"{where}.api_key_env", "give credential or api_key_env, not both")
        if key_env not in config.api_key_envs:
            raise _refuse(f"{where}.api_key_env", "not a variable this server allows (PJUDGE_API_KEY_ENVS)")
        if not operator or key_env not in bound_variables(provider, endpoint, config):
            raise _refuse(f"{where}.api_key_env", "the operator has not bound this variable to this endpoint for "
                                                 f"provider '{provider}' (PJUDGE_ENDPOINTS)")
    if credential is not None:
        from api.context import state
        from store import credentials

        stored = credentials.provider_of(state().engine, owner or "", credential) if owner else None
        if stored is None:
            raise _refuse(f"{where}.credential", f"unknown credential '{credential}' (see GET /v1/credentials)")
        if stored != provider:
            raise _refuse(f"{where}.credential", f"credential '{credential}' is for provider '{stored}'")
    return operator


def _resolve(spec: Any, settings: ApiSettings, owner: str | None, where: str = "profile"
             ) -> tuple[JudgeProfile, bool]:
    """One judge profile (a whole job's, or a cascade's stage at `where`): never a cascade."""
    if spec is None:
        spec = DEFAULT_PROFILE
    if isinstance(spec, str):
        _check_name(where, spec, settings)
        if names_cascade(spec):
            raise _refuse(where, f"'{spec}' is a cascade; a stage must be a judge profile")
        return _load(spec, where), True
    if not isinstance(spec, dict):
        raise _refuse(where, "must be a profile name or an object of profile fields")
    if "cascade" in spec:
        raise _refuse(f"{where}.cascade", "a stage must be a judge profile, not a cascade")
    try:
        # Strict: JSON types as documented (no `false` for an integer, no "3" for a number).
        fields = ProfileOverrides.model_validate(spec, strict=True).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = pydantic_problems(exc, where)
        raise invalid(summarize(problems, "invalid profile"), problems) from None
    for key in ("profile", "name", "template"):
        _check_name(f"{where}.{key}", fields.get(key), settings)
    base = fields.get("profile")
    if base is not None and base not in available_profiles() and not settings.allow_server_paths:
        raise _refuse(f"{where}.profile", f"unknown profile '{base}' (available: {', '.join(available_profiles())})")
    if base is not None and names_cascade(base):
        raise _refuse(f"{where}.profile", f"'{base}' is a cascade: fields override a single judge profile (set "
                                          "them in the cascade's stages)")
    if fields.get("replay_path") is not None and not settings.allow_server_paths:
        raise _refuse(f"{where}.replay_path", "server file paths are not accepted by this server")
    profile = _load(fields, where)  # the provider may come from the base profile
    if profile.provider == "replay" and not profile.replay_path:
        # It answers from a recorded file only: without one every batch of the job would fail.
        raise _refuse(f"{where}.provider", "provider 'replay' answers from a recorded server file (replay_path), "
                                          "which this server does not take from a request")
    at_operator = _check_access(fields, profile.provider, settings, owner, where)
    if at_operator and "price" in fields:
        # The server prices jobs at its own endpoints (server_priced), whatever key they use: a
        # client price of 0 would make them free, and the cost quota meaningless.
        raise _refuse(f"{where}.price", "this server sets the price of jobs at its own endpoints itself "
                                       "(PJUDGE_PRICES): leave price out, or use your own endpoint")
    return profile.model_copy(update={"base_url": fields.get("base_url", profile.base_url)}), at_operator


WEBHOOK_REFUSED_HOST = ("this server does not post webhooks to this host (it must resolve to public addresses "
                        "unless the operator sets PJUDGE_WEBHOOK_ALLOW_PRIVATE)")


def webhook_url_of(body: dict[str, Any], settings: ApiSettings, field: str = "webhook_url") -> str | None:
    """A job request's `webhook_url` (store.webhooks), under the rules of a client-chosen base_url:
    http or https, a host, no user name, query or fragment, and an address the server may call
    (PJUDGE_WEBHOOK_ALLOW_PRIVATE, else public only; cloud metadata never), resolved now and again
    at each delivery (worker/webhooks.py). None when absent or null; 422 naming `field`, with one
    fixed text for a refused host (as _refuse_host)."""
    value = body.get(field)
    if value is None:
        return None
    try:
        endpoint = parse_endpoint(value)
    except EndpointError as exc:
        raise invalid(f"{field} {exc}", [problem(field, str(exc))]) from None
    try:
        check_client_host(endpoint, settings.config.webhook_allow_private)
    except EndpointError as exc:
        log.debug("refused webhook host %s: %s", endpoint.host, exc)
        raise invalid(f"{field}: {WEBHOOK_REFUSED_HOST}", [problem(field, WEBHOOK_REFUSED_HOST)]) from None
    return str(value)
