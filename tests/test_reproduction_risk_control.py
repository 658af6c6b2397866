"""The risk-controlled threshold keeps its promise on recorded judges (scripts/risk_control_experiment.py).

200 calibration sets drawn with replacement from the Trust-or-Escalate GPT-4-turbo file and from a
Personalized-Judge PRISM file; on each, SPEC 4's fixed-sequence rule (delta 0.1) picks a threshold
whose accuracy is then measured on the whole file. At targets 0.8, 0.85 and 0.9 the share of draws
meeting the target (abstaining on everything counts) should be at least 0.9. With 200 draws that share
is itself an estimate (standard error about 0.02), so the test fails when the count is implausibly low
for a procedure meeting it: P(count or fewer | rate 0.9) < 1%. Skipped where ../shared/data is absent.
"""

from __future__ import annotations

import pytest

from tests.support.cli import load_script

# slow: the module's fixture runs the experiment, 1,200 Clopper-Pearson searches (seconds of CPU), for
# whichever of its tests runs first
pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

DELTA = 0.1
DRAWS = 200


@pytest.fixture(scope="module")
def rows() -> list:
    experiment = load_script("risk_control_experiment")
    if not experiment.DEFAULT_DATA.is_dir():
        pytest.skip(f"reference data not found at {experiment.DEFAULT_DATA} (research-only, kept outside the repo)")
    out = []
    for name in experiment.FILES:
        table = experiment.load_table(experiment.DEFAULT_DATA, name)
        out += experiment.experiment(table, name, draws=DRAWS, delta=DELTA, seed=0)
    return out


def test_every_file_and_target_is_run(rows: list) -> None:
    assert [(r.file, r.target) for r in rows] == [
        (f, t) for f in ("toe-gpt-4-turbo", "pj-prism-command-r-plus") for t in (0.8, 0.85, 0.9)
    ]
    assert all(r.draws == DRAWS for r in rows)


def test_the_target_is_met_on_at_least_1_minus_delta_of_the_draws(rows: list) -> None:
    for r in rows:
        assert r.p_value >= 0.01, f"{r.file} at {r.target}: only {r.met}/{r.draws} draws met the target"
    # Pooled over the six settings (1,200 draws) the share is estimated to about +-0.009.
    assert sum(r.met for r in rows) / sum(r.draws for r in rows) >= 1 - DELTA


def test_it_does_not_meet_the_target_by_abstaining(rows: list) -> None:
    """Abstaining on everything always 'meets' the target; the threshold must also keep items."""
    toe = {r.target: r for r in rows if r.file == "toe-gpt-4-turbo"}
    assert toe[0.8].abstained_all == 0 and toe[0.8].mean_coverage > 0.8
    assert toe[0.85].mean_coverage > 0.5
    # Coverage falls as the target rises, and what is kept is accurate.
    for name in ("toe-gpt-4-turbo", "pj-prism-command-r-plus"):
        mine = [r for r in rows if r.file == name]
        assert mine[0].mean_coverage > mine[1].mean_coverage > mine[2].mean_coverage
        assert all(r.mean_accuracy is None or r.mean_accuracy >= r.target for r in mine)


def test_the_fixed_threshold_promises_nothing(rows: list) -> None:
    """Certainty >= 0.8 keeps the same items whatever the target, so at 0.9 it falls short on both."""
    for r in rows:
        if r.target == 0.9:
            assert r.fixed_accuracy < 0.9
    toe = {r.target: r for r in rows if r.file == "toe-gpt-4-turbo"}
    assert toe[0.8].fixed_coverage == pytest.approx(toe[0.9].fixed_coverage)
