"""Counting the providers' HTTP retries (judge.metrics) without importing prometheus_client into
every process that judges: the CLI never pays its import (about 0.1 s); a process imports it at
its first retry, and worker processes have it already."""

from __future__ import annotations

from judge.providers.base import ResponseHook, SdkResponse


def count_retry(provider: str) -> None:
    from judge.metrics import observe_http_retry

    observe_http_retry(provider)


def retry_count_hook(provider: str) -> ResponseHook:
    """An SDK http client's request hook (`event_hooks={"request": [...]}`) counting the SDK's own
    retries: each retry carries its number in `x-stainless-retry-count`."""

    async def hook(request: SdkResponse) -> None:  # a request: what the hook reads is its headers
        if request.headers.get("x-stainless-retry-count", "0") not in ("0", ""):
            count_retry(provider)

    return hook
