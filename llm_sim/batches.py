"""The simulator's batch endpoints: OpenAI's files and batches (`/v1/files`, `/v1/batches`) and
Anthropic's message batches (`/v1/messages/batches`), enough for the official SDKs' batch methods.

Each request of a batch is answered exactly as the interactive endpoint would answer it (same
text, same usage; the sample index, which the interactive endpoint reads from the
`x-pjudge-sample` header, is read from the request's custom_id `-s<N>-` field). A batch ends
`batch_delay_s` after it was created (the 24 h window, shortened); `batch_fail_rate` of its
requests end in an error and `batch_expire_rate` of them expire unanswered, drawn per batch and
request so that a resubmission can succeed. Prices are the caller's business: usage is the same
as interactively, and the price table applies the batch discount.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from llm_sim.judge_model import request_rng

_SAMPLE = re.compile(r"-s(\d+)-")


def sample_of(custom_id: str) -> str:
    match = _SAMPLE.search(custom_id)
    return match.group(1) if match else "0"


class _Settings(Protocol):
    @property
    def seed(self) -> int: ...
    @property
    def batch_delay_s(self) -> float: ...
    @property
    def batch_fail_rate(self) -> float: ...
    @property
    def batch_expire_rate(self) -> float: ...


class _Stats(Protocol):
    counts: Counter[str]


class SimApp(Protocol):
    """What the batch endpoints use of llm_sim.server.SimApp (which builds them: no import back)."""

    @property
    def settings(self) -> _Settings: ...
    @property
    def stats(self) -> _Stats: ...

    def openai_answer(self, body: dict[str, Any], sample: str) -> dict[str, Any] | str: ...

    def anthropic_answer(self, body: dict[str, Any], sample: str) -> dict[str, Any] | str: ...


@dataclass
class SimBatch:
    id: str
    kind: str  # "openai" or "anthropic"
    requests: list[dict[str, Any]]
    created: float
    input_file_id: str | None = None
    metadata: dict[str, Any] | None = None
    cancelled: float | None = None
    results: list[dict[str, Any]] | None = None  # set once it ended
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)


class BatchEndpoints:
    def __init__(self, sim: SimApp):
        self.sim = sim
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, SimBatch] = {}

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/files", self.upload)
            app.router.add_get(f"{prefix}/files/{{file_id}}/content", self.file_content)
            app.router.add_post(f"{prefix}/batches", self.openai_create)
            app.router.add_get(f"{prefix}/batches", self.openai_list)
            app.router.add_get(f"{prefix}/batches/{{batch_id}}", self.openai_retrieve)
            app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", self.openai_cancel)
        app.router.add_post("/v1/messages/batches", self.anthropic_create)
        app.router.add_get("/v1/messages/batches/{batch_id}", self.anthropic_retrieve)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self.anthropic_cancel)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self.anthropic_results)

    # -------------------------------------------------------------- shared

    def _count(self, what: str) -> None:
        self.sim.stats.counts["requests"] += 1
        self.sim.stats.counts[f"endpoint:{what}"] += 1

    def _ended(self, batch: SimBatch) -> bool:
        """Ends the batch once its delay has passed (or at cancel): every request answered."""
        if batch.results is not None:
            return True
        if batch.cancelled is None and time.time() - batch.created < self.sim.settings.batch_delay_s:
            return False
        batch.results = [self._answer(batch, request) for request in batch.requests]
        return True

    def _answer(self, batch: SimBatch, request: dict[str, Any]) -> dict[str, Any]:
        """{custom_id, outcome: succeeded|errored|expired|canceled, body?}"""
        custom_id = str(request.get("custom_id", ""))
        if batch.cancelled is not None:
            return {"custom_id": custom_id, "outcome": "canceled"}
        settings = self.sim.settings
        draw = request_rng(settings.seed, "batch", batch.id, custom_id).random()
        if draw < settings.batch_expire_rate:
            return {"custom_id": custom_id, "outcome": "expired"}
        if draw < settings.batch_expire_rate + settings.batch_fail_rate:
            self.sim.stats.counts["failures_injected"] += 1
            return {"custom_id": custom_id, "outcome": "errored", "message": "simulated server error"}
        body = request.get("body") if batch.kind == "openai" else request.get("params")
        if not isinstance(body, dict):
            return {"custom_id": custom_id, "outcome": "errored", "message": "the request has no body"}
        sample = sample_of(custom_id)
        answer = (self.sim.openai_answer(body, sample) if batch.kind == "openai"
                  else self.sim.anthropic_answer(body, sample))
        if isinstance(answer, str):
            return {"custom_id": custom_id, "outcome": "errored", "message": answer}
        return {"custom_id": custom_id, "outcome": "succeeded", "body": answer}

    def _get(self, request: web.Request) -> SimBatch | None:
        return self.batches.get(request.match_info["batch_id"])

    @staticmethod
    def _not_found(kind: str) -> web.Response:
        if kind == "anthropic":
            return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "no such batch"}},
                                     status=404)
        return web.json_response({"error": {"message": "not found", "type": "invalid_request_error", "param": None,
                                            "code": None}}, status=404)

    # -------------------------------------------------------------- OpenAI

    async def upload(self, request: web.Request) -> web.Response:
        self._count("files")
        form = await request.post()
        upload = form.get("file")
        content = upload.file.read() if isinstance(upload, web.FileField) else str(upload or "").encode()
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = content
        filename = upload.filename if isinstance(upload, web.FileField) else "input.jsonl"
        return web.json_response({"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                                  "filename": filename, "purpose": str(form.get("purpose", "batch")),
                                  "status": "processed"})

    async def file_content(self, request: web.Request) -> web.Response:
        self._count("files")
        content = self.files.get(request.match_info["file_id"])
        if content is None:
            return self._not_found("openai")
        return web.Response(body=content, content_type="application/octet-stream")

    async def openai_create(self, request: web.Request) -> web.Response:
        self._count("batches")
        body = await request.json()
        content = self.files.get(str(body.get("input_file_id")))
        if content is None:
            return web.json_response({"error": {"message": "no such input file", "type": "invalid_request_error",
                                                "param": "input_file_id", "code": None}}, status=400)
        lines = [json.loads(line) for line in content.decode().splitlines() if line.strip()]
        batch = SimBatch(id=f"batch_{uuid.uuid4().hex[:24]}", kind="openai", requests=lines, created=time.time(),
                         input_file_id=body["input_file_id"], metadata=body.get("metadata"))
        self.batches[batch.id] = batch
        return web.json_response(self._openai_object(batch))

    async def openai_list(self, request: web.Request) -> web.Response:
        self._count("batches")
        data = [self._openai_object(b) for b in self.batches.values() if b.kind == "openai"]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def openai_retrieve(self, request: web.Request) -> web.Response:
        self._count("batches")
        batch = self._get(request)
        if batch is None or batch.kind != "openai":
            return self._not_found("openai")
        return web.json_response(self._openai_object(batch))

    async def openai_cancel(self, request: web.Request) -> web.Response:
        self._count("batches")
        batch = self._get(request)
        if batch is None or batch.kind != "openai":
            return self._not_found("openai")
        if batch.results is None:
            batch.cancelled = time.time()
        return web.json_response(self._openai_object(batch))

    def _openai_object(self, batch: SimBatch) -> dict[str, Any]:
        ended = self._ended(batch)
        status = "in_progress"
        if ended and batch.results is not None:
            if batch.output_file_id is None and batch.error_file_id is None:
                self._openai_files(batch)
            outcomes = [r["outcome"] for r in batch.results]
            status = "cancelled" if batch.cancelled else "expired" if "expired" in outcomes else "completed"
        done = batch.results or []
        return {
            "id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
            "input_file_id": batch.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
            "created_at": int(batch.created), "in_progress_at": int(batch.created),
            "expires_at": int(batch.created) + 86400, "completed_at": int(time.time()) if status == "completed" else None,
            "cancelled_at": int(batch.cancelled) if batch.cancelled else None,
            "request_counts": {"total": len(batch.requests),
                               "completed": sum(r["outcome"] == "succeeded" for r in done),
                               "failed": sum(r["outcome"] == "errored" for r in done)},
            "metadata": batch.metadata,
        }

    def _openai_files(self, batch: SimBatch) -> None:
        assert batch.results is not None
        output, errors = [], []
        for result in batch.results:
            line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": result["custom_id"]}
            if result["outcome"] == "succeeded":
                output.append({**line, "response": {"status_code": 200, "request_id": uuid.uuid4().hex,
                                                    "body": result["body"]}, "error": None})
            elif result["outcome"] == "errored":
                errors.append({**line, "response": {"status_code": 500, "request_id": uuid.uuid4().hex,
                                                    "body": {"error": {"message": result["message"],
                                                                       "type": "server_error"}}}, "error": None})
            else:
                code = "batch_expired" if result["outcome"] == "expired" else "batch_cancelled"
                errors.append({**line, "response": None,
                               "error": {"code": code, "message": f"the request was not run ({result['outcome']})"}})
        if output:
            batch.output_file_id = f"file-{uuid.uuid4().hex[:24]}"
            self.files[batch.output_file_id] = "".join(json.dumps(x) + "\n" for x in output).encode()
        if errors:
            batch.error_file_id = f"file-{uuid.uuid4().hex[:24]}"
            self.files[batch.error_file_id] = "".join(json.dumps(x) + "\n" for x in errors).encode()

    # -------------------------------------------------------------- Anthropic

    async def anthropic_create(self, request: web.Request) -> web.Response:
        self._count("message_batches")
        body = await request.json()
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": "'requests' must be a non-empty list"}},
                                     status=400)
        batch = SimBatch(id=f"msgbatch_{uuid.uuid4().hex[:24]}", kind="anthropic", requests=requests,
                         created=time.time())
        self.batches[batch.id] = batch
        return web.json_response(self._anthropic_object(batch, request))

    async def anthropic_retrieve(self, request: web.Request) -> web.Response:
        self._count("message_batches")
        batch = self._get(request)
        if batch is None or batch.kind != "anthropic":
            return self._not_found("anthropic")
        return web.json_response(self._anthropic_object(batch, request))

    async def anthropic_cancel(self, request: web.Request) -> web.Response:
        self._count("message_batches")
        batch = self._get(request)
        if batch is None or batch.kind != "anthropic":
            return self._not_found("anthropic")
        if batch.results is None:
            batch.cancelled = time.time()
        return web.json_response(self._anthropic_object(batch, request))

    async def anthropic_results(self, request: web.Request) -> web.Response:
        self._count("message_batches")
        batch = self._get(request)
        if batch is None or batch.kind != "anthropic" or not self._ended(batch) or batch.results is None:
            return self._not_found("anthropic")
        lines = []
        for result in batch.results:
            outcome = result["outcome"]
            if outcome == "succeeded":
                inner: dict[str, Any] = {"type": "succeeded", "message": result["body"]}
            elif outcome == "errored":
                inner = {"type": "errored", "error": {"type": "error", "error": {"type": "api_error",
                                                                                  "message": result["message"]}}}
            else:
                inner = {"type": outcome}
            lines.append(json.dumps({"custom_id": result["custom_id"], "result": inner}) + "\n")
        return web.Response(body="".join(lines).encode(), content_type="application/binary")

    def _anthropic_object(self, batch: SimBatch, request: web.Request) -> dict[str, Any]:
        ended = self._ended(batch)
        done = batch.results or []
        outcomes = [r["outcome"] for r in done]
        base = f"{request.scheme}://{request.host}"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.created))
        return {
            "id": batch.id, "type": "message_batch",
            "processing_status": "ended" if ended else ("canceling" if batch.cancelled else "in_progress"),
            "request_counts": {"processing": 0 if ended else len(batch.requests),
                               "succeeded": outcomes.count("succeeded"), "errored": outcomes.count("errored"),
                               "canceled": outcomes.count("canceled"), "expired": outcomes.count("expired")},
            "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ") if ended else None,
            "created_at": created,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.created + 86400)),
            "archived_at": None,
            "cancel_initiated_at": (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(batch.cancelled))
                                    if batch.cancelled else None),
            "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if ended else None,
        }
