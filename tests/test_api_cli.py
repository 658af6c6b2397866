"""The API's CLI verbs: `pjudge keys`, `pjudge submit` against a live HTTP server, `pjudge serve`."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from api.app import create_app
from judge.jsonl import read_verdicts
from judge.settings import reset_settings
from pjudge.cli import main
from store import repo
from store.db import get_engine
from tests.support.api import KEY_A, LiveServer, make_items
from tests.support.cli import REPO


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.sqlite"


@pytest.fixture
def engine(database_url: str, migrated_sqlite: Callable[[Path], Engine]) -> Engine:
    return migrated_sqlite(Path(database_url.removeprefix("sqlite:///")))


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    reset_settings()  # each invocation reads its own environment, as a new `pjudge` process would
    try:
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        reset_settings()


# ---------------------------------------------------------------- keys

def test_keys_create_list_revoke(database_url: str, engine: Engine) -> None:
    env = {"DATABASE_URL": database_url}
    created = run("keys", "create", "--name", "ci-bot", env=env)
    assert created.exit_code == 0, created.output
    key = created.output.split()[-1]  # the key is the last word of the output
    client = create_app(engine, lambda job: None, {"PJUDGE_API_KEYS": ""}).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/stats/agreement", headers=auth).status_code == 200

    listed = run("keys", "list", env=env)
    assert listed.exit_code == 0 and "ci-bot" in listed.output and key not in listed.output
    documents = json.loads(run("keys", "list", "--format", "json", env=env).output)
    assert [(d["id"], d["name"], d["revoked_at"]) for d in documents] == [(1, "ci-bot", None)]
    assert key.startswith(documents[0]["prefix"])

    revoked = run("keys", "revoke", documents[0]["prefix"], env=env)
    assert revoked.exit_code == 0 and "revoked 1" in revoked.output
    assert client.get("/v1/stats/agreement", headers=auth).status_code == 401
    again = run("keys", "revoke", "1", env=env)
    assert again.exit_code == 2 and "no active key" in again.output

    as_json = json.loads(run("keys", "create", "--format", "json", env=env).output)
    assert as_json["key"].startswith(as_json["prefix"]) and as_json["id"] == 2


# ---------------------------------------------------------------- submit, against a live server

@pytest.fixture
def live(engine: Engine) -> Iterator[LiveServer]:
    with LiveServer(engine) as server:
        yield server


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in make_items(75)), encoding="utf-8")
    return path


def test_submit_waits_and_writes_every_verdict_in_order(live: LiveServer, items_file: Path, tmp_path: Path,
                                                        engine: Engine) -> None:
    output = tmp_path / "out" / "verdicts.jsonl"
    result = run("submit", str(items_file), "--url", live.url, "--wait", "-o", str(output), "--poll", "0.05",
                 env={"PJUDGE_API_KEY": KEY_A})
    assert result.exit_code == 0, result.output
    assert KEY_A not in result.output
    verdicts = read_verdicts(output)
    assert [v.id for v in verdicts] == [f"item-{i:05d}" for i in range(75)]
    assert "done: 75/75 verdicts" in result.output
    [job] = live.jobs
    assert repo.get_job(engine, job.id).status == "done"  # type: ignore[union-attr]


def test_submit_sends_a_profile_file_with_overrides_and_is_idempotent(live: LiveServer, items_file: Path,
                                                                      tmp_path: Path) -> None:
    profile = tmp_path / "my-judge.json"
    profile.write_text(json.dumps({"template": "persona-tie", "samples": 2, "provider": "openai"}), encoding="utf-8")
    args = ["submit", str(items_file), "--url", live.url, "--profile", str(profile), "--model", "sim-judge",
            "--idempotency-key", "nightly-1", "--format", "json"]
    first = run(*args, env={"PJUDGE_API_KEY": KEY_A})
    second = run(*args, env={"PJUDGE_API_KEY": KEY_A})
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert json.loads(first.output)["job_id"] == json.loads(second.output)["job_id"]
    [job] = live.jobs
    stored = repo.job_profile(job)
    assert (stored.name, stored.template, stored.samples, stored.model) == ("my-judge", "persona-tie", 2, "sim-judge")


def test_submit_errors_have_the_documented_exit_codes(live: LiveServer, items_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": "p", "response_a": "a"}) + "\n", encoding="utf-8")
    result = run("submit", str(bad), "--url", live.url, env={"PJUDGE_API_KEY": KEY_A})
    assert result.exit_code == 2 and "line 1" in result.output and "response_b" in result.output
    unknown = run("submit", str(items_file), "--url", live.url, "--profile", "no-such-profile",
                  env={"PJUDGE_API_KEY": KEY_A})
    assert unknown.exit_code == 2 and "HTTP 422" in unknown.output and "no-such-profile" in unknown.output
    wrong = run("submit", str(items_file), "--url", live.url, env={"PJUDGE_API_KEY": "not-the-key"})
    assert wrong.exit_code == 1 and "HTTP 401" in wrong.output and "not-the-key" not in wrong.output
    assert live.jobs == []


# ---------------------------------------------------------------- serve

@pytest.mark.service
def test_serve_runs_the_api_over_http(tmp_path: Path, database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "PJUDGE_API_KEYS": KEY_A, "PJUDGE_MAX_BODY_MB": "1",
           "REDIS_URL": "redis://127.0.0.1:9/0", "PJUDGE_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "pjudge", "serve", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read() if proc.stderr else line
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok", "database": "ok"}
        # A body over the limit is refused at once (413), over a real socket.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/v1/jobs", body=b" " * (3 * 1024 * 1024 // 2),
                     headers={"Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 413 and json.loads(answer.read())["error"]["code"] == "body_too_large"
        # With the broker down the job is still stored and accepted (the sweeper sends it later).
        body = json.dumps({"items": make_items(3)}).encode()
        request = urllib.request.Request(f"{base}/v1/jobs", data=body, method="POST", headers={
            "Authorization": f"Bearer {KEY_A}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 202
            job_id = json.loads(response.read())["job_id"]
        assert repo.get_job(get_engine(database_url), job_id).status == "queued"  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "not enqueued" in err and KEY_A not in err
