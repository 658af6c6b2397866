"""Accuracy, Cohen's kappa and Krippendorff's alpha (SPEC 4), against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from calibration.agreement import (
    accuracy,
    accuracy_no_tie,
    agreement_table,
    alpha_of_tables,
    cohen_kappa,
    counts,
    judge_human_alpha,
    kappa_of_tables,
    krippendorff_alpha,
)
from calibration.bootstrap import contingency
from tests.support.verdicts import verdict


def pairs(spec: dict[tuple[str | None, str | None], int]) -> list:
    return [verdict(w, h) for (w, h), k in spec.items() for _ in range(k)]


def test_counts_and_accuracy_by_hand() -> None:
    vs = [
        verdict("A", "A"),  # correct, decided
        verdict("B", "A"),  # wrong, decided
        verdict("tie", "tie"),  # correct, not decided
        verdict(None, "B"),  # null winner: labelled, wrong
        verdict("A", "tie"),  # decided, a tie label is wrong
        verdict("B", None),  # unlabelled: counted, not scored
    ]
    assert counts(vs) == {"items": 6, "labelled": 5, "decided": 3, "correct": 2, "correct_no_tie": 1}
    assert accuracy(vs) == pytest.approx(2 / 5)
    assert accuracy_no_tie(vs) == pytest.approx(1 / 3)


def test_accuracy_is_null_without_labels() -> None:
    vs = [verdict("A", None), verdict("B", None)]
    assert accuracy(vs) is None and accuracy_no_tie(vs) is None
    assert accuracy([]) is None


def test_cohen_kappa_two_categories() -> None:
    # po = 35/50 = 0.7; judge margins 25/25, human 30/20: pe = (25*30 + 25*20)/2500 = 0.5
    vs = pairs({("A", "A"): 20, ("A", "B"): 5, ("B", "A"): 10, ("B", "B"): 15})
    result = cohen_kappa(vs, resamples=200)
    assert result["value"] == pytest.approx(0.4)
    lo, hi = result["ci95"]
    assert lo < 0.4 < hi


def test_cohen_kappa_three_categories_and_null_winner_excluded() -> None:
    # po = 8/10; judge margins A5 B3 tie2, human A5 B4 tie1: pe = (25 + 12 + 2)/100 = 0.39
    vs = pairs({("A", "A"): 4, ("B", "B"): 3, ("tie", "tie"): 1, ("A", "B"): 1, ("tie", "A"): 1})
    vs += pairs({(None, "A"): 3, ("A", None): 2})  # no winner / no label: not in kappa
    assert agreement_table(vs).tolist() == [[4, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert cohen_kappa(vs, resamples=0) == {"value": pytest.approx((0.8 - 0.39) / 0.61), "ci95": None}


def test_alpha_by_hand_matches_package() -> None:
    # coincidences o = T + T': A [8,1,1], B [1,6,0], tie [1,0,2]; n_c = 10, 7, 3; n.. = 20
    # alpha = 1 - (n.. - 1) * 4 / (400 - 100 - 49 - 9) = 1 - 76/242
    vs = pairs({("A", "A"): 4, ("B", "B"): 3, ("tie", "tie"): 1, ("A", "B"): 1, ("tie", "A"): 1})
    expected = 1 - 76 / 242
    assert judge_human_alpha(vs, resamples=0)["value"] == pytest.approx(expected)
    assert float(alpha_of_tables(agreement_table(vs))) == pytest.approx(expected)


def test_closed_form_alpha_agrees_with_krippendorff_package_on_random_tables() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        judge = rng.integers(0, 3, size=60)
        human = np.where(rng.uniform(size=60) < 0.6, judge, rng.integers(0, 3, size=60))
        package = krippendorff_alpha(np.vstack([judge, human]))
        assert float(alpha_of_tables(contingency(judge, human, 3))) == pytest.approx(package)


def test_kappa_of_tables_is_vectorised_and_nan_when_undefined() -> None:
    tables = np.array([[[20, 5, 0], [10, 15, 0], [0, 0, 0]], [[7, 0, 0], [0, 0, 0], [0, 0, 0]]])
    values = kappa_of_tables(tables)
    assert values[0] == pytest.approx(0.4) and math.isnan(values[1])


def test_krippendorff_four_coder_example() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units, nominal 0.743
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    assert krippendorff_alpha(data) == pytest.approx(0.743, abs=5e-4)
    as_text = [[None if v is None else f"c{v}" for v in row] for row in data]
    assert krippendorff_alpha(as_text) == pytest.approx(0.743421, abs=1e-6)
    as_nan = np.array([[np.nan if v is None else v for v in row] for row in data], dtype=float)
    assert krippendorff_alpha(as_nan) == pytest.approx(0.743421, abs=1e-6)


def test_krippendorff_other_levels() -> None:
    # The `krippendorff` package's documented example (Wikipedia): nominal 0.691358, interval 0.810845
    n = None
    data = [
        [n, n, n, n, n, 3, 4, 1, 2, 1, 1, 3, 3, n, 3],
        [1, n, 2, 1, 3, 3, 4, 3, n, n, n, n, n, n, n],
        [n, n, 2, 1, 3, 4, 4, n, 2, 1, 1, 3, 3, n, 4],
    ]
    assert krippendorff_alpha(data) == pytest.approx(0.691358, abs=1e-6)
    assert krippendorff_alpha(data, level="interval") == pytest.approx(0.810845, abs=1e-6)


@pytest.mark.parametrize(
    "data",
    [
        [[1, 1, 1], [1, 1, 1]],  # one value only
        [[1, None, 2], [None, 2, None]],  # no unit with two values
        [[None, None], [None, None]],
    ],
)
def test_krippendorff_degenerate_is_null(data: list) -> None:
    assert krippendorff_alpha(data) is None


def test_degenerate_agreement_does_not_crash() -> None:
    same = [verdict("A", "A") for _ in range(5)]
    assert cohen_kappa(same) == {"value": None, "ci95": None}
    assert judge_human_alpha(same) == {"value": None, "ci95": None}
    assert cohen_kappa([]) == {"value": None, "ci95": None}
    assert judge_human_alpha([verdict("A", None)]) == {"value": None, "ci95": None}
    # Two items: kappa defined, but most resamples are degenerate; no crash either way.
    tiny = cohen_kappa([verdict("A", "A"), verdict("B", "B")], resamples=100)
    assert tiny["value"] == pytest.approx(1.0)


def test_bootstrap_is_seeded() -> None:
    vs = pairs({("A", "A"): 30, ("A", "B"): 8, ("B", "A"): 12, ("B", "B"): 25, ("tie", "tie"): 3})
    assert cohen_kappa(vs, seed=5) == cohen_kappa(vs, seed=5)
    assert cohen_kappa(vs, seed=5)["ci95"] != cohen_kappa(vs, seed=6)["ci95"]
    assert cohen_kappa(vs, resamples=0)["ci95"] is None


def test_multinomial_bootstrap_matches_scipy_item_resampling() -> None:
    """The table-level resampling gives the same percentile interval (up to Monte Carlo error) as
    scipy.stats.bootstrap resampling the items themselves."""
    vs = pairs({("A", "A"): 70, ("A", "B"): 20, ("B", "A"): 30, ("B", "B"): 60, ("tie", "A"): 10, ("A", "tie"): 10})
    ours = cohen_kappa(vs, resamples=4000, seed=1)
    judge = np.array([{"A": 0, "B": 1, "tie": 2}[v.winner] for v in vs])
    human = np.array([{"A": 0, "B": 1, "tie": 2}[v.human_label] for v in vs])

    def kappa(j: np.ndarray, h: np.ndarray, axis: int = -1) -> np.ndarray:
        cells = (j * 3 + h).astype(np.int64)
        onehot = (cells[..., None] == np.arange(9)).sum(axis=-2)
        return kappa_of_tables(onehot.reshape(*onehot.shape[:-1], 3, 3))

    ref = stats.bootstrap(
        (judge, human), kappa, paired=True, vectorized=True, n_resamples=4000, method="percentile",
        rng=np.random.default_rng(2),
    )
    assert ours["ci95"][0] == pytest.approx(ref.confidence_interval.low, abs=0.02)
    assert ours["ci95"][1] == pytest.approx(ref.confidence_interval.high, abs=0.02)
