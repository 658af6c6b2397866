"""The provider interface and registry."""

from __future__ import annotations

import hashlib
import importlib
import itertools
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import anthropic
    import openai

    from judge.endpoints import Access
    from judge.profiles import JudgeProfile


class SdkResponse(Protocol):
    """What a response hook reads of an SDK's (httpx) response."""

    @property
    def headers(self) -> Mapping[str, str]: ...


# An SDK http client's event hook for responses (httpx `event_hooks={"response": [...]}`).
ResponseHook = Callable[[SdkResponse], Awaitable[None]]


@dataclass(frozen=True)
class CallRequest:
    item_id: str
    order: str
    sample: int
    attempt: int
    messages: list[dict[str, str]]
    model: str
    temperature: float
    max_tokens: int
    extra: dict[str, str] = field(default_factory=dict)
    # Prompt caching (profile `prompt_caching`): the length in characters of the first user
    # message's shared prefix (judge.templates.Template.render_with_prefix); None: not marked.
    cache_prefix: int | None = None

    def shared_prefix(self) -> tuple[str, str] | None:
        """(system text, the first user message's prefix) when caching is asked for, else None."""
        if self.cache_prefix is None:
            return None
        system = "\n\n".join(m["content"] for m in self.messages if m["role"] == "system")
        user = next((m["content"] for m in self.messages if m["role"] == "user"), "")
        return system, user[:self.cache_prefix]

    def prompt_cache_key(self) -> str | None:
        """OpenAI's `prompt_cache_key`: a hash of the model and the shared prefix (the template's text
        and the persona), the same for both orders and every item of a persona; no text of it."""
        prefix = self.shared_prefix()
        if prefix is None:
            return None
        blob = "\x1e".join((self.model, *prefix)).encode("utf-8")
        return "pjudge-" + hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True)
class CallResult:
    """One answer. `input_tokens` counts every input token, those the provider read from its
    prompt cache (`cached_input_tokens`) or wrote to it (`cache_write_tokens`, Anthropic) included;
    None where the provider did not say."""

    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    # Set when `text` is only the first characters of the answer (judge.runner caps it): the
    # answer's full length in characters.
    truncated_from: int | None = None


class ProviderError(Exception):
    """A call that failed after the provider's own retries; the message is safe to store."""


class Provider(Protocol):
    name: str

    async def complete(self, request: CallRequest) -> CallResult: ...

    async def aclose(self) -> None: ...


# A factory gets the profile and the Access the policy decided (judge/endpoints.py): the endpoint
# and key it may use. Providers never read keys or base URLs from the environment themselves.
Factory = Callable[["JudgeProfile", "Access"], Provider]
_REGISTRY: dict[str, Factory] = {}
# Built-ins are imported on first use: each SDK takes a second or more to import.
_BUILTIN_MODULES = {
    "openai": "judge.providers.openai_provider",
    "openai-compatible": "judge.providers.openai_provider",
    "anthropic": "judge.providers.anthropic_provider",
    "replay": "judge.providers.replay",
    "mock": "judge.providers.mock",  # tests' in-process provider (not a profile choice)
}


def register(name: str) -> Callable[[Factory], Factory]:
    def wrap(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def create_provider(profile: JudgeProfile, access: Access | None = None) -> Provider:
    """The profile's provider; without `access`, the CLI's (judge.endpoints.local_access)."""
    from judge.endpoints import AccessError, local_access

    if access is None:
        try:
            access = local_access(profile)
        except AccessError as exc:
            raise ProviderError(str(exc)) from None
    if profile.provider not in _REGISTRY and profile.provider in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[profile.provider])  # registers it
    try:
        factory = _REGISTRY[profile.provider]
    except KeyError:
        raise ProviderError(f"unknown provider '{profile.provider}' (known: {', '.join(sorted(_REGISTRY))})") from None
    return factory(profile, access)


_KEY_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-*]{4,}|sk-ant-[A-Za-z0-9_\-*]{4,}|Bearer\s+\S+)")


def redact(message: str, *secrets: str | None) -> str:
    """Remove anything that looks like a key, the values of key variables in the environment, and
    the given secrets (a provider's own key, whatever variable it came from)."""
    for secret in secrets:
        if secret and len(secret) >= 8:
            message = message.replace(secret, "***")
    for name, value in os.environ.items():
        if value and len(value) >= 8 and ("KEY" in name or "TOKEN" in name or "SECRET" in name):
            message = message.replace(value, "***")
    return _KEY_PATTERNS.sub("***", message)


