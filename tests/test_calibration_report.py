"""build_report (SPEC 4 keys, JSON safety, groups, speed) and the `pjudge report` command."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from calibration.markdown import render_markdown
from calibration.report import build_report
from judge.jsonl import dump_record
from pjudge.cli import main
from tests.support.verdicts import call, synthetic, verdict

SPEC_KEYS = {
    "accuracy",
    "accuracy_no_tie",
    "counts",
    "cohen_kappa",
    "krippendorff_alpha",
    "high_certainty",
    "low_certainty",
    "coverage_curve",
    "ece",
    "brier",
    "position_consistency",
    "first_position_rate",
    "prefers_longer",
    "hitl",
}


def test_report_has_the_spec_keys_and_is_strict_json() -> None:
    report = build_report(synthetic(300), bootstrap_resamples=200)
    assert SPEC_KEYS <= set(report)
    assert "by_group" not in report and "risk_control" not in report
    assert set(report["counts"]) == {"items", "labelled", "decided", "correct", "correct_no_tie"}
    assert set(report["hitl"]) == {"beta", "n_sent", "accuracy", "cohen_kappa"}
    assert set(report["cohen_kappa"]) == {"value", "ci95"}
    assert len(report["coverage_curve"]) == 10
    assert report["simulated"] is False
    json.dumps(report, allow_nan=False)
    c = report["counts"]
    assert report["accuracy"] == pytest.approx(c["correct"] / c["labelled"])
    assert report["accuracy_no_tie"] == pytest.approx(c["correct_no_tie"] / c["decided"])


@pytest.mark.parametrize(
    "verdicts",
    [
        [],
        [verdict("A", None)],
        [verdict(None, "A", bpde=None)],
        [verdict("A", "A") for _ in range(3)],
        [verdict("tie", "tie", calls=[call("AB", None, error="x"), call("BA", None, error="x")])],
    ],
    ids=["empty", "unlabelled", "no-winner", "all-agree", "all-unparsed"],
)
def test_degenerate_reports_are_null_not_nan(verdicts: list) -> None:
    report = build_report(verdicts, target_accuracy=0.9, delta=0.1, group_by="g")
    json.dumps(report, allow_nan=False)
    assert SPEC_KEYS <= set(report)
    render_markdown(report)


def test_report_options_reach_the_statistics() -> None:
    vs = synthetic(500, seed=4)
    report = build_report(vs, threshold=0.5, hitl=0.3, target_accuracy=0.75, bootstrap_resamples=100, seed=9)
    assert report["high_certainty"]["threshold"] == 0.5
    assert report["hitl"]["beta"] == 0.3 and report["hitl"]["n_sent"] == 150
    assert report["risk_control"]["target"] == 0.75 and report["risk_control"]["delta"] == 0.1
    assert report["bootstrap"]["resamples"] == 100 and report["bootstrap"]["seed"] == 9
    assert report == build_report(vs, threshold=0.5, hitl=0.3, target_accuracy=0.75, bootstrap_resamples=100, seed=9)


def test_by_group() -> None:
    vs = [verdict("A", "A", metadata={"lang": "en"}), verdict("B", "A", metadata={"lang": "en"})]
    vs += [verdict("A", "A", metadata={"lang": "de"}), verdict("A", "B", metadata={"lang": 3}), verdict("A", "A")]
    report = build_report(vs, group_by="lang", bootstrap_resamples=50)
    groups = report["by_group"]
    assert list(groups) == ["(missing)", "3", "de", "en"]
    assert groups["en"]["counts"] == {"items": 2, "labelled": 2, "decided": 2, "correct": 1, "correct_no_tie": 1}
    assert groups["en"]["accuracy"] == 0.5 and groups["de"]["accuracy"] == 1.0 and groups["3"]["accuracy"] == 0.0
    assert SPEC_KEYS <= set(groups["de"])
    assert report["group_by"] == "lang"


def test_simulated_verdicts_are_flagged() -> None:
    vs = [verdict("A", "A"), verdict("B", "B", model="sim-judge-1")]
    report = build_report(vs, bootstrap_resamples=0)
    assert report["simulated"] is True
    assert "simulated" in render_markdown(report).lower()


@pytest.mark.slow
def test_report_of_100k_verdicts_is_fast() -> None:
    vs = synthetic(100_000, seed=7)
    start = time.perf_counter()
    report = build_report(vs, bootstrap_resamples=1000, target_accuracy=0.8, delta=0.1)
    elapsed = time.perf_counter() - start
    assert report["counts"]["items"] == 100_000
    assert report["cohen_kappa"]["ci95"] is not None
    assert elapsed < 15, f"report of 100k verdicts took {elapsed:.1f}s"  # about 0.6 s on the dev box


# --- CLI ------------------------------------------------------------------------------------------


def write_verdicts(path: Path, verdicts: list) -> Path:
    path.write_text("".join(dump_record(v) + "\n" for v in verdicts), encoding="utf-8")
    return path


def run(*args: str) -> object:
    return CliRunner().invoke(main, ["report", *args])


def test_cli_json(tmp_path: Path) -> None:
    path = write_verdicts(tmp_path / "v.jsonl", synthetic(200))
    result = run(str(path), "--bootstrap", "100", "--target-accuracy", "0.7", "--delta", "0.2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert SPEC_KEYS <= set(report)
    assert report["risk_control"]["delta"] == 0.2


def test_cli_markdown_to_file_with_simulated_warning(tmp_path: Path) -> None:
    vs = [verdict("A", "A", model="sim-x") for _ in range(3)] + [verdict("B", "A", model="sim-x")]
    path = write_verdicts(tmp_path / "v.jsonl", vs)
    out = tmp_path / "report.md"
    result = run(str(path), "--format", "md", "-o", str(out), "--group-by", "g")
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("# persona-judge report")
    assert "Warning: simulated verdicts" in text
    assert "| accuracy | 0.750 | 3/4 |" in text


def test_cli_labels_join(tmp_path: Path) -> None:
    path = write_verdicts(tmp_path / "v.jsonl", [verdict("A", None, id="x"), verdict("B", None, id="y")])
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "x", "human_label": "A"}\n{"id": "y", "human_label": "A"}\n{"id": "z", "human_label": "B"}\n')
    result = run(str(path), "--labels", str(labels), "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"]["labelled"] == 2 and report["accuracy"] == 0.5
    assert "1 label(s)" in result.stderr


def test_cli_bad_input_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    path.write_text(dump_record(verdict()) + "\n" + '{"id": "x", "winner": "Q"}\n')
    result = run(str(path))
    assert result.exit_code == 2
    assert f"{path}, line 2" in result.stderr

    good = write_verdicts(tmp_path / "good.jsonl", [verdict()])
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "x", "human_label": "A"}\n{"id": "y", "human_label": "maybe"}\n')
    result = run(str(good), "--labels", str(labels))
    assert result.exit_code == 2
    assert f"{labels}, line 2, field 'human_label'" in result.stderr

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert run(str(empty)).exit_code == 2
    assert run(str(tmp_path / "missing.jsonl")).exit_code == 2


def test_cli_delta_needs_target(tmp_path: Path) -> None:
    path = write_verdicts(tmp_path / "v.jsonl", [verdict()])
    assert run(str(path), "--delta", "0.1").exit_code == 2
