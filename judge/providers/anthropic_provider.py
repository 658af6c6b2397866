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


class AnswerTooLarge(anthropic.AnthropicError):
    """An answer body over PJUDGE_PROVIDER_MAX_ANSWER_MB, refused before it is read."""


def _size_hooks() -> dict[str, list[ResponseHook]]:
    return {"response": [declared_size_hook(max_answer_bytes(), AnswerTooLarge)]}



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
    return body


def message_result(response: Any, echo: bool) -> CallResult:
    """A message's text and usage."""
    try:
        text = "".join(block.get("text", "") for block in response["content"] if block.get("type") == "text")
        usage = response.get("usage") or {}
    except (TypeError, KeyError, AttributeError):
        raise response_shape_error("message", response, echo) from None
    return CallResult(text=text, input_tokens=usage.get("input_tokens"), output_tokens=usage.get("output_tokens"))


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
