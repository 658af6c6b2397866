"""Judge providers, registered by name: openai, anthropic, openai-compatible, replay."""

from judge.providers.base import CallRequest, CallResult, Provider, ProviderError, create_provider, register

__all__ = ["CallRequest", "CallResult", "Provider", "ProviderError", "create_provider", "register"]
