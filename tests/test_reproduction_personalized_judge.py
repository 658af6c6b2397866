"""Every Personalized-Judge output file (Dong et al. 2024), imported and reported, against numbers
recomputed here from the file's own rows: their `acc` flag says whether each answer was right.

The expected values use the raw JSON and nothing from the project: a row is decided when its
recorded answer is A or B; its certainty is the recorded 1-100 number ("NA" = missing = 50, as
SPEC 3.1's missing certainty 0.5); high certainty = 80 or more (the paper's Table 2 split, SPEC 4's
default threshold 0.8). Skipped, with the reason, where ../shared/data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibration.report import build_report
from judge.importers import import_verdicts

pytestmark = pytest.mark.shared_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PJ = DATA / "personalized-judge" / "outputs"
FILES = sorted(p.name for p in PJ.glob("*.jsonl"))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def recorded_certainty(row: dict) -> float:
    return 50.0 if row["certainty"] == "NA" else float(row["certainty"])


def expected_numbers(rows: list[dict]) -> dict[str, int]:
    decided = [r for r in rows if r["answer"] in ("A", "B")]
    high = [r for r in decided if recorded_certainty(r) >= 80]
    low = [r for r in decided if recorded_certainty(r) < 80]
    return {
        "items": len(rows),
        "decided": len(decided),
        "correct_no_tie": sum(r["acc"] is True for r in decided),
        "high_n": len(high),
        "high_correct": sum(r["acc"] is True for r in high),
        "low_n": len(low),
        "low_correct": sum(r["acc"] is True for r in low),
    }


def test_every_file_is_here(shared_data: Path) -> None:
    assert len(FILES) == 24  # README: 24 judge-output files


@pytest.mark.parametrize("name", FILES or ["(no files)"])
def test_no_tie_accuracy_and_certainty_split_follow_the_files_acc(shared_data: Path, name: str) -> None:
    path = PJ / name
    expected = expected_numbers(read_rows(path))
    report = build_report(import_verdicts("personalized-judge", [str(path)]), bootstrap_resamples=0)

    counts = report["counts"]
    assert counts["items"] == counts["labelled"] == expected["items"]
    assert counts["decided"] == expected["decided"]
    assert counts["correct_no_tie"] == expected["correct_no_tie"]
    assert report["accuracy_no_tie"] == pytest.approx(expected["correct_no_tie"] / expected["decided"], abs=1e-12)
    high, low = report["high_certainty"], report["low_certainty"]
    assert high["threshold"] == low["threshold"] == 0.8
    assert (high["n"], high["correct"]) == (expected["high_n"], expected["high_correct"])
    assert (low["n"], low["correct"]) == (expected["low_n"], expected["low_correct"])


@pytest.mark.parametrize(
    ("name", "accuracy", "high"),
    [
        ("prism_all_features_command-r-plus.jsonl", 0.720, (133, 149)),  # Tables 1 and 2
        ("ap_all_features_all_features_gpt-4o_jun5.jsonl", 0.946, None),  # Table 1, Public Reddit
    ],
)
def test_published_figures(shared_data: Path, name: str, accuracy: float, high: tuple[int, int] | None) -> None:
    report = build_report(import_verdicts("personalized-judge", [str(PJ / name)]), bootstrap_resamples=0)
    assert round(report["accuracy_no_tie"], 3) == accuracy
    if high is not None:
        assert (report["high_certainty"]["correct"], report["high_certainty"]["n"]) == high