def error_detail(body: object) -> str:
    """The message (else the type) of a provider's JSON error body, `{"error": {...}}` or bare."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(inner, dict):
        return str(inner.get("message") or inner.get("type") or "")
    return ""


# What a client-chosen endpoint's error reads as: its body is never shown (it could be anything
# the endpoint can read, e.g. an internal service's answer).
FIXED_TEXTS = {400: "bad request", 401: "authentication failed", 403: "permission denied", 404: "not found",
               408: "request timeout", 409: "conflict", 413: "request too large", 422: "unprocessable request",
               429: "rate limited"}


def fixed_text(status: int) -> str:
    return FIXED_TEXTS.get(status, "server error" if status >= 500 else "request failed")


def describe_sdk_error(exc: BaseException, *secrets: str | None, echo: bool = True) -> str:
    """A short, key-free description of an SDK exception: its class name, HTTP status and, from an
    operator's endpoint (`echo`), the server's message; else a fixed text."""
    status = getattr(exc, "status_code", None)
    kind = type(exc).__name__
    prefix = f"{kind} (HTTP {status})" if status else kind
    if not echo:
        if isinstance(status, int):
            return f"{prefix}: {fixed_text(status)}"
        # The SDKs' connection and timeout errors have fixed texts of their own; nothing else is shown.
        text = str(exc).split("\n")[0] if kind in ("APIConnectionError", "APITimeoutError") else ""
        return redact(f"{prefix}: {text[:60]}", *secrets) if text else prefix
    detail = error_detail(getattr(exc, "body", None)) or str(exc).split("\n")[0]
    return redact(f"{prefix}: {detail[:300]}", *secrets)


def response_shape_error(kind: str, response: object, echo: bool = True) -> ProviderError:
    if not echo:
        return ProviderError(f"the provider's answer is not a {kind}")
    return ProviderError(f"the provider's answer is not a {kind}: {redact(str(response))[:200]}")


def max_answer_bytes() -> int:
    """PJUDGE_PROVIDER_MAX_ANSWER_MB in bytes: the largest answer body a provider client reads."""
    from judge.settings import settings

    return int(settings().provider_max_answer_mb * 1024 * 1024)


def declared_size_hook(limit: int, too_large: type[Exception]) -> ResponseHook:
    """An SDK http client's response hook that refuses, before its body is read, an answer whose
    declared Content-Length is over `limit` bytes. `too_large`: a subclass of the SDK's own base
    error, which the SDKs pass through unretried (post_through_sdk turns it into a ProviderError).
    An answer without a declared length is read whole by the SDK; the runner still keeps only
    PJUDGE_RAW_MAX_CHARS of its text."""

    async def hook(response: SdkResponse) -> None:
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise too_large(f"the provider's answer is larger than {limit} bytes ({int(declared)} declared)")

    return hook


def idempotency_keys() -> Iterator[str]:
    """Keys for the SDKs' `idempotency_key` option, one per request. Without one the SDK draws a
    uuid4 (a urandom system call) for every POST; a process-unique prefix and a counter cost nothing."""
    prefix = f"pjudge-{uuid.uuid4().hex}-"
    return (f"{prefix}{n}" for n in itertools.count())


async def post_through_sdk(client: openai.AsyncOpenAI | anthropic.AsyncAnthropic, path: str, body: dict[str, Any], extra_headers: dict[str, str],
                           idempotency_key: str, sdk_error: type[BaseException], api_key: str | None,
                           echo: bool = True) -> Any:
    """POST through an official SDK's low-level client (its retries, Retry-After handling, auth
    and errors) and return the decoded JSON; an SDK error becomes a key-free ProviderError."""
    try:
        if extra_headers:
            return await client.post(path, body=body, cast_to=object,
                                     options={"idempotency_key": idempotency_key, "headers": extra_headers})
        return await client.post(path, body=body, cast_to=object, options={"idempotency_key": idempotency_key})
    except sdk_error as exc:
        raise ProviderError(describe_sdk_error(exc, api_key, echo=echo)) from None
    except ValueError:  # a 2xx answer that is not JSON: the SDK lets json's error through
        raise ProviderError("the provider's answer is not JSON") from None
