"""The repository's paths, its scripts as modules, and the real `pjudge` CLI: in a subprocess
(`run_pjudge`), or in this process (`invoke_pjudge`, for the checks of arguments and input that
end before anything is judged or served: a subprocess costs a fresh interpreter's imports, a
quarter of a second of CPU or more)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE_ITEMS = REPO / "judge" / "examples" / "items.jsonl"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (the experiments the reproduction tests run)."""
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run_pjudge(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real `pjudge` CLI in a subprocess (the environment of the test, plus `env`)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pjudge", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def invoke_pjudge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `pjudge` CLI's main in this process (click's test runner: the environment of the test
    plus `env`, stdout and stderr apart), answered as `run_pjudge` answers: exit code, stdout, stderr.
    Settings are read anew for the invocation, as a new process would."""
    from click.testing import CliRunner

    from judge.settings import reset_settings
    from pjudge.cli import main

    reset_settings()
    try:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        reset_settings()
    return subprocess.CompletedProcess(["pjudge", *args], result.exit_code, result.stdout, result.stderr)
