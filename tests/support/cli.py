"""The repository's paths and the real `pjudge` CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_ITEMS = REPO / "judge" / "examples" / "items.jsonl"


def run_pjudge(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `pjudge` CLI in a subprocess (the environment of the test, plus `env`)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pjudge", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
