"""`pjudge submit`: send ITEMS.jsonl to a `pjudge serve` API, optionally wait for the verdicts.

The client is api.client: every POST carries an Idempotency-Key (a fresh one unless given)
on each of its retries, so retrying after a lost connection never creates a second job.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

from api.client import ApiCallError, Client, Job
from judge.jsonl import JsonlWriter, read_items
from judge.profiles import ProfileError, is_cascade, read_profile_file
from pjudge.commands.judging import profile_options
from pjudge.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    FloatRange,
    echo_json,
    handle_errors,
    probe_output,
    refuse_overwriting_inputs,
    setting_default,
)

PROFILE_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def profile_spec(profile_name: str | None, overrides: dict[str, Any]) -> str | dict[str, Any]:
    """What to send as `profile`: a name for the server to resolve, or an object. A local profile
    file is read here and sent as an object (the server does not read client paths), without its
    `price`: the server prices jobs on its provider keys itself and refuses a client's price."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("replay_path") and not overrides.get("provider"):
        overrides["provider"] = "replay"
    if profile_name and Path(profile_name).suffix in PROFILE_SUFFIXES and Path(profile_name).is_file():
        fields = {k: v for k, v in read_profile_file(Path(profile_name)).items() if k != "price"}
        if is_cascade(fields):  # each stage's object sent without its price; the server checks the rest
            if overrides:
                raise ProfileError(f"profile {profile_name}: {', '.join(sorted(overrides))} cannot override a "
                                   "cascade; set them in its stages")
            fields["cascade"] = [
                {**stage, "profile": {k: v for k, v in stage["profile"].items() if k != "price"}}
                if isinstance(stage, dict) and isinstance(stage.get("profile"), dict) else stage
                for stage in fields.get("cascade") or []]
            return fields
        return {**fields, **overrides}
    if not overrides:
        return profile_name or "persona-certainty"
    return {"profile": profile_name, **overrides} if profile_name else overrides


def download_verdicts(job: Job, output: Path) -> int:
    """Every verdict of the job, page by page, into `output` (replaced atomically at the end)."""
    with JsonlWriter(output) as writer:
        for verdict in job.verdicts():
            writer.write(verdict)
        return writer.count


def _api_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--url: an http(s) URL with a host (else exit 2 before anything is read or sent)."""
    from urllib.parse import urlsplit

    if value is None:
        return value
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        valid = False
    if not valid:
        from judge.settings import shown_url

        raise click.BadParameter(f"'{shown_url(value)}' is not an http:// or https:// URL with a host")
    return value


@click.command("submit")
@click.argument("items_path", metavar="ITEMS.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, default=setting_default("url"), callback=_api_url,
              help="Base URL of the API, e.g. http://127.0.0.1:8000 [default: PJUDGE_URL].")
@click.option("--key", required=True, default=setting_default("api_key"), show_default=False,
              help="API key (prefer the environment variable PJUDGE_API_KEY: a flag shows in the process list).")
@profile_options
@click.option("--idempotency-key", default=None, help="Resubmitting with the same key returns the same job.")
@click.option("--wait/--no-wait", default=False, help="Wait for the job with a progress bar.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the verdicts here (implies --wait).")
@click.option("--poll", default=1.0, show_default=True, type=FloatRange(0.05), help="Seconds between polls.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--timeout", default=300.0, show_default=True, type=FloatRange(1), help="Seconds per HTTP request.")
@click.option("--max-cost", "max_cost_usd", type=FloatRange(0, min_open=True), default=None,
              help="Budget in USD: no new calls once the job has cost this much (it ends budget_exhausted; the "
                   "items not judged by then have no verdict).")
@handle_errors
def submit_command(items_path: Path, url: str, key: str, profile_name: str | None, idempotency_key: str | None,
                   wait: bool, output: Path | None, poll: float, fmt: str, timeout: float, max_cost_usd: float | None,
                   **overrides: Any) -> None:
    """Submit ITEMS.jsonl as a job to a persona-judge API; with --wait or -o, wait and fetch the verdicts.

    Exits 1 when the job ends other than done (failed, cancelled, or budget_exhausted: its verdicts
    are still written with -o)."""
    refuse_overwriting_inputs({"-o": output}, [items_path, profile_name, overrides.get("replay_path")])
    items = read_items(items_path)  # bad input is reported with file, line and field before any request
    probe_output(output)
    try:
        with Client(url, key, timeout=timeout) as client:
            job = client.submit(items, profile_spec(profile_name, overrides), max_cost_usd=max_cost_usd,
                                idempotency_key=idempotency_key or f"pjudge-submit-{uuid.uuid4()}")
            assert job.accepted is not None
            if fmt == "text":
                replay = " (existing job for this idempotency key)" if job.replayed else ""
                click.echo(f"job {job.id} {job.accepted.status}: {len(items)} items{replay}")
            if not (wait or output):
                if fmt == "json":
                    echo_json(job.accepted.model_dump(mode="json"))
                return
            finished = job.wait(progress=fmt == "text", poll=poll)
            written = download_verdicts(job, output) if output is not None else None
    except ApiCallError as exc:
        if exc.code == "connection_error":
            raise click.ClickException(exc.message) from None
        click.echo(f"error: {exc.describe()}", err=True)
        raise SystemExit(EXIT_BAD_INPUT if exc.status in (400, 413, 422) else EXIT_FAILURE) from None
    document = finished.model_dump(mode="json")
    if fmt == "json":
        echo_json({**document, "output": str(output) if output else None, "written": written})
    else:
        counts = finished.counts
        where = f" -> {output} ({written} verdicts)" if output is not None else ""
        click.echo(f"job {job.id} {finished.status}: {counts.verdicts}/{counts.items} verdicts, "
                   f"{counts.failed_items} failed, ${finished.cost_usd:.4f}{where}")
    if finished.status != "done":
        raise SystemExit(EXIT_FAILURE)
