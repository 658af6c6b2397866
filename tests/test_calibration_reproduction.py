"""Published numbers reproduced from the reference data in ../shared/data (skipped where absent).

The verdicts are built here from the raw rows with the simplest code, not with `pjudge import`, so
that these tests check the statistics alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calibration.report import build_report
from judge.records import Call, JudgeInfo, Verdict

pytestmark = pytest.mark.shared_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PRISM = DATA / "personalized-judge" / "outputs" / "prism_all_features_command-r-plus.jsonl"
TOE = DATA / "trust-or-escalate" / "result"
CHOICES = {"A": "A", "B": "B", "C": "tie"}


def rows(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (research-only data, kept outside the repo)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def winner_of(p_a: float | None) -> str | None:
    if p_a is None:
        return None
    return "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"


def dong_verdicts(path: Path) -> list[Verdict]:
    """Dong et al. 2024 rows: one call, shown as recorded (A first), no swap."""
    judge = JudgeInfo(profile="persona-certainty", provider="replay", model=path.stem)
    out = []
    for line, row in enumerate(rows(path), start=1):
        choice = CHOICES.get(row["answer"])
        certainty = None if row["certainty"] == "NA" else float(row["certainty"]) / 100
        u = 0.5 if certainty is None else certainty
        vote = {"A": 0.5 + u / 2, "B": 0.5 - u / 2, "tie": 0.5}.get(choice or "")
        p_a = None if vote is None else round(vote, 9)
        out.append(
            Verdict(
                id=f"{path.stem}-{line}",
                winner=winner_of(p_a),
                p_a=p_a,
                certainty=None if p_a is None else round(abs(2 * p_a - 1), 9),
                consistent=None,
                abstained=False,
                bpde=0.0 if choice else None,
                human_label=CHOICES[row["ground_truth"]],
                judge=judge,
                calls=[Call(order="AB", raw=row["answer"], choice=choice, certainty=certainty)],
            )
        )
    return out


def toe_verdicts(path: Path) -> list[Verdict]:
    """Trust or Escalate rows: p_a = probs[0] / (probs[0] + probs[1]); human 1 = A."""
    judge = JudgeInfo(profile="simulated-annotators", provider="replay", model=path.name.split(".")[0])
    out = []
    for line, row in enumerate(rows(path), start=1):
        p0, p1 = row["probs"]
        p_a = round(p0 / (p0 + p1), 9)
        out.append(
            Verdict(
                id=f"{path.stem}-{line}",
                winner=winner_of(p_a),
                p_a=p_a,
                certainty=round(abs(2 * p_a - 1), 9),
                consistent=None,
                abstained=False,
                bpde=None,
                human_label="A" if row["preferences"]["human"] == 1 else "B",
                judge=judge,
                calls=[Call(order=None, choice=winner_of(p_a))],
            )
        )
    return out


def test_dong_prism_command_r_plus() -> None:
    """Dong et al. 2024, Tables 1 and 2: PRISM, Command R+: 0.720; certainty >= 80: 133/149."""
    report = build_report(dong_verdicts(PRISM))
    assert report["counts"] == {"items": 1001, "labelled": 1001, "decided": 1001, "correct": 721, "correct_no_tie": 721}
    assert round(report["accuracy_no_tie"], 3) == 0.720
    high, low = report["high_certainty"], report["low_certainty"]
    assert (high["n"], high["correct"]) == (149, 133)
    assert round(high["accuracy"], 3) == 0.893
    assert (low["n"], low["correct"]) == (852, 588)
    # One order only: no consistency; every call shows A first, so the rate is the share of A answers.
    assert report["position_consistency"] is None
    assert report["first_position_rate"] == pytest.approx(605 / 1001)
    kappa = report["cohen_kappa"]
    assert kappa["value"] == pytest.approx(0.440, abs=5e-4)
    assert kappa["ci95"][0] < kappa["value"] < kappa["ci95"][1]


@pytest.mark.parametrize(
    ("name", "agreement"),
    [("mistral-7b-instruct", 0.750), ("gpt-3.5-turbo", 0.756), ("gpt-4-turbo", 0.784)],
)
def test_trust_or_escalate_agreement_without_abstention(name: str, agreement: float) -> None:
    report = build_report(toe_verdicts(TOE / f"{name}.calibration.jsonl"), bootstrap_resamples=0)
    assert report["counts"]["labelled"] == 500
    assert round(report["accuracy"], 3) == agreement


def test_trust_or_escalate_gpt4_risk_control() -> None:
    """SPEC 4's fixed-sequence rule on GPT-4-turbo's 500 calibration items, delta 0.1.

    At target 0.85 a threshold passes (356 accepted, 44 errors, coverage 0.712). At target 0.9 the
    starting candidate already fails: the top candidate keeping >= 30 items, 0.9998, keeps 139 items
    with 10 errors, whose upper bound 0.1087 exceeds 0.1; without the upstream code's fallback the
    threshold is null and coverage 0. (The paper's 0.9 comes from a cascade over ~5.2k items.)
    """
    vs = toe_verdicts(TOE / "gpt-4-turbo.calibration.jsonl")
    rc85 = build_report(vs, target_accuracy=0.85, delta=0.1, bootstrap_resamples=0)["risk_control"]
    assert rc85["threshold"] == pytest.approx(0.91218, abs=1e-5)
    assert (rc85["accepted"], rc85["errors"]) == (356, 44)
    assert rc85["coverage"] == pytest.approx(0.712)
    assert rc85["bound"] <= 0.15
    assert rc85["accuracy"] >= 0.85

    rc80 = build_report(vs, target_accuracy=0.8, delta=0.1, bootstrap_resamples=0)["risk_control"]
    assert rc80["threshold"] is not None and rc80["coverage"] == pytest.approx(0.878)

    rc90 = build_report(vs, target_accuracy=0.9, delta=0.1, bootstrap_resamples=0)["risk_control"]
    assert rc90["threshold"] is None
    assert rc90["coverage"] == 0.0 and rc90["accepted"] == 0
    assert rc90["bound"] == pytest.approx(0.10868, abs=1e-4)
