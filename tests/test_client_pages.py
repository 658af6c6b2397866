"""Jobs larger than one request through api.client: a generator of items goes to a staged job a
page at a time (never held whole), resubmitting with the same key resumes the same job, and
verdicts stream from /verdicts.jsonl; then the same through `pjudge serve`, real workers, Redis and
the simulated LLM, on SQLite and PostgreSQL, early start included."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import request

from api.client import AsyncClient, Client
from store.db import get_engine
from tests.support.api import KEY_A, LiveServer, make_items

# service: the API served on a loopback port; the last tests start workers, Redis and the simulator
pytestmark = [pytest.mark.service]


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(get_engine(f"sqlite:///{tmp_path}/pages.sqlite"), delay=0.1) as server:
        yield server


class Counted:
    """A generator of items that tells how many it has handed out."""

    def __init__(self, items: list[dict[str, Any]]):
        self.items, self.taken = items, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for item in self.items:
            self.taken += 1
            yield item


def test_a_generator_goes_in_pages_never_read_ahead_and_a_resubmission_resumes_the_same_job(
        live: LiveServer) -> None:
    items = make_items(230)
    source = Counted(items)
    seen: list[tuple[str, int]] = []

    @live.app.before_request
    def _record() -> None:
        seen.append((request.path, source.taken))

    with Client(live.url, KEY_A) as client:
        job = client.submit(iter(source), page_items=50, idempotency_key="big-one",
                            labels={items[7]["id"]: "tie"})
        assert job.accepted is not None and not job.replayed
        pages = [taken for path, taken in seen if path.endswith("/items")]
        # each page is sent once read (the first with one item more, read to tell it is not the last)
        assert pages == [51, 100, 150, 200, 230]
        finished = job.wait(progress=False, poll=0.05, timeout=60)
        assert finished.status == "done" and finished.counts.items == 230
        streamed = [v.model_dump(mode="json") for v in job.verdicts(stream=True)]
        assert streamed == [v.model_dump(mode="json") for v in job.verdicts(page_size=40)]
        assert [v["id"] for v in streamed] == [item["id"] for item in items]
        assert streamed[7]["human_label"] == "tie"
        again = client.submit(iter(items), page_items=50, idempotency_key="big-one",
                              labels={items[7]["id"]: "tie"})
        assert again.id == job.id and again.replayed and again.accepted is not None
        assert again.accepted.status == "done"
        client.submit(items[:20], page_items=50)  # a page's worth: one POST /v1/jobs as before
    assert [path for path, _ in seen].count("/v1/jobs") == 3
    assert len(live.jobs) == 2


def test_the_async_client_pages_a_large_iterable_too(live: LiveServer) -> None:
    items = make_items(120)

    async def run() -> tuple[Any, list[str]]:
        async with AsyncClient(live.url, KEY_A) as client:
            job = await client.submit((item for item in items), page_items=40)
            finished = await job.wait(progress=False, poll=0.05, timeout=60)
            return finished, [v.id async for v in job.verdicts(stream=True)]

    finished, ids = asyncio.run(run())
    assert finished.status == "done" and ids == [item["id"] for item in items]



@pytest.mark.parametrize("start_early", [False, True], ids=["start", "early"])
def test_staged_jobs_through_pjudge_serve_and_real_workers(tmp_path: Path, start_sim: Any, redis_server: Any,
                                                           database_url: str, start_early: bool) -> None:
    from tests.support.services import Process, Service, free_port, many_items, wait_for_port

    sim = start_sim()
    service = Service(tmp_path, database_url, redis_server)
    service.env.update({"PJUDGE_API_KEYS": KEY_A, "PJUDGE_BATCH_SIZE": "16"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    items = [item.model_dump(mode="json", exclude_none=True) for item in many_items(150)]
    profile = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge",
               "base_url": sim.openai_base_url}
    try:
        service.workers.append(Process(["serve", "--port", str(port)], service.env, tmp_path / "api.log").start())
        service.start_worker(concurrency=2)
        wait_for_port(port)
        with Client(url, KEY_A) as client:
            job = client.submit(iter(items[:100]), profile, page_items=30, start_early=start_early)
            finished = job.wait(progress=False, poll=0.2, timeout=180)
            streamed = list(job.verdicts(stream=True))
            # one NDJSON upload of a whole job, and a bad line that stores nothing
            created = client.request("POST", "/v1/jobs", {"profile": profile, "staged": True}).json()
            upload = "".join(json.dumps(item) + "\n" for item in items[100:])
            bad = client._http.post(f"/v1/jobs/{created['job_id']}/items", content=upload + "{}\n",
                                    headers={"Content-Type": "application/x-ndjson"})
            good = client._http.post(f"/v1/jobs/{created['job_id']}/items", content=upload,
                                     headers={"Content-Type": "application/x-ndjson"})
            client.request("POST", f"/v1/jobs/{created['job_id']}/start")
            uploaded = client.job(created["job_id"]).wait(progress=False, poll=0.2, timeout=180)
    finally:
        service.stop()
    assert finished.status == "done" and finished.counts.verdicts == 100
    assert [v.id for v in streamed] == [item["id"] for item in items[:100]]
    assert all(v.winner is not None for v in streamed)
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"].startswith("line 51")
    assert good.status_code == 200 and good.json()["added"] == 50
    assert uploaded.status == "done" and uploaded.counts.verdicts == 50
