"""OpenAI and any OpenAI-compatible server (vLLM, llama.cpp server, Ollama) through the official SDK."""

from __future__ import annotations

import os
from typing import Any

import openai

from judge.profiles import JudgeProfile
from judge.providers.base import CallRequest, CallResult, ProviderError, describe_sdk_error, register


class OpenAIProvider:
    def __init__(self, profile: JudgeProfile, compatible: bool):
        self.name = "openai-compatible" if compatible else "openai"
        api_key = os.environ.get(profile.api_key_env) if profile.api_key_env else None
        base_url = profile.base_url
        if compatible:
            base_url = base_url or os.environ.get("PJUDGE_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
            if not base_url:
                raise ProviderError(
                    "provider 'openai-compatible' needs a base URL: set base_url in the profile, "
                    "--base-url, or PJUDGE_BASE_URL / OPENAI_BASE_URL"
                )
            # Local servers often need no key, but the SDK insists on one.
            api_key = api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        elif not (api_key or os.environ.get("OPENAI_API_KEY")):
            raise ProviderError("provider 'openai' needs a key: set OPENAI_API_KEY (or api_key_env in the profile)")
        self._compatible = compatible
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=profile.max_retries, timeout=profile.timeout_s
        )

    async def complete(self, request: CallRequest) -> CallResult:
        params: dict[str, Any] = {"model": request.model, "messages": request.messages,
                                  "temperature": request.temperature}
        # OpenAI's own API has renamed the limit; compatible servers know the old name.
        params["max_tokens" if self._compatible else "max_completion_tokens"] = request.max_tokens
        try:
            response = await self._client.chat.completions.create(**params, extra_headers=request.extra or None)
        except openai.OpenAIError as exc:
            raise ProviderError(describe_sdk_error(exc)) from None
        if not response.choices:
            raise ProviderError("the response has no choices")
        text = response.choices[0].message.content or ""
        usage = response.usage
        return CallResult(
            text=text,
            input_tokens=usage.prompt_tokens if usage else None,
            output_tokens=usage.completion_tokens if usage else None,
        )

    async def aclose(self) -> None:
        await self._client.close()


@register("openai")
def _openai(profile: JudgeProfile) -> OpenAIProvider:
    return OpenAIProvider(profile, compatible=False)


@register("openai-compatible")
def _compatible(profile: JudgeProfile) -> OpenAIProvider:
    return OpenAIProvider(profile, compatible=True)
