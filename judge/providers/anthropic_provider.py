"""Anthropic's messages API through the official SDK."""

from __future__ import annotations

import os

import anthropic

from judge.profiles import JudgeProfile
from judge.providers.base import CallRequest, CallResult, ProviderError, describe_sdk_error, register


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, profile: JudgeProfile):
        api_key = os.environ.get(profile.api_key_env) if profile.api_key_env else None
        if not (api_key or os.environ.get("ANTHROPIC_API_KEY")):
            raise ProviderError("provider 'anthropic' needs a key: set ANTHROPIC_API_KEY (or api_key_env in the profile)")
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=profile.base_url, max_retries=profile.max_retries, timeout=profile.timeout_s
        )

    async def complete(self, request: CallRequest) -> CallResult:
        system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
        messages = [m for m in request.messages if m["role"] != "system"]
        try:
            response = await self._client.messages.create(
                model=request.model,
                messages=messages,  # type: ignore[arg-type]
                system=system or anthropic.omit,
                max_tokens=request.max_tokens,
                # Anthropic's current messages API takes no sampling temperature.
                extra_headers=request.extra or None,
            )
        except anthropic.AnthropicError as exc:
            raise ProviderError(describe_sdk_error(exc)) from None
        text = "".join(block.text for block in response.content if getattr(block, "type", None) == "text")
        return CallResult(
            text=text, input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens
        )

    async def aclose(self) -> None:
        await self._client.close()


@register("anthropic")
def _anthropic(profile: JudgeProfile) -> AnthropicProvider:
    return AnthropicProvider(profile)
