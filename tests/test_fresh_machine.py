"""A fresh machine: every import is a declared dependency, and the README's commands make their own
virtual environment (a distribution's python3 refuses `pip install` outside one, PEP 668)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.cli import REPO


def test_every_import_of_the_product_the_tests_and_the_benchmarks_is_a_declared_dependency() -> None:
    # schemathesis was imported by the tests and installed by hand, not declared: a fresh clone
    # failed at collection while CI, on the machine it was installed on, passed.
    done = subprocess.run([str(REPO / "scripts" / "check-deps")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VENV_PYTHON": sys.executable})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("No dependency issues found") == 2


def test_the_dependency_check_fails_on_an_import_that_pyproject_does_not_declare(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".*", "__pycache__", "*.egg-info"))
    (copy / "judge" / "uses_a_test_tool.py").write_text("import pytest\n")
    (copy / "tests" / "test_uses_an_undeclared_package.py").write_text("import tomli_w\n")
    done = subprocess.run([str(copy / "scripts" / "check-deps")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "VENV_PYTHON": sys.executable})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "judge/uses_a_test_tool.py:1:8: DEP004 'pytest'" in output
    assert "tests/test_uses_an_undeclared_package.py:1:8: DEP001 'tomli_w'" in output


def fake_python(folder: Path) -> Path:
    """A python3 like Debian's without python3-venv: runs, but `-m venv` fails for want of ensurepip."""
    folder.mkdir()
    script = folder / "python3"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  echo "The virtual environment was not created successfully because ensurepip is not available." >&2
  exit 1
fi
exec {sys.executable} "$@"
""")
    script.chmod(0o755)
    return folder


def test_scripts_test_names_the_package_to_install_when_python3_cannot_make_a_virtual_environment(
        tmp_path: Path) -> None:
    bin_dir = fake_python(tmp_path / "bin")
    venv = tmp_path / "venv"
    done = subprocess.run([str(REPO / "scripts" / "test"), "--co", "-q"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                               "PJUDGE_VENV": str(venv)})
    assert done.returncode == 1
    assert "apt-get install python3-venv" in done.stderr
    assert not venv.exists()  # no half-made environment left behind for the next run to trust
