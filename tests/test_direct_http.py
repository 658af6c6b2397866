"""The direct transport's retry rules (the SDK's: which statuses, how long to wait) and its
connection errors, against real sockets."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time

import pytest

from judge.providers.base import ProviderError
from judge.providers.direct_http import DirectJsonClient, retry_delay, server_delay, should_retry


@pytest.mark.parametrize(("status", "headers", "expected"), [
    (429, {}, True), (500, {}, True), (503, {}, True), (408, {}, True), (409, {}, True),
    (400, {}, False), (401, {}, False), (404, {}, False), (422, {}, False),
    (400, {"x-should-retry": "true"}, True), (500, {"x-should-retry": "false"}, False),
    (429, {"retry-after": "121"}, False), (429, {"retry-after-ms": "1e999"}, False),  # too long a wait
    (429, {"retry-after": "120"}, True), (503, {"retry-after": "inf"}, True),
])
def test_should_retry(status: int, headers: dict[str, str], expected: bool) -> None:
    assert should_retry(status, headers) is expected


def test_retry_delay_follows_the_server_up_to_two_minutes() -> None:
    assert retry_delay(0, {"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert retry_delay(3, {"retry-after": "2"}) == pytest.approx(2.0)
    assert retry_delay(0, {"retry-after": "120"}) == pytest.approx(120.0)
    assert retry_delay(0, {"retry-after-ms": "soon", "retry-after": "3"}) == pytest.approx(3.0)
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_delay(0, {"retry-after": later}) <= 31
    for ignored in ({"retry-after": "121"}, {"retry-after-ms": "0"}, {"retry-after": "soon"},
                    {"retry-after": "inf"}, {}):
        assert 0.375 <= retry_delay(0, ignored) <= 0.5  # 0.5 s less up to 25% jitter


def test_server_delay_reads_milliseconds_then_seconds_then_a_date() -> None:
    assert server_delay({"retry-after-ms": "1500", "retry-after": "9"}) == pytest.approx(1.5)
    assert server_delay({"retry-after": "9"}) == pytest.approx(9.0)
    assert server_delay({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) < 0  # in the past
    assert server_delay({"retry-after-ms": "1e999"}) == 121.0  # an overflow is a too-long wait
    assert server_delay({"retry-after": "garbage"}) is None and server_delay({}) is None


def test_retry_delay_backs_off_exponentially_to_eight_seconds() -> None:
    for retry, full in ((0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [retry_delay(retry, None) for _ in range(200)]
        assert all(0.75 * full <= d <= full for d in delays)
        assert max(delays) - min(delays) > 0.05 * full  # jittered


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def call() -> None:
        client = DirectJsonClient(f"http://127.0.0.1:{port}/v1?api-key=pw-in-url-123", "sk-secret-value-123",
                                  max_retries=1, timeout_s=5)
        try:
            await client.post("/chat/completions", {"model": "m"})
        finally:
            await client.aclose()

    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        asyncio.run(call())
    assert str(info.value).startswith("APIConnectionError: Connection error.")
    assert "sk-secret" not in str(info.value) and "pw-in-url" not in str(info.value)
    assert time.monotonic() - started >= 0.37  # one backoff of 0.5 s less jitter
