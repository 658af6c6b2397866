"""`pjudge llm-sim`: a local server speaking the OpenAI chat-completions and Anthropic messages
wire protocols well enough for the official SDKs to work unmodified (usage fields, error bodies,
Retry-After), answering as the simulated judge of `llm_sim.judge_model`.

For tests, demos and load. It counts what it served at `GET /stats`, reports prompt-cache hits
the way each provider does (llm_sim.prompt_cache), and with `record_requests` keeps the last
requests it was sent for `GET /requests` (bodies and headers, keys left out).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from llm_sim.judge_model import SimSettings, answer, request_rng, should_fail
from llm_sim.prompt_cache import PromptCaches

MODELS = ("sim-judge", "sim-judge-large")


@dataclass(frozen=True)
class ServerSettings(SimSettings):
    latency_ms: float = 0.0
    retry_after_ms: float = 100.0
    # Prompt caching: OpenAI's automatic minimum, Anthropic's minimum cacheable prefix (1,024 for
    # most Claude models, 2,048 or 4,096 for some), the entries' lifetime since last use.
    cache_min_tokens: int = 1024
    anthropic_cache_min_tokens: int = 1024
    cache_ttl_s: float = 300.0
    record_requests: int = 0  # the last N requests kept for GET /requests (0: none)
    batch_delay_s: float = 2.0  # a batch ends this long after it was created (llm_sim.batches)
    batch_fail_rate: float = 0.0  # share of a batch's requests that end in an error
    batch_expire_rate: float = 0.0  # share of a batch's requests that expire unanswered


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.started = time.time()

    def snapshot(self) -> dict[str, Any]:
        counts = dict(self.counts)
        return {
            "requests": counts.get("requests", 0),
            "completions": counts.get("completions", 0),
            "failures_injected": counts.get("failures_injected", 0),
            "malformed": counts.get("malformed", 0),
            "input_tokens": counts.get("input_tokens", 0),
            "cached_input_tokens": counts.get("cached_input_tokens", 0),
            "cache_write_tokens": counts.get("cache_write_tokens", 0),
            "by_endpoint": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("endpoint:")},
            "by_status": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("status:")},
            "uptime_s": round(time.time() - self.started, 3),
        }


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: one text cut in parts (a cache breakpoint between)
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _prompt_text(system: str, messages: list[dict[str, Any]]) -> str:
    parts = [system] if system else []
    parts += [f"{m.get('role', '')}: {_content_text(m.get('content'))}" for m in messages]
    return "\n\n".join(parts)


def _anthropic_prompt(system: object, messages: list[dict[str, Any]]) -> tuple[str, str | None]:
    """The prompt text (as `_prompt_text` makes it) and its part up to the end of the last block
    that carries `cache_control` (None without one): the prefix Anthropic would cache."""
    parts: list[str] = []
    marked: int | None = None

    def add(label: str, content: object) -> None:
        nonlocal marked
        start = sum(len(p) + 2 for p in parts) + len(label)
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        texts = [str(b.get("text", "")) for b in blocks]
        for i, block in enumerate(blocks):
            if isinstance(block.get("cache_control"), dict):
                marked = start + len("".join(texts[:i + 1]))
        parts.append(label + _content_text(content))

    if _content_text(system):
        add("", system)
    for m in messages:
        add(f"{m.get('role', '')}: ", m.get("content"))
    prompt = "\n\n".join(parts)
    return prompt, (prompt[:marked] if marked is not None else None)


class SimApp:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.stats = Stats()
        self.caches = PromptCaches(settings.cache_min_tokens, settings.anthropic_cache_min_tokens,
                                   settings.cache_ttl_s)
        self.recorded: deque[dict[str, Any]] = deque(maxlen=max(1, settings.record_requests))

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.openai_chat)
        app.router.add_post("/chat/completions", self.openai_chat)
        app.router.add_post("/v1/messages", self.anthropic_messages)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/models", self.models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_get("/requests", self.get_requests)
        app.router.add_post("/stats/reset", self.reset_stats)
        app.router.add_get("/healthz", self.healthz)
        from llm_sim.batches import BatchEndpoints

        BatchEndpoints(self).add_routes(app)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "settings": asdict(self.settings)})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats.snapshot())

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats = Stats()
        self.recorded.clear()
        return web.json_response({"ok": True})

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.recorded))

    def _record(self, request: web.Request, endpoint: str, body: dict[str, Any]) -> None:
        if self.settings.record_requests > 0:
            secret = ("authorization", "x-api-key")
            headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in secret}
            self.recorded.append({"endpoint": endpoint, "path": request.path, "headers": headers, "body": body})

    def _count_tokens(self, input_tokens: int, cached: int, written: int) -> None:
        self.stats.counts["input_tokens"] += input_tokens
        self.stats.counts["cached_input_tokens"] += cached
        self.stats.counts["cache_write_tokens"] += written

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "persona-judge"} for m in MODELS]}
        )

    async def _read(self, request: web.Request, endpoint: str) -> dict[str, Any] | web.Response:
        self.stats.counts["requests"] += 1
        self.stats.counts[f"endpoint:{endpoint}"] += 1
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
        except (ValueError, json.JSONDecodeError):
            return self._error(endpoint, 400, "invalid_request_error", "the body is not a JSON object")
        if not body.get("model"):
            return self._error(endpoint, 400, "invalid_request_error", "'model' is required")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(endpoint, 400, "invalid_request_error", "'messages' must be a non-empty list")
        self._record(request, endpoint, body)
        if self.settings.latency_ms > 0:
            await asyncio.sleep(self.settings.latency_ms / 1000.0)
        return body

    def _error(self, endpoint: str, status: int, kind: str, message: str) -> web.Response:
        self.stats.counts[f"status:{status}"] += 1
        headers = {}
        if status in (429, 500, 503):
            headers["retry-after-ms"] = str(int(self.settings.retry_after_ms))
            headers["Retry-After"] = str(max(1, math.ceil(self.settings.retry_after_ms / 1000)))
        if endpoint == "anthropic":
            anthropic_kind = {429: "rate_limit_error", 500: "api_error", 400: "invalid_request_error"}.get(status, kind)
            body: dict[str, Any] = {"type": "error", "error": {"type": anthropic_kind, "message": message}}
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        return web.json_response(body, status=status, headers=headers)

    def _judge(self, endpoint: str, request: web.Request, model: str, prompt: str) -> tuple[str, web.Response | None]:
        sample = request.headers.get("x-pjudge-sample", "0")
        key = f"{model}\x1e{sample}\x1e{prompt}"
        if should_fail(self.settings, key, request.headers.get("x-stainless-retry-count", "0")):
            self.stats.counts["failures_injected"] += 1
            rate_limited = request_rng(self.settings.seed, "kind", key).random() < 0.5
            if rate_limited:
                return "", self._error(endpoint, 429, "rate_limit_error", "simulated rate limit")
            return "", self._error(endpoint, 500, "server_error", "simulated server error")
        self.stats.counts["status:200"] += 1
        return self._answer_text(model, prompt, sample), None

    async def openai_chat(self, request: web.Request) -> web.Response:
        body = await self._read(request, "openai")
        if isinstance(body, web.Response):
            return body
        text, failure = self._judge("openai", request, body["model"], _openai_prompt(body))
        if failure is not None:
            return failure
        prompt = _openai_prompt(body)
        cached = self.caches.automatic(body["model"], prompt)
        self._count_tokens(_tokens(prompt), cached, 0)
        return web.json_response(_openai_completion(body, prompt, text, cached))

    def openai_answer(self, body: dict[str, Any], sample: str) -> dict[str, Any] | str:
        """A batch request's answer (llm_sim.batches): the interactive one, or an error message."""
        if not body.get("model") or not isinstance(body.get("messages"), list) or not body["messages"]:
            return "'model' and 'messages' are required"
        prompt = _openai_prompt(body)
        return _openai_completion(body, prompt, self._answer_text(body["model"], prompt, sample))

    def anthropic_answer(self, body: dict[str, Any], sample: str) -> dict[str, Any] | str:
        if not body.get("model") or not isinstance(body.get("messages"), list) or not body["messages"]:
            return "'model' and 'messages' are required"
        if not isinstance(body.get("max_tokens"), int):
            return "'max_tokens' is required"
        prompt, _ = _anthropic_prompt(body.get("system", ""), body["messages"])
        # Batches are answered without the prompt cache (no cache fields in their usage).
        return _anthropic_message(body, prompt, self._answer_text(body["model"], prompt, sample))

    def _answer_text(self, model: str, prompt: str, sample: str) -> str:
        result = answer(prompt, self.settings, f"{model}\x1e{sample}\x1e{prompt}")
        if result.malformed:
            self.stats.counts["malformed"] += 1
        self.stats.counts["completions"] += 1
        return result.text

    async def anthropic_messages(self, request: web.Request) -> web.Response:
        body = await self._read(request, "anthropic")
        if isinstance(body, web.Response):
            return body
        if not isinstance(body.get("max_tokens"), int):
            return self._error("anthropic", 400, "invalid_request_error", "'max_tokens' is required")
        prompt, prefix = _anthropic_prompt(body.get("system", ""), body["messages"])
        text, failure = self._judge("anthropic", request, body["model"], prompt)
        if failure is not None:
            return failure
        read, written = self.caches.explicit(body["model"], prefix)
        self._count_tokens(_tokens(prompt), read, written)
        return web.json_response(_anthropic_message(body, prompt, text, read, written))


