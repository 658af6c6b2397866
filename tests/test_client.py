"""api.client against the API served on a loopback port (tests/support/api.py: LiveServer), a tiny
server that answers 429 first, and `pjudge serve` with a real worker and the simulated LLM."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from api.client import ApiCallError, AsyncClient, Client, Retry
from judge.records import PairItem
from store.db import get_engine
from tests.support.api import KEY_A, LiveServer, make_items

# service: the API served on a loopback port (one test with a worker and the simulator)
pytestmark = [pytest.mark.service]


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Engine:
    return get_engine(f"sqlite:///{tmp_path}/client.sqlite")


def abstain_every_third(position: int, item: PairItem) -> tuple[str | None, float | None, bool]:
    if position % 3 == 0:
        return None, 0.5, True
    return ("A", 0.9, False) if position % 2 else ("B", 0.2, False)


@pytest.fixture
def live(sqlite_engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(sqlite_engine, delay=0.2, config={"PJUDGE_MAX_BODY_MB": "0.05"},
                    choose=abstain_every_third) as server:
        yield server


def test_importing_the_client_loads_no_flask() -> None:
    code = ("import sys, api.client; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'werkzeug', 'sqlalchemy', 'celery', 'store', 'worker')); print(heavy); assert not heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_submit_wait_and_verdicts_are_every_page_the_server_serves(live: LiveServer) -> None:
    items = make_items(45)
    with Client(live.url, KEY_A) as client:
        job = client.submit((item for item in items), profile="persona-certainty")  # any iterable
        assert job.accepted is not None and job.accepted.status == "queued" and not job.replayed
        finished = job.wait(progress=False, poll=0.05, timeout=30)
        assert finished.status == "done" and finished.counts.verdicts == 45
        verdicts = [v.model_dump(mode="json") for v in job.verdicts(page_size=10)]
        pages: list[dict[str, Any]] = []
        cursor = None
        while True:  # the server's own pages, read without the client's models
            params = {"limit": "10", **({"cursor": cursor} if cursor else {})}
            page = client.request("GET", f"/v1/jobs/{job.id}/verdicts", params=params).json()
            pages.extend(page["verdicts"])
            if (cursor := page["next_cursor"]) is None:
                break
        assert verdicts == pages and [v["id"] for v in verdicts] == [i["id"] for i in items]

        queued = list(job.queue(page_size=2))  # every third item abstained, none labelled
        waiting = [v for v in verdicts if v["abstained"] and v["human_label"] is None]
        assert sorted(e.item.id for e in queued) == sorted(v["id"] for v in waiting) and len(queued) > 2
        dpo = list(job.export_dpo())
        decided = [v for v in verdicts if v["winner"] in ("A", "B") and not v["abstained"]]
        assert [line.id for line in dpo] == [v["id"] for v in decided]
        assert job.labels({items[0]["id"]: "A"}).labels == 1
        assert job.report().counts.items == 45
        assert client.stats(group_by="model").counts.items == 45
        assert client.estimate(items[:3]).calls == 6
        assert client.submit(items, idempotency_key="same").id == client.submit(items, idempotency_key="same").id
        with pytest.raises(ApiCallError) as cancelled:
            job.cancel()
        assert (cancelled.value.status, cancelled.value.code) == (409, "conflict")


def test_errors_carry_the_servers_code_message_and_field_details(live: LiveServer) -> None:
    items = make_items(3)
    with Client(live.url, KEY_A, retry=Retry(attempts=0)) as client:
        with pytest.raises(ApiCallError) as unknown:
            client.submit(items, profile="no-such-profile")
        error = unknown.value
        assert (error.status, error.code) == (422, "invalid_input") and "no-such-profile" in error.message
        assert error.details and error.details[0].field == "profile"
        with pytest.raises(ApiCallError) as too_large:
            client.submit(make_items(300))
        assert too_large.value.status == 413 and "PJUDGE_MAX_JOB_MB" in str(too_large.value)
    with Client(live.url, "not-the-key") as stranger, pytest.raises(ApiCallError) as denied:
        stranger.job("0" * 32).status()
    assert denied.value.status == 401 and "not-the-key" not in str(denied.value)
    with Client("http://127.0.0.1:9", KEY_A, retry=Retry(attempts=1, backoff_s=0.01)) as nowhere, \
            pytest.raises(ApiCallError) as unreachable:
        nowhere.submit(items)
    assert (unreachable.value.status, unreachable.value.code) == (0, "connection_error")
    assert live.jobs == []


class BusyOnce(BaseHTTPRequestHandler):
    """POST /v1/jobs: 429 with Retry-After: 1 the first time, then a job per Idempotency-Key."""

    posts: list[tuple[float, str | None]] = []
    jobs: dict[str, str] = {}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers.get("Idempotency-Key")
        self.posts.append((time.monotonic(), key))
        if len(self.posts) == 1:
            self._send(429, {"error": {"code": "too_many_requests", "message": "busy", "details": []}},
                       {"Retry-After": "1"})
            return
        job_id = self.jobs.setdefault(str(key), f"{len(self.jobs):032x}")
        self._send(202, {"job_id": job_id, "status": "queued"})

    def _send(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def busy_once() -> Iterator[str]:
    BusyOnce.posts, BusyOnce.jobs = [], {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), BusyOnce)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_429_is_retried_after_retry_after_with_the_same_idempotency_key(busy_once: str, flavour: str) -> None:
    items = make_items(2)
    if flavour == "sync":
        with Client(busy_once, KEY_A) as client:
            job_id = client.submit(items).id
    else:
        async def submit() -> str:
            async with AsyncClient(busy_once, KEY_A) as client:
                return (await client.submit(items)).id

        job_id = asyncio.run(submit())
    [(first, key), (second, again)] = BusyOnce.posts
    assert second - first >= 1.0  # Retry-After, not the 0.5 s backoff
    assert key is not None and key == again and len(key) == 36  # one generated uuid4, on both tries
    assert BusyOnce.jobs == {key: job_id}


def test_a_job_through_pjudge_serve_and_a_worker_with_the_async_client(tmp_path: Path, start_sim: Any,
                                                                       redis_server: Any) -> None:
    from tests.support.services import Process, Service, free_port, many_items, wait_for_port

    sim = start_sim()
    service = Service(tmp_path, f"sqlite:///{tmp_path}/service.sqlite", redis_server)
    service.env["PJUDGE_API_KEYS"] = KEY_A
    port = free_port()
    items = many_items(30)
    profile = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge",
               "base_url": sim.openai_base_url}

    async def run() -> tuple[Any, list[Any], list[Any]]:
        async with AsyncClient(f"http://127.0.0.1:{port}", KEY_A) as client:
            job = await client.submit(items, profile)
            finished = await job.wait(progress=False, poll=0.2, timeout=120)
            verdicts = [v async for v in job.verdicts(page_size=7)]
            dpo = [line async for line in job.export_dpo()]
            return finished, verdicts, dpo

    try:
        service.workers.append(Process(["serve", "--port", str(port)], service.env, tmp_path / "api.log").start())
        service.start_worker(concurrency=2)
        wait_for_port(port)
        finished, verdicts, dpo = asyncio.run(run())
    finally:
        service.stop()
    assert finished.status == "done" and finished.counts.verdicts == 30 and finished.counts.calls >= 60
    assert [v.id for v in verdicts] == [item.id for item in items]
    assert [line.id for line in dpo] == [v.id for v in verdicts if v.winner in ("A", "B") and not v.abstained]


def test_webhook_url_goes_with_every_way_of_submitting_and_its_event_log_and_secret_come_back(
        sqlite_engine: Engine) -> None:
    config = {"PJUDGE_WEBHOOK_ALLOW_PRIVATE": "true"}
    with LiveServer(sqlite_engine, delay=0.05, config=config) as server, Client(server.url, KEY_A) as client:
        one_post = client.submit(make_items(3), webhook_url="http://127.0.0.1:9/one")
        in_pages = client.submit(iter(make_items(5)), page_items=2, webhook_url="http://127.0.0.1:9/pages")
        for job, url in ((one_post, "http://127.0.0.1:9/one"), (in_pages, "http://127.0.0.1:9/pages")):
            event = job.webhook_event()
            assert event is not None and event.url == url and event.id.startswith("msg_")
            assert list(job.deliveries()) == []  # no worker here to deliver it
        assert client.submit(make_items(2)).webhook_event() is None
        secret = client.webhook_secret()
        assert secret.startswith("whsec_") and client.webhook_secret() == secret
        with pytest.raises(ApiCallError) as refused:
            client.submit(make_items(2), webhook_url="ftp://127.0.0.1/hook")
        assert refused.value.status == 422 and refused.value.details
        assert refused.value.details[0].field == "webhook_url"

        async def through_the_async_client() -> tuple[str | None, int, str]:
            async with AsyncClient(server.url, KEY_A) as aclient:
                job = await aclient.submit(make_items(2), webhook_url="http://127.0.0.1:9/async")
                event = await job.webhook_event()
                attempts = [d async for d in job.deliveries()]
                return (event.url if event else None), len(attempts), await aclient.webhook_secret()

        assert asyncio.run(through_the_async_client()) == ("http://127.0.0.1:9/async", 0, secret)
