"""Shared fixtures: isolated user data per test, the reference data location, the simulated LLM."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from judge.settings import reset_settings
from llm_sim.process import SimProcess

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_ITEMS = REPO / "judge" / "examples" / "items.jsonl"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data directory and call cache, and no real provider key."""
    home = tmp_path / "pjudge-home"
    monkeypatch.setenv("PJUDGE_HOME", str(home))
    monkeypatch.setenv("PJUDGE_CACHE", str(home / "cache.sqlite"))
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "PJUDGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    reset_settings()  # settings are read once per process; each test reads its own environment
    yield home
    reset_settings()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (research-only data kept outside the repo)")
    return SHARED_DATA


@pytest.fixture
def start_sim() -> Iterator[Callable[..., SimProcess]]:
    """Start `pjudge llm-sim` processes with the given flags; all are stopped after the test."""
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(*args).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def run_pjudge(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `pjudge` CLI in a subprocess (the environment of the test, plus `env`)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pjudge", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated database: SQLite, and PostgreSQL (a fresh database, dropped after) where
    PJUDGE_TEST_POSTGRES_URL is set (create_postgres_database skips otherwise)."""
    from store.db import get_engine

    if request.param == "sqlite":
        yield get_engine(f"sqlite:///{tmp_path}/db.sqlite")
        return
    from tests.services import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    engine = get_engine(url)
    yield engine
    engine.dispose()
    drop_postgres_database(url)