def _openai_prompt(body: dict[str, Any]) -> str:
    messages = body["messages"]
    system = "\n".join(_content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
    rest = [m for m in messages if m.get("role") not in ("system", "developer")]
    return _prompt_text(system, rest)


def _openai_completion(body: dict[str, Any], prompt: str, text: str, cached: int = 0) -> dict[str, Any]:
    prompt_tokens, completion_tokens = _tokens(prompt), _tokens(text)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens,
                  "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0}},
        "system_fingerprint": "sim",
    }


def _anthropic_message(body: dict[str, Any], prompt: str, text: str, read: int | None = None,
                       written: int | None = None) -> dict[str, Any]:
    """A message; `read`/`written`: its prompt-cache tokens (None: the request had no cache fields)."""
    total = _tokens(prompt)
    usage: dict[str, Any] = {"input_tokens": total, "output_tokens": _tokens(text)}
    if read is not None or written is not None:
        # Anthropic's input_tokens leaves out the tokens read from or written to the cache.
        usage = {"input_tokens": total - (read or 0) - (written or 0), "output_tokens": _tokens(text),
                 "cache_creation_input_tokens": written or 0, "cache_read_input_tokens": read or 0}
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


async def _serve(settings: ServerSettings, host: str, port: int, started: threading.Event | None,
                 bound: list[int], stop: asyncio.Event | None = None) -> None:
    runner = web.AppRunner(SimApp(settings).build(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server  # noqa: SLF001
    sockets = server.sockets if isinstance(server, asyncio.Server) else ()
    bound.append(sockets[0].getsockname()[1] if sockets else port)
    if started is not None:
        started.set()
    try:
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
    finally:
        await runner.cleanup()


def serve_forever(settings: ServerSettings, host: str = "127.0.0.1", port: int = 8765,
                  on_bound: Callable[[int], object] | None = None) -> None:
    """Run in the foreground; `on_bound(port)` is called once the socket listens."""

    async def main() -> None:
        bound: list[int] = []
        event = threading.Event()
        task = asyncio.ensure_future(_serve(settings, host, port, event, bound))
        while not event.is_set() and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        if on_bound is not None:
            on_bound(bound[0])
        await task

    asyncio.run(main())


class SimServerThread:
    """The simulator on a background thread, for in-process use (demo, quick scripts)."""

    def __init__(self, settings: ServerSettings | None = None, host: str = "127.0.0.1", port: int = 0):
        self.settings = settings or ServerSettings()
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimServerThread:
        started = threading.Event()
        bound: list[int] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._stop = asyncio.Event()
            self._loop.run_until_complete(_serve(self.settings, self.host, self.port, started, bound, self._stop))

        self._thread = threading.Thread(target=run, name="llm-sim", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("llm-sim did not start")
        self.port = bound[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> SimServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
