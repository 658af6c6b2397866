"""One settings object: every PJUDGE_* variable (and DATABASE_URL, REDIS_URL) read through
judge.settings when first used, nothing started or read at import, and `pjudge config` showing the
effective values with every secret masked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from judge.settings import Settings
from pjudge.commands.config import variable_name
from tests.support.cli import REPO, run_pjudge

PROBE = textwrap.dedent("""
    import json, os, pathlib

    def sockets():
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the listing's own descriptor, closed by now
                continue
            if target.startswith("socket:"):
                found.append(target)
        return sorted(found)

    def children():
        pid = str(os.getpid())
        found = []
        for proc in pathlib.Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and (proc / "stat").read_text().rsplit(")", 1)[1].split()[1] == pid:
                    found.append((proc / "cmdline").read_bytes().replace(b"\\0", b" ").decode())
            except OSError:
                pass
        return found

    before = sockets()
    import worker.app, worker.tasks, worker.runtime, worker.sweeper, worker.broker, store.db  # noqa
    print(json.dumps({"new_sockets": sorted(set(sockets()) - set(before)), "children": children()}))
""")


@pytest.mark.slow
def test_importing_the_worker_starts_no_redis_and_opens_no_connection(tmp_path: Path) -> None:
    # worker.app built its Celery app at import, and resolving its broker started the embedded Redis.
    home = tmp_path / "home"
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env["PJUDGE_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"new_sockets": [], "children": []}
    assert not (home / "redis").exists()
    assert not home.exists()  # not even the data directory (nor a SQLite file in it)


@pytest.mark.slow
def test_the_worker_reads_its_settings_when_used_not_when_imported(tmp_path: Path) -> None:
    # VISIBILITY_TIMEOUT and MAX_IN_FLIGHT were read from the environment at import.
    script = textwrap.dedent("""
        import json, os
        import worker.app, worker.tasks, worker.runtime
        os.environ.update({"REDIS_URL": "redis://127.0.0.1:1/0", "PJUDGE_VISIBILITY_TIMEOUT": "7",
                           "PJUDGE_WORKER_MAX_IN_FLIGHT": "3"})
        from judge.profiles import load_profile
        profile = load_profile("persona-certainty", provider="openai-compatible", model="m",
                               base_url="http://127.0.0.1:9/v1")
        from judge.endpoints import local_access
        with worker.runtime.runtime().judge(profile, local_access(profile)) as judge:
            pass
        conf = worker.app.app.conf
        print(json.dumps({"broker": conf.broker_url, "visibility": conf.broker_transport_options["visibility_timeout"],
                          "in_flight": judge.max_in_flight}))
    """)
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "DATABASE_URL")}
    env["PJUDGE_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "broker": "redis://127.0.0.1:1/0", "visibility": 7, "in_flight": 3}
    assert not (tmp_path / "home" / "redis").exists()


def test_no_module_of_the_product_reads_a_pjudge_variable_from_the_environment_itself() -> None:
    # Every PJUDGE_* variable, DATABASE_URL and REDIS_URL goes through judge.settings (the SDKs'
    # own variables, OPENAI_API_KEY and the like, are read where the credential policy needs them).
    reads = re.compile(r"os\.environ|getenv|envvar=")
    names = re.compile(r"PJUDGE_|DATABASE_URL|REDIS_URL")
    offenders = []
    for package in ("api", "calibration", "judge", "llm_sim", "pjudge", "store", "worker"):
        for path in (REPO / package).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                # broker.py hands the embedded Redis's address to child processes: a write, not a read.
                if reads.search(line) and names.search(line) and 'os.environ["REDIS_URL"] = url' not in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


SECRETS = {
    "DATABASE_URL": "postgresql://pjudge:db-password-93f1@db.internal:5432/pjudge",
    "REDIS_URL": "redis://:redis-password-5ac2@cache.internal:6379/0",
    "PJUDGE_API_KEYS": "tenant-key-one-7d3e,tenant-key-two-0b9a",
    "PJUDGE_API_KEY": "client-key-c41f",
    "PJUDGE_BASE_URL": "http://user:base-url-password-e2d8@llm.internal/v1",
}
SECRET_PARTS = ("db-password-93f1", "redis-password-5ac2", "tenant-key-one-7d3e", "tenant-key-two-0b9a",
                "client-key-c41f", "base-url-password-e2d8")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_pjudge_config_prints_the_effective_settings_and_no_secret_of_the_environment(fmt: str) -> None:
    result = run_pjudge("config", "--format", fmt, env={**SECRETS, "PJUDGE_BATCH_SIZE": "7"})
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    leaked = [part for part in SECRET_PARTS if part in output]
    assert leaked == []
    if fmt == "json":
        document = json.loads(result.stdout)
        shown = document["settings"]
        assert shown["PJUDGE_BATCH_SIZE"] == 7 and "PJUDGE_BATCH_SIZE" in document["set"]
        assert shown["DATABASE_URL"] == "postgresql://pjudge:***@db.internal:5432/pjudge"
        assert shown["REDIS_URL"] == "redis://:***@cache.internal:6379/0"
        assert shown["PJUDGE_API_KEYS"] == ["***", "***"]
        assert shown["PJUDGE_API_KEY"] == "***"
        assert shown["PJUDGE_BASE_URL"] == "http://user:***@llm.internal/v1"
        assert shown["PJUDGE_SWEEP_INTERVAL"] == 15.0 and "PJUDGE_SWEEP_INTERVAL" not in document["set"]
        assert set(shown) == {variable_name(field) for field in Settings.model_fields}
    else:
        lines = {line.split()[0]: line for line in result.stdout.splitlines()}
        assert set(lines) == {variable_name(field) for field in Settings.model_fields}
        assert lines["PJUDGE_BATCH_SIZE"].split()[1] == "7" and "(default)" not in lines["PJUDGE_BATCH_SIZE"]
        assert "postgresql://pjudge:***@db.internal:5432/pjudge" in lines["DATABASE_URL"]
        assert "(default)" in lines["PJUDGE_SWEEP_INTERVAL"]


def test_pjudge_config_names_the_variable_that_does_not_parse() -> None:
    result = run_pjudge("config", env={"PJUDGE_BATCH_SIZE": "many", "DATABASE_URL": SECRETS["DATABASE_URL"]})
    assert result.returncode == 2
    assert result.stderr.startswith("error: PJUDGE_BATCH_SIZE: ")
    assert "db-password-93f1" not in result.stdout + result.stderr


def test_the_readme_settings_table_lists_every_setting_with_its_description() -> None:
    from judge.settings import Settings

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Settings"):]
    for name, field in Settings.model_fields.items():
        variable = {"database_url": "DATABASE_URL", "redis_url": "REDIS_URL"}.get(name, f"PJUDGE_{name.upper()}")
        rows = [line for line in table.splitlines() if line.startswith(f"| `{variable}` |")]
        assert len(rows) == 1, f"{variable} is not in the README's settings table"
        assert (field.description or "").replace("|", "\\|") in rows[0], f"{variable}: README and code differ"


def test_secrets_in_a_urls_query_string_are_masked_too() -> None:
    from judge.settings import mask_url

    config = Settings(database_url="postgresql://u@h/db?password=pg-secret-1&sslmode=require",
                      redis_url="redis://h:6379/0?password=redis-secret-2")
    shown = json.dumps(config.masked())
    assert "pg-secret-1" not in shown and "redis-secret-2" not in shown
    assert config.masked()["database_url"] == "postgresql://u@h/db?password=***&sslmode=require"
    for url in ("postgresql://h/db?sslpassword=a1", "redis://h/0?PASS=a2", "x://h/?pwd=a3&x=1", "x://h/?client_secret=a4",
                "x://h/?auth_token=a5", "x://h/?api_key=a6", "x://u:a7@h/?apikey=a8"):
        assert not any(f"a{n}" in mask_url(url) for n in range(1, 9)), url
    assert mask_url("redis://h:6379/0?db=1&ssl=true") == "redis://h:6379/0?db=1&ssl=true"
