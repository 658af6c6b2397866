"""`pjudge demo`, the README's first command: the whole service path on the embedded default (its
own Redis, SQLite, a worker process, the simulator), ending in a report, and nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.service, pytest.mark.slow]


def servers_serving(folder: Path) -> list[int]:
    """Redis servers whose working directory is inside `folder` (the embedded one runs in
    <PJUDGE_HOME>/redis)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            command = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"redis-server" in command and cwd.is_relative_to(folder):
            found.append(int(proc.name))
    return found


def test_the_demo_judges_the_bundled_items_reports_and_stops_the_redis_it_started(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "PJUDGE_API_KEYS")}
    env["PJUDGE_HOME"] = str(home)
    done = subprocess.run([sys.executable, "-m", "pjudge", "demo", "--format", "json"], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["job"]["status"] == "done"
    counts = result["report"]["counts"]
    verdicts = Path(result["verdicts"]).read_text().splitlines()
    assert len(verdicts) == counts["items"] == result["job"]["counts"]["verdicts"] > 0
    assert counts["labelled"] > 0 and 0.0 <= result["report"]["accuracy"] <= 1.0
    # The embedded Redis it started ran in its data directory, and is gone with it.
    assert (home / "redis").is_dir()
    assert servers_serving(home) == []
