"""The `profile` of a job request: a name or an object of overrides, resolved with
judge.profiles.load_profile after the checks a network-facing server needs: no server files, only
provider key variables, the operator's bounds on every field that multiplies a job's requests and
tokens, and the server's own price (never the client's) for jobs on the server's provider keys."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from api.context import ApiSettings
from api.errors import ApiError, invalid, problem, pydantic_problems, summarize
from api.schemas import ProfileOverrides
from judge.profiles import (
    DEFAULT_PROFILE,
    JudgeProfile,
    Price,
    ProfileError,
    available_profiles,
    load_profile,
)
from judge.templates import TemplateError

# A bare name: no separators, no dots (so never "../x" nor "x.toml", which load_profile and
# get_template would open as files relative to the server's working directory).
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# Only a provider key may be sent to a provider; any other server variable could be a secret.
KEY_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]{0,100}_API_KEY$")


def _refuse(field: str, message: str) -> ApiError:
    return invalid(f"invalid profile: {field}: {message}", [problem(field, message)])


def _check_name(field: str, value: Any, settings: ApiSettings) -> None:
    if isinstance(value, str) and not settings.allow_server_paths and not NAME.match(value):
        raise _refuse(field, "must be a plain name (letters, digits, '-' and '_'); server file paths are not accepted")


def _load(spec: str | dict[str, Any], field: str) -> JudgeProfile:
    try:
        return load_profile(spec)
    except (ProfileError, TemplateError, ValueError, TypeError) as exc:
        # The library's hint about file paths does not apply over HTTP.
        raise _refuse(field, str(exc).replace("; or give a path to a .toml file)", ")")
                      .replace("; or give a path)", ")")) from None


# (field, setting): the profile fields that multiply what one item costs, and their bound.
BOUNDED = (("samples", "api_max_samples"), ("max_reasks", "api_max_reasks"), ("max_retries", "api_max_retries"),
           ("max_tokens", "api_max_tokens"), ("timeout_s", "api_max_timeout_s"))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.12g}"


def check_bounds(profile: JudgeProfile, settings: ApiSettings) -> None:
    """422 naming every field above the operator's bound (the resolved profile's, whether the
    client set the field or its base profile did: what is checked is what would run)."""
    problems = []
    for name, setting in BOUNDED:
        value, limit = getattr(profile, name), getattr(settings.config, setting)
        if value > limit:
            problems.append(problem(f"profile.{name}", f"at most {_number(limit)} on this server, got "
                                                       f"{_number(value)} (PJUDGE_{setting.upper()})"))
    if problems:
        raise invalid(summarize(problems, "invalid profile"), problems)


def server_priced(profile: JudgeProfile, settings: ApiSettings) -> JudgeProfile:
    """The profile at the server's price for its model (PJUDGE_PRICES): a job on the server's
    provider keys costs what the operator says. Replay makes no provider call: it costs nothing."""
    if profile.provider == "replay":
        return profile.model_copy(update={"price": Price()})
    price = settings.prices.price_for(profile.model)
    if price is None:
        raise _refuse("profile.model", f"this server has no price for model '{profile.model[:100]}' "
                                       "(the operator sets prices in PJUDGE_PRICES)")
    return profile.model_copy(update={"price": price})


def resolve_profile(spec: Any, settings: ApiSettings) -> JudgeProfile:
    profile = _resolve(spec, settings)
    check_bounds(profile, settings)
    return server_priced(profile, settings)


def _resolve(spec: Any, settings: ApiSettings) -> JudgeProfile:
    if spec is None:
        spec = DEFAULT_PROFILE
    if isinstance(spec, str):
        _check_name("profile", spec, settings)
        return _load(spec, "profile")
    if not isinstance(spec, dict):
        raise _refuse("profile", "must be a profile name or an object of profile fields")
    try:
        # Strict: JSON types as documented (no `false` for an integer, no "3" for a number).
        fields = ProfileOverrides.model_validate(spec, strict=True).model_dump(exclude_unset=True)
    except ValidationError as exc:
        problems = pydantic_problems(exc, "profile")
        raise invalid(summarize(problems, "invalid profile"), problems) from None
    for key in ("profile", "name", "template"):
        _check_name(f"profile.{key}", fields.get(key), settings)
    if "price" in fields:
        # The server prices jobs on its own provider keys (server_priced): a client price of 0
        # would make them free, and the cost quota meaningless.
        raise _refuse("profile.price", "this server sets the price of jobs on its provider keys itself "
                                       "(PJUDGE_PRICES): leave price out")
    base = fields.get("profile")
    if base is not None and base not in available_profiles() and not settings.allow_server_paths:
        raise _refuse("profile.profile", f"unknown profile '{base}' (available: {', '.join(available_profiles())})")
    if fields.get("replay_path") is not None and not settings.allow_server_paths:
        raise _refuse("profile.replay_path", "server file paths are not accepted by this server")
    key_env = fields.get("api_key_env")
    if key_env is not None and not KEY_VARIABLE.match(key_env):
        raise _refuse("profile.api_key_env", "must name a variable ending in _API_KEY")
    base_url = fields.get("base_url")
    if base_url is not None and settings.allowed_base_urls and not base_url.startswith(settings.allowed_base_urls):
        raise _refuse("profile.base_url", "this server accepts only its configured provider base URLs")
    return _load(fields, "profile")
