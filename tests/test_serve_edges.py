"""`pjudge serve` at its edges, over real sockets: oversized declared bodies refused at once in the
API's error shape (waitress and werkzeug), idle connections that cannot starve /healthz."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.api import KEY_A
from tests.support.cli import REPO

pytestmark = pytest.mark.service  # every test serves the API in `pjudge serve` processes

MB = 1024 * 1024


class Served:
    def __init__(self, proc: subprocess.Popen[str], port: int):
        self.proc, self.port = proc, port

    def connect(self, timeout: float = 10.0, source: str | None = None) -> socket.socket:
        """A connection from 127.0.0.1, or from another loopback address (`source`, e.g. 127.0.0.2:
        another client as far as per-address limits go)."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout,
                                        source_address=(source, 0) if source else None)

    def exchange(self, head: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """Send a request head (and nothing more) and read the answer until the server closes or
        the declared length is in."""
        with self.connect(timeout) as sock:
            sock.sendall(head)
            return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[subprocess.Popen[str]] = []

    def start(server: str, **env: str) -> Served:
        full = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/serve.sqlite", "PJUDGE_API_KEYS": KEY_A,
                "REDIS_URL": "redis://127.0.0.1:9/0", "PJUDGE_HOME": str(tmp_path / "home"), **env}
        proc = subprocess.Popen([sys.executable, "-m", "pjudge", "serve", "--port", "0", "--server", server],
                                cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        return Served(proc, int(line.split("http://127.0.0.1:")[1].split()[0]))

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post_head(length: int) -> bytes:
    return (f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY_A}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


@pytest.mark.parametrize("server", ["waitress", "werkzeug"])
def test_a_declared_oversized_body_is_refused_at_once_with_the_json_413(serve: Callable[..., Served],
                                                                        server: str) -> None:
    served = serve(server)
    for length in (60 * MB, 2048 * MB):  # under waitress's old 1 GB spool limit, and over it
        started = time.perf_counter()
        status, headers, body = served.exchange(post_head(length), timeout=10)  # no body is ever sent
        elapsed = time.perf_counter() - started
        assert status == 413 and elapsed < 5, (length, status, elapsed)
        assert headers["content-type"].startswith("application/json")
        error = json.loads(body)["error"]
        assert error["code"] == "body_too_large" and isinstance(error["details"], list), error
    # A body within the limit still reaches the app.
    status, _, _ = served.exchange(post_head(2) + b"{}")
    assert status == 422


def healthz(served: Served, timeout: float, source: str | None = None) -> int:
    with served.connect(timeout, source) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return read_answer(sock)[0]


def test_110_idle_connections_do_not_stop_healthz_answering(serve: Callable[..., Served]) -> None:
    served = serve("waitress", PJUDGE_SERVE_CHANNEL_TIMEOUT="3", PJUDGE_SERVE_CLEANUP_INTERVAL="1")
    idle = [served.connect() for _ in range(130)]  # unauthenticated, never sending a byte
    try:
        time.sleep(0.5)  # all accepted
        started = time.perf_counter()
        # From another address: this one has more than PJUDGE_SERVE_CONNECTIONS_PER_ADDRESS open.
        assert healthz(served, timeout=5, source="127.0.0.2") == 200
        assert time.perf_counter() - started < 5
        # ... and idle connections are closed after the channel timeout, freeing their slots.
        idle[0].settimeout(15)
        assert idle[0].recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_idle_connections_beyond_the_limit_wait_only_until_the_channel_timeout(serve: Callable[..., Served]) -> None:
    served = serve("waitress", PJUDGE_SERVE_CONNECTION_LIMIT="20", PJUDGE_SERVE_CHANNEL_TIMEOUT="2",
                   PJUDGE_SERVE_CLEANUP_INTERVAL="1")
    idle = [served.connect() for _ in range(25)]
    try:
        started = time.perf_counter()
        assert healthz(served, timeout=15) == 200
        assert time.perf_counter() - started < 10
    finally:
        for sock in idle:
            sock.close()


# ---------------------------------------------------------------- issue 12 review: F7 slowloris, F8 spooling

def _trickle(socks: list[socket.socket], rounds: int, every: float) -> None:
    """One more header byte on every open socket each `every` seconds, `rounds` times."""
    for _ in range(rounds):
        time.sleep(every)
        for sock in socks:
            try:
                sock.send(b"a")
            except OSError:
                pass


def _closed(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset


def test_a_request_trickling_its_headers_is_closed_at_the_header_deadline(serve: Callable[..., Served]) -> None:
    served = serve("waitress", PJUDGE_SERVE_HEADER_TIMEOUT="2", PJUDGE_SERVE_CLEANUP_INTERVAL="1")
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        started = time.perf_counter()
        _trickle([sock], rounds=8, every=0.5)  # a byte every 0.5 s: never idle for the channel timeout
        assert _closed(sock, 5), "the connection is still open 6 s after its first header byte"
        assert time.perf_counter() - started < 9


def test_slow_header_connections_of_one_address_cannot_take_every_slot(serve: Callable[..., Served]) -> None:
    # A scaled-down 1,005 x slowloris: 150 trickling connections against a limit of 100 held /healthz
    # until they stopped; now one address keeps at most 50 and the rest are closed at once.
    served = serve("waitress", PJUDGE_SERVE_CONNECTION_LIMIT="100", PJUDGE_SERVE_CLEANUP_INTERVAL="1")
    socks: list[socket.socket] = []
    try:
        for _ in range(150):
            sock = served.connect(timeout=5)
            socks.append(sock)
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
            except OSError:
                pass
        _trickle(socks, rounds=2, every=0.5)
        closed = sum(_closed(sock, 0.05) for sock in socks)
        assert closed >= 100, closed  # all but the address's 50
        started = time.perf_counter()
        assert healthz(served, timeout=5, source="127.0.0.2") == 200
        assert time.perf_counter() - started < 3
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("authorization", [None, "Basic dXNlcjpwdw==", "Bearer ", "Bearer " + "k" * 600])
def test_a_body_without_a_plausible_key_is_refused_at_header_time_unread(serve: Callable[..., Served],
                                                                          authorization: str | None) -> None:
    served = serve("waitress")
    head = "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += f"Authorization: {authorization}\r\n" if authorization is not None else ""
    head += f"Content-Length: {49 * MB}\r\n\r\n"
    started = time.perf_counter()
    status, headers, body = served.exchange(head.encode(), timeout=10)  # the 49 MB are never sent
    assert status == 401 and time.perf_counter() - started < 5
    assert headers["content-type"].startswith("application/json")
    assert headers["www-authenticate"] == 'Bearer realm="pjudge"'
    error = json.loads(body)["error"]
    assert error["code"] == "unauthorized" and isinstance(error["details"], list)
    # A plausible key's body is read and judged by the app (here: an unknown key, 401 from the app).
    status, _, body = served.exchange(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope-key\r\n"
                                      b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    assert status == 401 and "invalid or revoked key" in json.loads(body)["error"]["message"]
    status, _, _ = served.exchange(post_head(2) + b"{}")
    assert status == 422


def test_an_upload_over_the_body_limit_with_a_key_the_api_refuses_is_a_401_unread(
        serve: Callable[..., Served]) -> None:
    served = serve("waitress", PJUDGE_MAX_BODY_MB="1", PJUDGE_MAX_UPLOAD_MB="100")

    def upload_head(key: str, length: int) -> bytes:
        return (f"POST /v1/jobs/00000000-0000-0000-0000-000000000000/items HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {key}\r\nContent-Type: application/x-ndjson\r\n"
                f"Content-Length: {length}\r\n\r\n").encode()

    started = time.perf_counter()
    status, headers, body = served.exchange(upload_head("nope-key-0123", 90 * MB), timeout=10)  # never sent
    assert status == 401 and time.perf_counter() - started < 5
    assert headers["www-authenticate"] == 'Bearer realm="pjudge"'
    assert json.loads(body)["error"]["code"] == "unauthorized"
    # The operator's key: its 2 MB upload is read and reaches the app (no such job: 404).
    status, _, body = served.exchange(upload_head(KEY_A, 2 * MB) + b"\n" * (2 * MB), timeout=20)
    assert status == 404, body
