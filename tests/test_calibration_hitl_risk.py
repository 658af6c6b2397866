"""BPDE human-in-the-loop (SPEC 3.3) and risk-controlled abstention (SPEC 4 risk_control)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy.stats import beta as beta_dist

from calibration.hitl import hitl, hitl_selection
from calibration.risk import clopper_pearson_upper, risk_control
from tests.support.verdicts import synthetic, verdict

# --- HITL -------------------------------------------------------------------------------------------


def test_hitl_ties_in_bpde_keep_input_order() -> None:
    vs = [
        verdict("B", "A", bpde=0.5),  # 0: tied with 2 and 3, first in input order -> sent
        verdict("B", "A", bpde=0.7),  # 1: highest -> sent
        verdict("B", "A", bpde=0.5),  # 2
        verdict("A", "A", bpde=0.5),  # 3
        verdict("B", "A", bpde=0.1),  # 4
        verdict("B", None, bpde=1.1),  # unlabelled: never sent, not in n
    ]
    # n = 5 labelled, floor(0.4 * 5 + 0.5) = 2
    assert hitl_selection(vs, 0.4).tolist() == [1, 0]
    result = hitl(vs, 0.4, resamples=0)
    assert result["beta"] == 0.4 and result["n_sent"] == 2
    assert result["accuracy"] == pytest.approx(3 / 5)  # items 0, 1 fixed, item 3 was right


def test_hitl_null_bpde_goes_to_humans_first() -> None:
    vs = [verdict("B", "A", bpde=0.6), verdict(None, "A", bpde=None), verdict("A", "A", bpde=0.0)]
    assert hitl_selection(vs, 0.5).tolist() == [1, 0]  # floor(1.5 + 0.5) = 2


@pytest.mark.parametrize(("beta", "n", "sent"), [(0.2, 80, 16), (0.1, 5, 1), (0.3, 5, 2), (0.0, 9, 0), (1.0, 7, 7)])
def test_hitl_count_rounds_half_up(beta: float, n: int, sent: int) -> None:
    vs = [verdict("A", "A", bpde=0.1 * (i % 3)) for i in range(n)]
    assert hitl(vs, beta, resamples=0)["n_sent"] == sent


def test_hitl_kappa_after_replacement() -> None:
    # 4 wrong with high BPDE, 6 right: sending the 4 makes every winner right -> kappa 1
    vs = [verdict("B", "A", bpde=0.69) for _ in range(2)] + [verdict("A", "B", bpde=0.69) for _ in range(2)]
    vs += [verdict("A", "A", bpde=0.0) for _ in range(3)] + [verdict("B", "B", bpde=0.0) for _ in range(3)]
    result = hitl(vs, 0.4, resamples=50)
    assert result["n_sent"] == 4 and result["accuracy"] == 1.0
    assert result["cohen_kappa"]["value"] == pytest.approx(1.0)


# --- Clopper-Pearson ------------------------------------------------------------------------------


def test_clopper_pearson_pins() -> None:
    assert clopper_pearson_upper(0, 30, 0.1) == pytest.approx(0.0739, abs=5e-5)
    assert clopper_pearson_upper(0, 30, 0.1) == pytest.approx(1 - 0.1 ** (1 / 30))
    assert clopper_pearson_upper(1, 41, 0.1) == pytest.approx(0.0916, abs=5e-5)
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0
    assert clopper_pearson_upper(np.array([0, 1]), np.array([30, 41]), 0.1) == pytest.approx([0.0739, 0.0916], abs=5e-5)


# --- risk control ----------------------------------------------------------------------------------


@functools.cache
def clopper_pearson_literal(errors: int, n: int, delta: float) -> float:
    """The one-sided upper bound, straight from scipy; cached, since neighbouring candidates of the
    walk below mostly keep the same items (the same n and errors)."""
    return float(beta_dist.ppf(1 - delta, errors + 1, n - errors))


def reference_risk_control(confidence: np.ndarray, correct: np.ndarray, target: float, delta: float) -> dict:
    """SPEC 4 read literally, one candidate at a time (slow, obviously right)."""
    lambdas = np.linspace(0, 1, 5000)
    start = None
    for j in range(4999, -1, -1):
        if (confidence >= round(lambdas[j], 9)).sum() >= 30:
            start = j
            break
    if start is None:
        return {"threshold": None}
    passed = None
    for j in range(start, -1, -1):
        kept = confidence >= round(lambdas[j], 9)
        n, e = int(kept.sum()), int((~correct[kept]).sum())
        bound = 1.0 if e == n else clopper_pearson_literal(e, n, delta)
        if bound > 1 - target:
            break
        passed = (float(lambdas[j]), n, e, float(bound))
    if passed is None:
        return {"threshold": None}
    return dict(zip(("threshold", "accepted", "errors", "bound"), passed, strict=True))


def risk_items(conf_correct: list[tuple[float, bool, int]]) -> list:
    """Verdicts with winner A, p_a = confidence, correct or not, repeated k times."""
    return [verdict("A", "A" if ok else "B", p_a=c) for c, ok, k in conf_correct for _ in range(k)]


def test_risk_control_synthetic_by_hand() -> None:
    # 60 items at confidence 0.95, all right; 40 at 0.6, half wrong.
    vs = risk_items([(0.95, True, 60), (0.6, True, 20), (0.6, False, 20)])
    rc = risk_control(vs, target=0.9, delta=0.1)
    # Start at the highest lambda keeping >= 30 items (the 60 at 0.95; bound 1 - 0.1^(1/60) passes);
    # walking down, the 40 at 0.6 enter at lambda <= 0.6 and 20/100 errors fail. Last pass: the
    # smallest candidate above 0.6, i.e. 3000/4999.
    assert rc == {
        "target": 0.9,
        "delta": 0.1,
        "threshold": pytest.approx(3000 / 4999),
        "accepted": 60,
        "errors": 0,
        "bound": pytest.approx(1 - 0.1 ** (1 / 60)),
        "coverage": 0.6,
        "accuracy": 1.0,
    }


def test_risk_control_null_when_the_first_candidate_fails() -> None:
    vs = risk_items([(0.9, True, 25), (0.9, False, 10)])
    rc = risk_control(vs, target=0.9, delta=0.1)
    assert rc["threshold"] is None and rc["coverage"] == 0.0 and rc["accepted"] == 0
    assert rc["accuracy"] is None
    assert rc["bound"] == pytest.approx(beta_dist.ppf(0.9, 11, 25))  # the bound that failed


def test_risk_control_needs_30_items() -> None:
    rc = risk_control(risk_items([(0.99, True, 29)]), target=0.8, delta=0.1)
    assert rc["threshold"] is None and rc["bound"] is None and rc["coverage"] == 0.0
    assert risk_control(risk_items([(0.99, True, 30)]), target=0.8, delta=0.1)["threshold"] is not None


def test_risk_control_threshold_zero_when_everything_passes() -> None:
    rc = risk_control(risk_items([(0.7, True, 50), (0.9, True, 50)]), target=0.9, delta=0.1)
    assert rc["threshold"] == 0.0 and rc["accepted"] == 100 and rc["coverage"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("target", [0.7, 0.75, 0.8, 0.9])
def test_risk_control_matches_literal_reading(seed: int, target: float) -> None:
    vs = synthetic(400, seed=seed)
    rc = risk_control(vs, target=target, delta=0.1)
    decided = [v for v in vs if v.winner in ("A", "B")]
    confidence = np.round(np.array([max(v.p_a, 1 - v.p_a) for v in decided]), 9)
    correct = np.array([v.winner == v.human_label for v in decided])
    ref = reference_risk_control(confidence, correct, target, 0.1)
    if ref["threshold"] is None:
        assert rc["threshold"] is None
        return
    assert rc["threshold"] == pytest.approx(ref["threshold"])
    assert (rc["accepted"], rc["errors"]) == (ref["accepted"], ref["errors"])
    assert rc["bound"] == pytest.approx(ref["bound"])
    assert rc["coverage"] == pytest.approx(ref["accepted"] / len(decided))
    assert rc["accuracy"] == pytest.approx(1 - ref["errors"] / ref["accepted"])
    assert rc["bound"] <= 1 - target + 1e-12
    assert not math.isnan(rc["bound"])
