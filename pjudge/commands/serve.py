"""`pjudge serve`: run the HTTP API (SPEC section 8).

The server is waitress when it is installed (a production WSGI server, pure Python) and
otherwise werkzeug's threaded server; both serve the same app from api.app.create_app. Under
waitress a body over the API's limit is refused when its headers arrive, in the API's JSON error
shape, and idle connections are bounded in number and time (judge.settings: serve_*); a request's
headers must arrive within serve_header_timeout of its first byte, one client address keeps at most
serve_connections_per_address connections, and a body sent to a route that needs a key without a
plausible bearer key is refused (JSON 401) before it is read or spooled; so is an NDJSON upload over
the body limit (or chunked) whose key the API does not accept (one lookup when its headers arrive).
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from judge.settings import settings
from pjudge.common import handle_errors

if TYPE_CHECKING:  # the servers are imported when chosen, not with this module
    from flask import Flask
    from waitress.channel import HTTPChannel

# How a server tells its port and kind once it listens.
Announce = Callable[[int, str], None]


def _stop(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds serve_forever so the server closes its socket


def _werkzeug(app: Flask, host: str, port: int, announce: Announce) -> None:
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    announce(server.server_port, "werkzeug (threaded)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


# After answering an error before the body was read (413 at header time), the rest of the upload is
# read and dropped for this long (and up to this much) before closing: closing with unread input
# resets the connection, and a client still sending would lose the answer.
DRAIN_SECONDS = 5.0
DRAIN_BYTES = 256 * 1024 * 1024


def needs_key(path: str) -> bool:
    """Whether a route needs a bearer key (every /v1 route but the OpenAPI document; /healthz and
    /metrics take no body)."""
    return path.startswith("/v1/") and path.rstrip("/") != "/v1/openapi.json"


def plausible_bearer(header: str | None) -> bool:
    """An Authorization header that could hold a key: `Bearer <key>`, the key 1 to MAX_KEY_LENGTH
    printable ASCII characters (api.auth refuses anything else with 401 anyway)."""
    from api.auth import MAX_KEY_LENGTH, key_of_header

    key = key_of_header(header)
    return key is not None and len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()


def accepted_key(app: Flask, header: str | None) -> bool:
    """Whether an Authorization header holds a key the API accepts now (api.auth.owner_of_key)."""
    from api.auth import key_of_header, owner_of_key
    from api.errors import ApiError

    key = key_of_header(header)
    if key is None:
        return False
    with app.app_context():
        try:
            owner_of_key(key)
        except ApiError:
            return False
    return True


def _json_error_channel(header_timeout: float = 10.0, per_address: int = 50,
                        body_limit: int | None = None,
                        accepts_upload: Callable[[str | None], bool] | None = None) -> type[HTTPChannel]:
    """waitress's channel with its own error answers (a body over the limit refused at header time,
    a body sent without a plausible key to a route that needs one, an unparsable request) written in
    the API's error shape instead of plain text, then a lingering close (see DRAIN_SECONDS).

    Against slow and many clients: a request's headers must be in within `header_timeout` seconds
    of its first byte (waitress's channel_timeout only counts the time since the last byte, so one
    byte every few seconds kept a connection forever), and one client address keeps at most
    `per_address` connections open (more are closed at once, unanswered). `body_limit`: the
    largest declared body but an NDJSON upload of items (api.pages.is_upload), refused at header time."""
    import socket
    import threading
    import time

    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.task import ErrorTask
    from waitress.utilities import Error, RequestEntityTooLarge

    from api.errors import body_too_large_message, error_document, http_code
    from api.pages import is_upload

    class Unauthorized(Error):
        code = 401
        reason = "Unauthorized"

    class UnknownKey(Unauthorized):
        """An upload over the body limit with a key the API does not accept: refused unread."""

    class BodyTooLarge(RequestEntityTooLarge):
        """Over the limit of a body other than an upload (waitress's own limit is the upload's)."""

    class KeyFirstParser(HTTPRequestParser):
        """Refuses, when the headers are in, a body sent to a route that needs a key without one:
        the body is never read into memory or spooled to a temporary file."""

        def parse_header(self, header_plus: bytes) -> None:
            super().parse_header(header_plus)
            has_body = self.content_length > 0 or self.chunked
            path: str = self.path  # type: ignore[attr-defined]  # waitress sets it in parse_header; stubs lack it
            if has_body and needs_key(path) and not plausible_bearer(self.headers.get("AUTHORIZATION")):
                self.error = Unauthorized("a request body needs 'Authorization: Bearer <key>'")
                self.completed = True
            elif (body_limit is not None and self.content_length > body_limit
                  and not is_upload(path, self.headers.get("CONTENT_TYPE"))):
                self.error = BodyTooLarge("body too large")
                self.completed = True
            elif (accepts_upload is not None and is_upload(path, self.headers.get("CONTENT_TYPE"))
                  and (self.chunked or (body_limit is not None and self.content_length > body_limit))
                  and not accepts_upload(self.headers.get("AUTHORIZATION"))):
                # An upload may be PJUDGE_MAX_UPLOAD_MB (a GB), which waitress spools to disk before
                # the app runs: past the body limit, the key is checked first (one lookup).
                self.error = UnknownKey("invalid or revoked key")
                self.completed = True

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error  # type: ignore[attr-defined]  # stubs mistype request
            if isinstance(error, BodyTooLarge):
                message = body_too_large_message(body_limit)
            elif error.code == 413:
                message = body_too_large_message(self.channel.server.adj.max_request_body_size - 1)
            elif isinstance(error, UnknownKey):
                message = "invalid or revoked key (checked before an upload over PJUDGE_MAX_BODY_MB is read)"
                self.response_headers = [*self.response_headers, ("WWW-Authenticate", 'Bearer realm="pjudge"')]
            elif error.code == 401:
                message = f"missing or malformed bearer key: {error.body}"
                self.response_headers = [*self.response_headers, ("WWW-Authenticate", 'Bearer realm="pjudge"')]
            else:
                message = f"{error.reason}: {error.body}"
            body = json.dumps(error_document(http_code(error.code), message), separators=(",", ":")).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers = [*self.response_headers, ("Content-Type", "application/json")]
            self.set_close_on_finish()
            self.content_length = len(body)
            if isinstance(self.channel, JsonErrorChannel):
                self.channel.answered_error = True
            self.write(body)

    open_by_address: dict[Any, int] = {}
    counting = threading.Lock()

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask
        parser_class = KeyFirstParser
        answered_error = False
        drain_until: float | None = None
        drained = 0
        headers_due: float | None = None  # when the request being received must have sent its headers
        counted: Any = None  # the client address this channel counts under, until it closes

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:  # noqa: A002
            address = addr[0] if isinstance(addr, tuple) else addr
            with counting:
                refused = open_by_address.get(address, 0) >= per_address
                if not refused:
                    open_by_address[address] = open_by_address.get(address, 0) + 1
            if refused:  # never registered with the loop: closed now, nothing read or answered
                try:
                    sock.close()
                except OSError:  # noqa: S110 - the client went already
                    pass
                return
            self.counted = address
            super().__init__(server, sock, addr, adj, map)

        def del_channel(self, map: Any = None) -> None:  # noqa: A002
            super().del_channel(map)
            with counting:
                address, self.counted = self.counted, None
                if address is not None:
                    left = open_by_address.get(address, 1) - 1
                    if left > 0:
                        open_by_address[address] = left
                    else:
                        open_by_address.pop(address, None)

        def received(self, data: bytes) -> bool:
            result = bool(super().received(data))
            request = self.request  # the one still being received, if any
            if request is None or request.headers_finished:
                self.headers_due = None
            elif self.headers_due is None:
                self.headers_due = time.monotonic() + header_timeout
            return result

        def headers_late(self) -> bool:
            return self.headers_due is not None and time.monotonic() > self.headers_due

        def handle_close(self) -> None:
            if (self.drain_until is None and self.answered_error and self.connected
                    and self.socket is not None and not self.total_outbufs_len):
                try:
                    self.socket.shutdown(socket.SHUT_WR)  # the answer is out: the client sees it end
                except OSError:
                    super().handle_close()
                    return
                self.will_close = False
                self.drain_until = time.monotonic() + DRAIN_SECONDS
                return
            if self.socket is not None:
                super().handle_close()

        def readable(self) -> bool:
            return True if self.drain_until is not None else bool(super().readable())

        def writable(self) -> bool:  # polled every loop: a drain past its time ends in handle_write
            if self.drain_until is not None:
                return time.monotonic() > self.drain_until
            if self.headers_late() and not self.will_close:
                self.will_close = True  # handle_write closes it
            return bool(super().writable())

        def handle_write(self) -> None:
            if self.drain_until is not None:
                super().handle_close()
                return
            super().handle_write()

        def handle_read(self) -> None:
            if self.drain_until is None:
                super().handle_read()
                return
            try:
                data = self.socket.recv(65536) if self.socket is not None else b""
            except OSError:
                data = b""
            self.drained += len(data)
            if not data or self.drained > DRAIN_BYTES or time.monotonic() > self.drain_until:
                super().handle_close()

    return JsonErrorChannel


def _waitress(app: Flask, host: str, port: int, threads: int, announce: Announce) -> None:
    from waitress.server import BaseWSGIServer, create_server

    config = settings()
    body_limit, upload_limit = app.config["MAX_CONTENT_LENGTH"], app.extensions["pjudge"].settings.max_upload_bytes
    # waitress reads a whole body before the app runs (spooling a large one to a temporary file):
    # with its limit at the API's own (an NDJSON upload's; every other body's in the channel), a larger
    # declared Content-Length (or a chunked body growing past it) is refused as soon as seen,
    # instead of waiting for (or spooling) the body. Idle connections are closed after
    # serve_channel_timeout, and up to serve_connection_limit are kept, so that idle clients cannot
    # take every slot from /healthz and real requests.
    server = create_server(
        app, host=host, port=port, threads=threads, max_request_body_size=max(body_limit, upload_limit) + 1,
        connection_limit=config.serve_connection_limit, channel_timeout=config.serve_channel_timeout,
        cleanup_interval=config.serve_cleanup_interval)
    if not isinstance(server, BaseWSGIServer):  # one host and port: one listening socket's server
        raise RuntimeError(f"waitress made a {type(server).__name__} for one host and port")
    server.channel_class = _json_error_channel(config.serve_header_timeout, config.serve_connections_per_address,
                                               body_limit, lambda header: accepted_key(app, header))
    _raise_file_limit(config.serve_connection_limit)
    bound: int = server.effective_port  # type: ignore[attr-defined]  # waitress sets it; stubs lack it
    announce(bound, f"waitress ({threads} threads)")
    try:
        server.run()
    finally:
        server.close()


def _raise_file_limit(connections: int) -> None:
    """Let the process open a descriptor per connection, with room for its own files."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError):  # noqa: S110 - best effort: the default limit still serves
            pass


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Worker threads (waitress).")
@click.option("--server", "server_name", type=click.Choice(["auto", "waitress", "werkzeug"]), default="auto",
              show_default=True, help="auto: waitress when installed, else werkzeug's threaded server.")
