"""OpenAI and any OpenAI-compatible server (vLLM, llama.cpp server, Ollama) through the official SDK.

Calls go through the SDK's client (`client.post`): its retries with exponential backoff and
jitter, its Retry-After handling, auth headers and error types, on the SDK's own aiohttp
transport. They skip the SDK's per-call request transformation and response models, which cost
about a millisecond of CPU per call: a judge service spends its CPU on its own work instead.
With `transport = "direct"` an OpenAI-compatible profile posts the same JSON through
judge.providers.direct_http (the SDK's retry rules without its request objects).
"""

from __future__ import annotations

from typing import Any

import openai

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
from judge.providers.direct_http import DirectJsonClient
from judge.providers.retries import retry_count_hook


class AnswerTooLarge(openai.OpenAIError):
    """An answer body over PJUDGE_PROVIDER_MAX_ANSWER_MB, refused before it is read."""


def _size_hooks(provider: str) -> dict[str, list[ResponseHook]]:
    return {"response": [declared_size_hook(max_answer_bytes(), AnswerTooLarge)],
            "request": [retry_count_hook(provider)]}



def _cached_tokens(usage: dict[str, Any]) -> int | None:
    """usage.prompt_tokens_details.cached_tokens: the part of prompt_tokens read from the cache."""
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) else None


def chat_body(request: CallRequest, compatible: bool) -> dict[str, Any]:
    """The chat-completions request body (interactive, or one line of a batch file)."""
    body: dict[str, Any] = {"model": request.model, "messages": request.messages, "temperature": request.temperature}
    # OpenAI's own API has renamed the limit; compatible servers know the old name.
    body["max_tokens" if compatible else "max_completion_tokens"] = request.max_tokens
    # Prompt caching is automatic (prompts of 1,024 tokens or more, by prefix); the key routes the
    # requests that share the rubric and persona to the same cache.
    cache_key = request.prompt_cache_key()
    if cache_key is not None:
        body["prompt_cache_key"] = cache_key
    return body


def chat_result(response: Any, echo: bool) -> CallResult:
    """A chat completion's text and usage."""
    try:
        text = response["choices"][0]["message"].get("content") or ""
        usage = response.get("usage") or {}
    except (TypeError, KeyError, IndexError, AttributeError):
        raise response_shape_error("chat completion", response, echo) from None
    return CallResult(text=text, input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"),
                      cached_input_tokens=_cached_tokens(usage))


class OpenAIProvider:
    def __init__(self, profile: JudgeProfile, access: Access, compatible: bool):
        self.name = "openai-compatible" if compatible else "openai"
        if access.base_url is None:
            raise ProviderError(f"provider '{self.name}' needs a base URL")
        if access.api_key is None and access.key_variable and not compatible:
            raise ProviderError(f"provider 'openai' needs a key: set {access.key_variable} "
                                "(or api_key_env in the profile)")
        # Local servers often need no key, but the SDK insists on one (and would read the
        # environment's without an explicit value).
        api_key = access.api_key or NO_KEY
        self._compatible = compatible
        self._api_key = api_key
        self._echo = access.operator  # a client-chosen endpoint's error bodies are never shown
        self._direct: DirectJsonClient | None = None
        if profile.transport == "direct":
            self._direct = DirectJsonClient(access.base_url, api_key, max_retries=profile.max_retries,
                                            timeout_s=profile.timeout_s, access=access, provider=self.name)
            return
        self._idempotency_keys = idempotency_keys()
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=access.base_url, max_retries=profile.max_retries, timeout=profile.timeout_s,
            http_client=guard.sdk_http_client(openai, access, _size_hooks(self.name)),
        )

    async def complete(self, request: CallRequest) -> CallResult:
        body = chat_body(request, self._compatible)
        if self._direct is not None:
            response = await self._direct.post("/chat/completions", body, request.extra)
        else:
            response = await post_through_sdk(self._client, "/chat/completions", body, request.extra,
                                              next(self._idempotency_keys), openai.OpenAIError, self._api_key,
                                              echo=self._echo)
        return chat_result(response, self._echo)

    async def aclose(self) -> None:
        if self._direct is not None:
            await self._direct.aclose()
        else:
            await self._client.close()


@register("openai")
def _openai(profile: JudgeProfile, access: Access) -> OpenAIProvider:
    return OpenAIProvider(profile, access, compatible=False)


@register("openai-compatible")
def _compatible(profile: JudgeProfile, access: Access) -> OpenAIProvider:
    return OpenAIProvider(profile, access, compatible=True)
