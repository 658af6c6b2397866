"""Judge cascades keep their promise on recorded judges (scripts/cascade_experiment.py).

The three Trust-or-Escalate judges (Mistral-7B, GPT-3.5-turbo, GPT-4-turbo; 500 Chatbot Arena pairs),
imported with `pjudge import` and joined by id as stages. 200 random half/half calibration/test
splits; targets 0.8, 0.85, 0.9, delta 0.1; every ordered sub-cascade (7) calibrated on one half by
SPEC 4 `cascade` and measured on the other. A split whose cascade accepts nothing meets the target
vacuously (abstaining never breaks the guarantee) and is counted apart.

What is asserted, and why not "every share >= 0.9" on the test halves: the guarantee is about the
distribution the calibration items come from. A test half is 250 items from the same fixed pool, so
its accuracy is noisy (and pessimistic exactly when its calibration half was optimistic). Asserted:
- in the guarantee's own setting (calibration sets drawn i.i.d. from the 500 items, accuracy measured
  on all 500), the share is at least 1 - delta for every target and sub-cascade;
- on the test halves, no share is implausibly low for a valid procedure (P(count or fewer | rate
  0.9) >= 1%), and pooled over the 21 settings the share is at least 1 - delta.
Skipped where ../shared/data is absent; slow (about a minute).
"""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.support.cli import load_script

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

DELTA = 0.1
SPLITS = 200


@pytest.fixture(scope="module")
def experiment() -> ModuleType:
    return load_script("cascade_experiment")


@pytest.fixture(scope="module")
def rows(experiment: ModuleType) -> list:
    folder = experiment.DEFAULT_DATA / "trust-or-escalate" / "result"
    if not folder.is_dir():
        pytest.skip(f"reference data not found at {folder} (research-only, kept outside the repo)")
    stages = experiment.load_stages(experiment.DEFAULT_DATA)
    return experiment.experiment(stages, experiment.DEFAULT_PRICES, splits=SPLITS, delta=DELTA, seed=0)


def test_every_target_and_sub_cascade_is_run(rows: list) -> None:
    names = {r.cascade for r in rows}
    assert len(names) == 7 and len(rows) == 21 and all(r.splits == SPLITS for r in rows)
    assert [r.target for r in rows] == [t for t in (0.8, 0.85, 0.9) for _ in range(7)]


def test_in_the_guarantees_setting_every_share_is_at_least_1_minus_delta(rows: list) -> None:
    for r in rows:
        assert r.iid_share >= 1 - DELTA, f"{r.name} at {r.target}: {r.iid_met}/{r.splits}"


def test_on_test_halves_the_shares_are_those_of_a_valid_procedure(rows: list) -> None:
    for r in rows:
        assert r.p_value >= 0.01, f"{r.name} at {r.target}: only {r.met}/{r.splits} splits met the target"
    assert sum(r.met for r in rows) / sum(r.splits for r in rows) >= 1 - DELTA


def test_it_does_not_meet_the_target_only_by_abstaining(rows: list) -> None:
    at = {(r.target, r.name): r for r in rows}
    gpt4 = at[(0.8, "gpt-4-turbo")]
    assert gpt4.vacuous == 0 and gpt4.mean_coverage > 0.75
    for name in {r.name for r in rows}:
        covered = [at[(t, name)].mean_coverage for t in (0.8, 0.85, 0.9)]
        assert covered[0] >= covered[1] >= covered[2]  # a stricter target keeps less
    for r in rows:
        assert r.mean_accuracy is None or r.vacuous > SPLITS / 2 or r.mean_accuracy >= r.target


def test_a_cheap_first_stage_lowers_the_cost_of_the_strong_judge(rows: list, experiment: ModuleType) -> None:
    at = {(r.target, r.name): r for r in rows}
    cascade = at[(0.8, "gpt-3.5-turbo → gpt-4-turbo")]
    alone = at[(0.8, "gpt-4-turbo")]
    assert cascade.mean_cost < alone.mean_cost and experiment.best_single(rows, 0.8).name == "gpt-4-turbo"
