"""`pjudge serve`: run the HTTP API (SPEC section 8).

The server is waitress when it is installed (a production WSGI server, pure Python) and
otherwise werkzeug's threaded server; both serve the same app from api.app.create_app.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from typing import Any

import click

from pjudge.common import handle_errors


def _stop(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)  # unwinds serve_forever so the server closes its socket


def _werkzeug(app: Any, host: str, port: int, announce: Any) -> None:
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)
    announce(server.server_port, "werkzeug (threaded)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _waitress(app: Any, host: str, port: int, threads: int, announce: Any) -> None:
    from waitress.server import create_server

    # waitress spools a body to a temporary file before the app runs; past twice the API's own
    # limit it answers 413 itself (plain text) instead of spooling up to its 1 GB default.
    limit = app.config["MAX_CONTENT_LENGTH"]
    server = create_server(app, host=host, port=port, threads=threads, max_request_body_size=2 * limit + 2**20)
    announce(server.effective_port, f"waitress ({threads} threads)")  # type: ignore[union-attr]
    try:
        server.run()
    finally:
        server.close()


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
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
