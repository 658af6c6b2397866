"""Acceptance (issue 16): `evaluate(...)` called inside a running event loop, as in a notebook cell,
gives the same verdicts as `pjudge judge` on the same items and profile, both against `pjudge
llm-sim` over HTTP, each with its own call cache."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from judge import EvaluationResult, evaluate
from judge.jsonl import read_verdicts
from judge.settings import reset_settings
from tests.support.cli import EXAMPLE_ITEMS, REPO, run_pjudge


def profile_file(tmp_path: Path, base_url: str, kind: str) -> Path:
    judge = (f'template = "persona-certainty"\nprovider = "openai-compatible"\nbase_url = "{base_url}"\n'
             'max_retries = 0\n')
    path = tmp_path / f"{kind}.toml"
    if kind == "single":
        path.write_text(f'name = "sim-single"\nmodel = "sim-judge"\nsamples = 2\ntemperature = 0.7\n{judge}')
        return path
    (tmp_path / "cheap.toml").write_text(f'name = "sim-cheap"\nmodel = "sim-cheap"\n{judge}')
    (tmp_path / "strong.toml").write_text(f'name = "sim-strong"\nmodel = "sim-strong"\n{judge}')
    cheap, strong = tmp_path / "cheap.toml", tmp_path / "strong.toml"
    path.write_text(f'name = "sim-cascade"\n[[cascade]]\nprofile = "{cheap}"\nthreshold = 0.8\n'
                    f'[[cascade]]\nprofile = "{strong}"\n')
    return path


def essentials(verdict: dict[str, Any]) -> dict[str, Any]:
    """What must agree: the verdict's fields and every call's answer (not latencies)."""
    kept = {key: verdict.get(key) for key in ("id", "winner", "p_a", "certainty", "consistent", "abstained",
                                                "bpde", "error", "stage", "judge")}
    call_keys = ("order", "sample", "raw", "choice", "certainty", "cached", "error", "attempts", "stage")
    kept["calls"] = [{key: call.get(key) for key in call_keys} for call in verdict["calls"]]
    return kept


@pytest.mark.parametrize("kind", ["single", "cascade"])
def test_evaluate_in_a_running_loop_gives_the_verdicts_of_pjudge_judge(tmp_path: Path, start_sim,
                                                                       kind: str) -> None:
    sim = start_sim("--first-bias", "0.3", "--noise", "0.2", "--seed", "11")
    profile = profile_file(tmp_path, sim.openai_base_url, kind)
    items = [json.loads(line) for line in EXAMPLE_ITEMS.read_text().splitlines() if line.strip()]

    cli_out = tmp_path / "cli.jsonl"
    done = run_pjudge("judge", str(EXAMPLE_ITEMS), "-o", str(cli_out), "--profile", str(profile),
                      "--format", "json", env={"PJUDGE_CACHE": str(tmp_path / "cli-cache.sqlite")})
    assert done.returncode == 0, done.stderr
    cli = [json.loads(line) for line in cli_out.read_text().splitlines()]
    served_to_cli = sim.stats()["completions"]

    async def notebook_cell() -> EvaluationResult:
        asyncio.get_running_loop()  # a loop runs here, as in Jupyter: asyncio.run would fail
        return evaluate(items, str(profile), cache=tmp_path / "library-cache.sqlite")

    result = asyncio.run(notebook_cell())
    library = [verdict.model_dump(mode="json") for verdict in result]

    assert sim.stats()["completions"] == 2 * served_to_cli  # the library made its own calls (separate cache)
    assert [essentials(v) for v in library] == [essentials(v) for v in cli]
    assert len({v["winner"] for v in library}) > 1
    assert not any(call["cached"] for v in library for call in v["calls"])
    if kind == "cascade":
        assert {v["stage"] for v in library} >= {0}
        assert any(len(v["stages"]) == 2 for v in library) and any(len(v["stages"]) == 1 for v in library)


def test_the_readmes_python_example_runs_as_written(tmp_path: Path, start_sim,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    sim = start_sim("--seed", "5")
    profiles = tmp_path / "profiles"  # persona-certainty, pointed at the simulator
    profiles.mkdir()
    (profiles / "persona-certainty.toml").write_text(
        f'template = "persona-certainty"\nprovider = "openai-compatible"\nmodel = "sim-judge"\n'
        f'base_url = "{sim.openai_base_url}"\n')
    monkeypatch.setenv("PJUDGE_PROFILES", str(profiles))
    reset_settings()
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE_ITEMS, tmp_path / "items.jsonl")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S)
    assert example is not None
    exec(compile(example[1], "README.md", "exec"), {})  # noqa: S102  # the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and 0.0 <= float(printed[1]) <= 1.0
    assert len(read_verdicts(tmp_path / "verdicts.jsonl")) == 40
