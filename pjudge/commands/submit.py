"""`pjudge submit`: send ITEMS.jsonl to a `pjudge serve` API, optionally wait for the verdicts.

The client is the standard library's urllib (no extra dependency). Every POST carries an
Idempotency-Key (a fresh one unless given), so retrying after a lost connection never creates a
second job.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from judge.jsonl import JsonlWriter, read_items
from judge.profiles import ProfileError, is_cascade, read_profile_file
from judge.records import Verdict
from judge.settings import settings
from pjudge.commands.judging import profile_options
from pjudge.common import EXIT_BAD_INPUT, EXIT_FAILURE, echo_json, handle_errors

if TYPE_CHECKING:  # rich is imported when a bar is shown
    from rich.progress import Progress

TERMINAL = ("done", "failed", "cancelled", "budget_exhausted")
PROFILE_SUFFIXES = (".toml", ".json", ".yaml", ".yml")
RETRIES = 5


class ApiCallError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []

    def describe(self) -> str:
        text = f"HTTP {self.status} {self.code}: {self.message}"
        extra = [f"  {d.get('field') or '-'}: {d.get('message')}" for d in self.details[1:6] if isinstance(d, dict)]
        return "\n".join([text, *extra])


class ApiClient:
    def __init__(self, url: str, key: str, timeout: float = 120.0):
        self.base = url.rstrip("/")
        self._key = key  # sent only in the Authorization header, never printed
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                retry: bool = True) -> tuple[int, Any, bytes]:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
        all_headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            req = urllib.request.Request(self.base + path, data=data, method=method, headers=all_headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as response:
                    raw = response.read()
                    return response.status, _decode(raw, response.headers.get_content_type()), raw
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if retry and (exc.code == 429 or exc.code >= 500) and attempt < RETRIES:
                    attempt += 1
                    time.sleep(min(8.0, 0.5 * 2 ** attempt))
                    continue
                raise _api_error(exc.code, raw) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if retry and attempt < RETRIES:
                    attempt += 1
                    time.sleep(min(8.0, 0.5 * 2 ** attempt))
                    continue
                reason = getattr(exc, "reason", exc)
                raise click.ClickException(f"cannot reach {self.base}: {reason}") from None


def _decode(raw: bytes, content_type: str) -> Any:
    if content_type == "application/json":
        return json.loads(raw.decode("utf-8"))
    return None


def _api_error(status: int, raw: bytes) -> ApiCallError:
    try:
        error = json.loads(raw.decode("utf-8"))["error"]
        return ApiCallError(status, str(error.get("code")), str(error.get("message")), error.get("details"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiCallError(status, "http_error", raw[:200].decode("utf-8", "replace") or "no body")


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


def _progress_bar(total: int) -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.fields[status]}[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("verdicts"),
        TextColumn("{task.fields[failed]} failed, ${task.fields[cost]:.4f}"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=False,
    )


def wait_for(client: ApiClient, job_id: str, poll: float, show_progress: bool) -> dict[str, Any]:
    _, job, _ = client.request("GET", f"/v1/jobs/{job_id}")
    bar = _progress_bar(job["counts"]["items"])
    with bar if show_progress else _Null():
        task = bar.add_task("job", total=job["counts"]["items"], status=job["status"], failed=0, cost=0.0)
        while True:
            counts = job["counts"]
            bar.update(task, completed=counts["verdicts"], status=job["status"], failed=counts["failed_items"],
                       cost=job["cost_usd"])
            if job["status"] in TERMINAL:
                finished: dict[str, Any] = job
                return finished
            time.sleep(poll)
            _, job, _ = client.request("GET", f"/v1/jobs/{job_id}")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def download_verdicts(client: ApiClient, job_id: str, output: Path, page_size: int = 1000) -> int:
    """Page through the verdicts (keyset cursor) into `output`, replaced atomically at the end."""
    cursor: str | None = None
    with JsonlWriter(output) as writer:
        while True:
            query = {"limit": str(page_size)}
            if cursor is not None:
                query["cursor"] = cursor
            _, page, _ = client.request("GET", f"/v1/jobs/{job_id}/verdicts?{urllib.parse.urlencode(query)}")
            for document in page["verdicts"]:
                writer.write(Verdict.model_validate(document))
            cursor = page.get("next_cursor")
            if not cursor:
                return writer.count


def _key_from_settings() -> str | None:
    key = settings().api_key
    return key.get_secret_value() if key is not None else None


@click.command("submit")
@click.argument("items_path", metavar="ITEMS.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", required=True, default=lambda: settings().url,
              help="Base URL of the API, e.g. http://127.0.0.1:8000 [default: PJUDGE_URL].")
@click.option("--key", required=True, default=_key_from_settings, show_default=False,
              help="API key (prefer the environment variable PJUDGE_API_KEY: a flag shows in the process list).")
@profile_options
@click.option("--idempotency-key", default=None, help="Resubmitting with the same key returns the same job.")
@click.option("--wait/--no-wait", default=False, help="Wait for the job with a progress bar.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the verdicts here (implies --wait).")
@click.option("--poll", default=1.0, show_default=True, type=click.FloatRange(0.05), help="Seconds between polls.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(1), help="Seconds per HTTP request.")
@click.option("--max-cost", "max_cost_usd", type=click.FloatRange(0, min_open=True), default=None,
              help="Budget in USD: no new calls once the job has cost this much (it ends budget_exhausted; the "
                   "items not judged by then have no verdict).")
@handle_errors
def submit_command(items_path: Path, url: str, key: str, profile_name: str | None, idempotency_key: str | None,
                   wait: bool, output: Path | None, poll: float, fmt: str, timeout: float, max_cost_usd: float | None,
                   **overrides: Any) -> None:
    """Submit ITEMS.jsonl as a job to a persona-judge API; with --wait or -o, wait and fetch the verdicts.

    Exits 1 when the job ends other than done (failed, cancelled, or budget_exhausted: its verdicts
    are still written with -o)."""
    items = read_items(items_path)  # bad input is reported with file, line and field before any request
    body: dict[str, Any] = {"items": [item.model_dump(mode="json", exclude_none=True) for item in items],
                            "profile": profile_spec(profile_name, overrides)}
    if max_cost_usd is not None:
        body["max_cost_usd"] = max_cost_usd
    client = ApiClient(url, key, timeout)
    headers = {"Idempotency-Key": idempotency_key or f"pjudge-submit-{uuid.uuid4()}"}
    try:
        status, accepted, _ = client.request("POST", "/v1/jobs", body, headers)
        job_id = accepted["job_id"]
        if fmt == "text":
            replay = " (existing job for this idempotency key)" if status == 200 else ""
            click.echo(f"job {job_id} {accepted['status']}: {len(items)} items{replay}")
        if not (wait or output):
            if fmt == "json":
                echo_json(accepted)
            return
        job = wait_for(client, job_id, poll, show_progress=fmt == "text")
        written = download_verdicts(client, job_id, output) if output is not None else None
    except ApiCallError as exc:
        click.echo(f"error: {exc.describe()}", err=True)
        raise SystemExit(EXIT_BAD_INPUT if exc.status in (400, 413, 422) else EXIT_FAILURE) from None
    if fmt == "json":
        echo_json({**job, "output": str(output) if output else None, "written": written})
    else:
        counts = job["counts"]
        where = f" -> {output} ({written} verdicts)" if output is not None else ""
        click.echo(f"job {job_id} {job['status']}: {counts['verdicts']}/{counts['items']} verdicts, "
                   f"{counts['failed_items']} failed, ${job['cost_usd']:.4f}{where}")
    if job["status"] != "done":
        raise SystemExit(EXIT_FAILURE)
