"""A lean JSON-over-HTTP client for OpenAI-compatible servers (profile `transport = "direct"`).

The official SDK spends about 0.7 ms of CPU per call building and unwrapping its request objects
(URL parsing, header merging, an httpx request wrapped around aiohttp): at hundreds of calls per
second that is most of a worker's one core. This client posts the same JSON on one aiohttp session
and keeps the SDK's retry rules, so a job behaves the same on either transport:

- retried: connection errors, timeouts, HTTP 408, 409, 429 and 5xx (an `x-should-retry: true`
  or `false` header overrides), up to `max_retries` times; never when the server asks for a wait
  longer than 2 minutes;
- the wait: the server's `retry-after-ms`, else `Retry-After` (seconds, else an HTTP date) when
  it is above 0 and at most 2 minutes, else 0.5 s x 2^retry capped at 8 s, less up to 25% jitter;
- each attempt carries its retry number in `x-stainless-retry-count`, as the SDK's do;
- errors become a ProviderError named like the SDK's exception, with the status and the server's
  message (or the SDK's fixed text for connection errors and timeouts), never the key; from a
  client-chosen endpoint, a fixed text instead of the server's message (judge/endpoints.py);
- an answer body is read up to PJUDGE_PROVIDER_MAX_ANSWER_MB (after decompression) and no further:
  a larger one fails the call at once, without a retry.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from judge.endpoints import Access
from judge.providers import guard
from judge.providers.base import ProviderError, error_detail, fixed_text, redact
from judge.providers.base import max_answer_bytes as max_answer_bytes_setting
from judge.providers.retries import count_retry

INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_SERVER_DELAY_S = 120.0  # the SDK's MAX_RETRY_AFTER_DELAY
# The SDKs' exception names, so that stored errors read the same on either transport.
STATUS_ERRORS = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
                 404: "NotFoundError", 409: "ConflictError", 422: "UnprocessableEntityError",
                 429: "RateLimitError"}


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    server = server_delay(headers)
    if server is not None and math.isfinite(server) and server > MAX_SERVER_DELAY_S:
        return False
    forced = headers.get("x-should-retry")
    if forced in ("true", "false"):
        return forced == "true"
    return status in (408, 409, 429) or status >= 500


def retry_delay(retry: int, headers: Mapping[str, str] | None) -> float:
    """Seconds to wait before retry number `retry + 1`."""
    server = server_delay(headers) if headers is not None else None
    if server is not None and math.isfinite(server) and 0 < server <= MAX_SERVER_DELAY_S:
        return server
    return min(INITIAL_RETRY_DELAY_S * 2.0 ** min(retry, 1000), MAX_RETRY_DELAY_S) * (1 - 0.25 * random.random())


def server_delay(headers: Mapping[str, str]) -> float | None:
    """The wait the server asks for, in seconds: `retry-after-ms`, else `Retry-After` as seconds,
    else as an HTTP date; an overflowing number counts as too long a wait."""
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            delay = float(value)
        except ValueError:
            continue
        if delay == math.inf and value.strip().lower() not in ("inf", "+inf", "infinity", "+infinity"):
            return MAX_SERVER_DELAY_S + 1
        return delay / divisor
    try:
        when = email.utils.parsedate_tz(headers.get("retry-after"))
        if when is None:
            return None
        return float(email.utils.mktime_tz(when) - time.time())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _error_message(status: int, body: bytes, secret: str, echo: bool = True) -> str:
    kind = STATUS_ERRORS.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    if not echo:
        return f"{kind} (HTTP {status}): {fixed_text(status)}"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        detail = body[:300].decode("utf-8", "replace")
    else:
        error = parsed.get("error") if isinstance(parsed, dict) else None
        detail = error if isinstance(error, str) else error_detail(parsed)
    return redact(f"{kind} (HTTP {status}): {detail[:300]}", secret)


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The response's body, decoded, if it is at most `limit` bytes; else a ProviderError before
    more than about `limit` bytes are held (a server answering 50 MB gets nothing stored)."""
    length = response.content_length
    if length is not None and length > limit:
        raise ProviderError(f"the provider's answer is larger than {limit} bytes ({length} declared)")
    if length is not None and not response.headers.get("Content-Encoding"):
        return await response.read()  # the common case: a declared, uncompressed, small body
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise ProviderError(f"the provider's answer is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class DirectJsonClient:
    """POST a JSON body to base_url + path and return the decoded JSON answer."""

    def __init__(self, base_url: str, api_key: str, max_retries: int, timeout_s: float,
                 max_answer_bytes: int | None = None, access: Access | None = None,
                 provider: str = "openai-compatible"):
        self._base_url = base_url.rstrip("/")
        # Without an Access: the caller's own endpoint (benchmarks), no address checks.
        self._access = access if access is not None else Access(endpoint=None, api_key=api_key)
        self._echo = self._access.operator
        self._api_key = api_key  # also struck from any error text a server echoes it in
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "Authorization": f"Bearer {api_key}"}
        self._max_retries = max_retries
        self._provider = provider  # the label of its retries in judge.metrics
        self._max_answer_bytes = max_answer_bytes if max_answer_bytes is not None else max_answer_bytes_setting()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=guard.connector(self._access, limit=0, ttl_dns_cache=300), timeout=self._timeout)
        return self._session

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        session = self._open()
        url = self._base_url + path
        try:
            data = orjson.dumps(body)
        except TypeError as exc:  # orjson.JSONEncodeError
            raise ProviderError(f"the request cannot be encoded as JSON: {exc}") from None
        retry = 0
        while True:
            attempt_headers = {**self._headers, **(headers or {}), "x-stainless-retry-count": str(retry)}
            try:
                async with session.post(url, data=data, headers=attempt_headers) as response:
                    payload = await read_limited(response, self._max_answer_bytes)
                    if response.status < 300:
                        try:
                            return orjson.loads(payload)
                        except orjson.JSONDecodeError:
                            if not self._echo:
                                raise ProviderError("the provider's answer is not JSON") from None
                            text = payload[:200].decode("utf-8", "replace")
                            raise ProviderError(f"the provider's answer is not JSON: {redact(text, self._api_key)}"
                                                ) from None
                    if retry >= self._max_retries or not should_retry(response.status, response.headers):
                        raise ProviderError(_error_message(response.status, payload, self._api_key, self._echo))
                    delay = retry_delay(retry, response.headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if retry >= self._max_retries or guard.refused(exc):
                    # The SDK's fixed texts: an aiohttp message can hold the URL, credentials and all.
                    if isinstance(exc, TimeoutError):
                        raise ProviderError("APITimeoutError: Request timed out.") from None
                    raise ProviderError(f"APIConnectionError: Connection error. ({type(exc).__name__})") from None
                delay = retry_delay(retry, None)
            except ValueError as exc:  # a request aiohttp refuses to make (e.g. credentials in the URL): no retry
                raise ProviderError(f"APIConnectionError: the request could not be made ({type(exc).__name__})"
                                    ) from None
            count_retry(self._provider)
            await asyncio.sleep(delay)
            retry += 1

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
