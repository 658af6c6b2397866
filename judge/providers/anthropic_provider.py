"""Anthropic's messages API through the official SDK (its client, retries, Retry-After handling
and errors, on its aiohttp transport; see openai_provider for why the low-level call)."""

from __future__ import annotations

from typing import Any

import anthropic

from judge.endpoints import NO_KEY, Access
from judge.profiles import JudgeProfile
from judge.providers import guard
from judge.providers.base import (
    CallRequest,
    CallResult,
    ProviderError,
    ResponseHook,
    declared_size_hook,
    idempotency_keys,
    max_answer_bytes,
    post_through_sdk,
    register,
    response_shape_error,
)
from judge.providers.retries import retry_count_hook


class AnswerTooLarge(anthropic.AnthropicError):
    """An answer body over PJUDGE_PROVIDER_MAX_ANSWER_MB, refused before it is read."""


def _size_hooks() -> dict[str, list[ResponseHook]]:
    return {"response": [declared_size_hook(max_answer_bytes(), AnswerTooLarge)],
            "request": [retry_count_hook("anthropic")]}



EPHEMERAL = {"type": "ephemeral"}


def _mark_cache_prefix(body: dict[str, Any], prefix_chars: int) -> None:
    """Put the cache breakpoint (`cache_control`, 5-minute ephemeral) at the end of the shared
    prefix: on a text block holding the first user message's first `prefix_chars` characters (the
    message becomes two blocks, the same text), else on the system prompt. Everything before the
    breakpoint (system prompt, rubric, persona) is what the cache holds."""
    messages: list[dict[str, Any]] = body["messages"]
    first = next((i for i, m in enumerate(messages) if m["role"] == "user" and isinstance(m["content"], str)), None)
    # A whitespace-only text block is refused by the API: such a prefix is the system prompt's.
    if first is not None and messages[first]["content"][:prefix_chars].strip() \
            and prefix_chars < len(messages[first]["content"]):
        content = messages[first]["content"]
        blocks = [{"type": "text", "text": content[:prefix_chars], "cache_control": EPHEMERAL},
                  {"type": "text", "text": content[prefix_chars:]}]
        body["messages"] = [*messages[:first], {**messages[first], "content": blocks}, *messages[first + 1:]]
    elif body.get("system"):
        body["system"] = [{"type": "text", "text": body["system"], "cache_control": EPHEMERAL}]


def _result(text: str, usage: dict[str, Any]) -> CallResult:
    """Anthropic's `input_tokens` leaves out what was read from or written to the cache; the
    result's counts them all (as OpenAI's `prompt_tokens` does), with the two parts beside."""
    read, written = usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens")
    read = read if isinstance(read, int) else None
    written = written if isinstance(written, int) else None
    fresh = usage.get("input_tokens")
    total = fresh + (read or 0) + (written or 0) if isinstance(fresh, int) else None
    return CallResult(text=text, input_tokens=total, output_tokens=usage.get("output_tokens"),
                      cached_input_tokens=read, cache_write_tokens=written)


def messages_body(request: CallRequest) -> dict[str, Any]:
    """The messages request body (interactive, or one request's params in a message batch)."""
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [m for m in request.messages if m["role"] != "system"],
        # Anthropic's current messages API takes no sampling temperature.
        "max_tokens": request.max_tokens,
    }
    if system:
        body["system"] = system
    if request.cache_prefix is not None:
        _mark_cache_prefix(body, request.cache_prefix)
    return body


def message_result(response: Any, echo: bool) -> CallResult:
    """A message's text and usage."""
    try:
        text = "".join(block.get("text", "") for block in response["content"] if block.get("type") == "text")
        usage = response.get("usage") or {}
    except (TypeError, KeyError, AttributeError):
        raise response_shape_error("message", response, echo) from None
    return _result(text, usage)


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, profile: JudgeProfile, access: Access):
        if access.api_key is None and access.key_variable:
            raise ProviderError(f"provider 'anthropic' needs a key: set {access.key_variable} "
                                "(or api_key_env in the profile)")
        # Explicit key and base URL: without them the SDK reads its own environment variables.
        self._api_key = access.api_key or NO_KEY
        self._echo = access.operator  # a client-chosen endpoint's error bodies are never shown
        self._idempotency_keys = idempotency_keys()
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key, base_url=access.base_url, max_retries=profile.max_retries,
            timeout=profile.timeout_s, http_client=guard.sdk_http_client(anthropic, access, _size_hooks()),
        )

    async def complete(self, request: CallRequest) -> CallResult:
        body = messages_body(request)
        response = await post_through_sdk(self._client, "/v1/messages", body, request.extra,
                                          next(self._idempotency_keys), anthropic.AnthropicError, self._api_key,
                                          echo=self._echo)
        return message_result(response, self._echo)

    async def aclose(self) -> None:
        await self._client.close()


@register("anthropic")
def _anthropic(profile: JudgeProfile, access: Access) -> AnthropicProvider:
    return AnthropicProvider(profile, access)
