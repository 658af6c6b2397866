"""api.client's decisions, written once as steps, carried out alike by Client and AsyncClient: a
scripted httpx2.MockTransport answers each try (no server, no port), so what is tried again, with
which Idempotency-Key, and where a stream cut short stops, is checked for both in milliseconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from api.client import ApiCallError, AsyncClient, Client, Retry

QUICK = Retry(attempts=3, backoff_s=0.001)
Answer = Callable[[httpx2.Request, bool], httpx2.Response]


def run(flavour: str, answers: list[Answer], call: Callable[[Any], Any]) -> tuple[Any, list[httpx2.Request]]:
    """`call(client)` through a client whose tries are answered by `answers` in turn; its value (awaited
    for the async client) and the requests sent."""
    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return answers[len(sent) - 1](request, flavour == "async")

    if flavour == "sync":
        with Client("http://pjudge.test", "key", retry=QUICK, transport=httpx2.MockTransport(answer)) as api:
            return call(api), sent

    async def through_async() -> Any:
        async def handle(request: httpx2.Request) -> httpx2.Response:
            return answer(request)

        async with AsyncClient("http://pjudge.test", "key", retry=QUICK,
                               transport=httpx2.MockTransport(handle)) as client:
            return await call(client)

    return asyncio.run(through_async()), sent


def status(code: int, document: Any, headers: dict[str, str] | None = None) -> Answer:
    return lambda request, _: httpx2.Response(code, json=document, headers=headers)


def lost(request: httpx2.Request, _: bool) -> httpx2.Response:
    raise httpx2.ConnectError("refused", request=request)


def body(*pieces: bytes, then_cut: bool) -> Answer:
    """A 200 whose body arrives in `pieces`, then (with `then_cut`) the connection drops."""
    def sync_body() -> Iterator[bytes]:
        yield from pieces
        if then_cut:
            raise httpx2.ReadError("cut")

    async def async_body() -> AsyncIterator[bytes]:
        for piece in sync_body():
            yield piece

    return lambda request, is_async: httpx2.Response(200, content=async_body() if is_async else sync_body())


FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])


@FLAVOURS
def test_a_lost_connection_and_a_503_are_tried_again_with_one_idempotency_key(flavour: str) -> None:
    accepted = {"job_id": "0" * 32, "status": "queued"}
    answers = [lost, status(503, {"error": {"code": "unavailable", "message": "busy", "details": []}},
                            {"Retry-After": "0"}), status(202, accepted)]
    item = {"id": "a", "prompt": "p", "response_a": "x", "response_b": "y"}
    job, sent = run(flavour, answers, lambda client: client.submit([item]))
    assert job.id == "0" * 32 and not job.replayed
    keys = {request.headers["Idempotency-Key"] for request in sent}
    assert len(sent) == 3 and len(keys) == 1 and len(keys.pop()) == 36


@FLAVOURS
def test_a_refusal_is_not_tried_again_and_carries_the_servers_fields(flavour: str) -> None:
    details = [{"field": "profile", "message": "no such profile"}]
    refusal = {"error": {"code": "invalid_input", "message": "no", "details": details}}
    with pytest.raises(ApiCallError) as refused:
        run(flavour, [status(422, refusal)], lambda client: client.job("j").status())
    error = refused.value
    assert (error.status, error.code, error.details[0].field) == (422, "invalid_input", "profile")


@FLAVOURS
def test_pages_follow_the_cursor_to_the_last(flavour: str) -> None:
    pages = [status(200, {"event": None, "deliveries": [], "next_cursor": "c1"}),
             status(200, {"event": None, "deliveries": [], "next_cursor": None})]

    def every(client: Any) -> Any:
        if isinstance(client, Client):
            return list(client.job("j").deliveries(page_size=5))

        async def collect() -> list[Any]:
            return [delivery async for delivery in client.job("j").deliveries(page_size=5)]
        return collect()

    deliveries, sent = run(flavour, pages, every)
    assert deliveries == []
    assert [dict(request.url.params) for request in sent] == [{"limit": "5"}, {"limit": "5", "cursor": "c1"}]


@FLAVOURS
def test_a_stream_is_tried_again_until_its_first_piece_and_a_later_cut_leaves_no_file(flavour: str,
                                                                                      tmp_path: Path) -> None:
    def save(client: Any) -> Any:
        return client.job("j").save_dpo(tmp_path / "dpo.jsonl")

    row = json.dumps({"id": "a"}).encode() + b"\n"
    saved, sent = run(flavour, [lost, body(then_cut=True), body(row, row, then_cut=False)], save)
    assert saved == tmp_path / "dpo.jsonl" and saved.read_bytes() == row + row and len(sent) == 3
    saved.unlink()
    with pytest.raises(ApiCallError) as cut:
        run(flavour, [body(row, then_cut=True), body(row, then_cut=False)], save)
    assert (cut.value.status, cut.value.code) == (0, "connection_error")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