@handle_errors
def serve_command(host: str, port: int, threads: int, server_name: str) -> None:
    """Serve the HTTP API: jobs, verdicts, labels, reports, metrics.

    Configured by DATABASE_URL (default: the embedded SQLite), REDIS_URL (default: the embedded
    Redis, shared with `pjudge worker`), PJUDGE_API_KEYS (comma-separated keys accepted besides
    those of `pjudge keys create`), PJUDGE_MAX_BODY_MB (default 50) and PJUDGE_BATCH_SIZE (default 32).
    Under waitress: PJUDGE_SERVE_CONNECTION_LIMIT (1000), PJUDGE_SERVE_CHANNEL_TIMEOUT (30 s idle) and
    PJUDGE_SERVE_CLEANUP_INTERVAL (5 s), PJUDGE_SERVE_HEADER_TIMEOUT (10 s from a request's first byte
    to its last header byte) and PJUDGE_SERVE_CONNECTIONS_PER_ADDRESS (50).
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from worker.telemetry import configure_logs

    configure_logs(logging.INFO)  # PJUDGE_LOG_FORMAT=json: JSON lines instead
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter on every start
    from api.app import create_app

    app = create_app()
    from worker.broker import configured_broker_url

    if configured_broker_url():
        # Preparing the publisher resolves the broker: without a configured one that would start
        # the embedded Redis, which the API leaves to its first job.
        from worker.tasks import prepare_publisher

        prepare_publisher()
    # Keep the import-time objects out of every full collection (see worker.main).
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGTERM, _stop)

    def announce(bound: int, kind: str) -> None:
        click.echo(f"pjudge API listening on http://{host}:{bound} ({kind}); OpenAPI at /v1/openapi.json")

    use_waitress = server_name == "waitress"
    if server_name == "auto":
        try:
            import waitress  # noqa: F401

            use_waitress = True
        except ImportError:
            use_waitress = False
    try:
        if use_waitress:
            _waitress(app, host, port, threads, announce)
        else:
            _werkzeug(app, host, port, announce)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except (KeyboardInterrupt, SystemExit):
        click.echo("stopped", err=True)
