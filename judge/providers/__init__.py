"""Judge providers, registered by name: openai, anthropic, openai-compatible, replay;
mock (judge/providers/mock.py) for in-process tests."""

from judge.providers.base import CallRequest, CallResult, Provider, ProviderError, create_provider, register

__all__ = ["CallRequest", "CallResult", "Provider", "ProviderError", "create_provider", "register"]
