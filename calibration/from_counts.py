"""The SPEC 4 report from Counts (calibration.counts): every statistic's formula, once.

`pjudge report` (calibration.report.build_report, counts projected from the verdicts in memory),
the API's job report and /v1/stats/agreement (store.stats, counts summed in SQL) all call
`report_from_counts`, so that a number means the same everywhere by construction. The per-statistic
functions of calibration.agreement, .bias, .certainty, .hitl and .risk are these same functions
applied to the Counts of a list of verdicts.

Two steps need more than the counts, both resolved by the caller: the certainty split at a
threshold off the 0.01 grid needs the split itself (`Counts.split`), and the HITL selection at a
BPDE value shared across the cut needs the first m items of that value in input order (`Cut`,
`Boundaries`). `coverage_auc` needs every distinct certainty level: the in-memory caller passes it.

No import of store/ or api/.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
from scipy.stats import beta as beta_dist

from calibration.bootstrap import value_with_interval
from calibration.counts import (
    CANDIDATES,
    COVERAGE_THRESHOLDS,
    BpdeKey,
    Counts,
    IntArray,
    grid_index,
    hitl_n_sent,
    hitl_order,
)
from calibration.table import NAMES, ratio

DEFAULT_DELTA = 0.1  # Jung et al. 2024's delta, used when only a target accuracy is given
MIN_ACCEPTED = 30
BOOTSTRAP_METHOD = "percentile; items resampled with replacement (multinomial on the judge x human table)"

Cut = tuple[BpdeKey, int]
"""Where a HITL selection cuts through the labelled items sharing a BPDE value: (the value, m), the
selection takes the first m of them in input order."""
Boundaries = Callable[[Mapping[str | None, Cut]], Mapping[str | None, IntArray]]
"""{set (None: all the verdicts, else a group name): its cut} -> {set: the 4 x 3 winner x label
counts of the m items the cut takes}. One call for every set of a report, so that the caller can
resolve them together."""
_ABSENT: Any = object()


# ---------------------------------------------------------------- agreement

def counts_summary(c: Counts) -> dict[str, int]:
    """SPEC 4 `counts`: the parts of `accuracy` (correct / labelled) and `accuracy_no_tie`
    (correct_no_tie / decided)."""
    confusion = c.confusion
    return {
        "items": c["items"],
        "labelled": int(confusion[:, :3].sum()),
        "decided": int(confusion[:2, :3].sum()),
        "correct": int(np.trace(confusion[:3, :3])),
        "correct_no_tie": int(confusion[0, 0] + confusion[1, 1]),
    }


def accuracy(c: Counts) -> float | None:
    """Over labelled items, winner == label; a null winner is wrong. None without labels."""
    parts = counts_summary(c)
    return ratio(parts["correct"], parts["labelled"])


def accuracy_no_tie(c: Counts) -> float | None:
    """Over labelled items with winner A or B; a tie label is wrong. None when there are none."""
    parts = counts_summary(c)
    return ratio(parts["correct_no_tie"], parts["decided"])


def agreement_table(c: Counts) -> IntArray:
    """3 x 3 counts, rows = judge winner, columns = human label, in the order A, B, tie: the
    labelled items with a winner, which kappa and alpha are over."""
    return c.confusion[:3, :3]


def kappa_of_tables(tables: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Cohen's kappa of (..., K, K) count tables; NaN where undefined (chance agreement = 1).

    Computed on integers, (n * trace - sum r c) / (n^2 - sum r c), so that "undefined" is an exact
    zero test rather than a float comparison.
    """
    t = tables.astype(np.int64)
    n = t.sum(axis=(-2, -1))
    agree = np.trace(t, axis1=-2, axis2=-1)
    chance = (t.sum(axis=-1) * t.sum(axis=-2)).sum(axis=-1)
    num = n * agree - chance
    den = n * n - chance
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def alpha_of_tables(tables: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Nominal Krippendorff's alpha for two coders who both rated every unit, from (..., K, K) tables.

    Coincidence matrix o = T + T'; with n.. = 2n pairable values and n_c its margins,
    alpha = 1 - (n.. - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k. This is what the `krippendorff`
    package computes for such data (tests/test_calibration_agreement.py checks it on random tables);
    the closed form is what the bootstrap needs.
    """
    t = tables.astype(np.int64)
    n = t.sum(axis=(-2, -1))
    disagree = 2 * (n - np.trace(t, axis1=-2, axis2=-1))
    margins = t.sum(axis=-1) + t.sum(axis=-2)
    total = 2 * n
    expected = total * total - (margins * margins).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(expected > 0, 1.0 - (total - 1) * disagree / np.where(expected > 0, expected, 1), np.nan)


def cohen_kappa(c: Counts, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: Cohen's kappa over {A, B, tie} on labelled items with a winner."""
    return value_with_interval(agreement_table(c), kappa_of_tables, resamples, seed)


def krippendorff_alpha(c: Counts, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: nominal Krippendorff's alpha, judge and human as two coders (the same
    resamples as kappa's for the same seed)."""
    return value_with_interval(agreement_table(c), alpha_of_tables, resamples, seed)


def confusion(c: Counts) -> dict[str, dict[str, int]]:
    """Judge winner (outer key) x human label (inner key) over labelled items with a winner."""
    table = agreement_table(c)
    return {judge: {human: int(table[i, j]) for j, human in enumerate(NAMES)} for i, judge in enumerate(NAMES)}


# ---------------------------------------------------------------- certainty

def _side(threshold: float, n_labelled_correct: IntArray) -> dict[str, Any]:
    n, labelled, correct = (int(v) for v in n_labelled_correct)
    return {"threshold": threshold, "n": n, "labelled": labelled, "correct": correct,
            "accuracy": ratio(correct, labelled)}


def certainty_split(c: Counts, threshold: float = 0.8) -> tuple[dict[str, Any], dict[str, Any]]:
    """(high_certainty, low_certainty) at `threshold`, inclusive on the high side.

    `n` counts items with winner A or B on that side (labelled or not, so an unlabelled job still shows
    how many verdicts are confident); `labelled` those with a human label; `correct` those whose winner
    equals the label; `accuracy` = correct / labelled (null without labelled items). Items with a
    winner but no certainty at all (neither certainty nor p_a) are on neither side.
    """
    if c.split is not None:
        high, low = c.split
    else:
        k = grid_index(threshold)
        if k is None:
            raise ValueError(f"threshold {threshold} is not on the certainty grid; pass Counts.split")
        high = c.certainty_ge[k + 1]
        low = c.certainty_ge[0] - high
    return _side(threshold, high), _side(threshold, low)


def coverage_curve(c: Counts) -> list[dict[str, Any]]:
    """[{threshold, coverage, accuracy, n}]: coverage = share of decided items with certainty >= the
    threshold, accuracy among those (null where none), n = how many those are."""
    decided = counts_summary(c)["decided"]
    out = []
    for threshold in COVERAGE_THRESHOLDS:
        k = grid_index(threshold)
        assert k is not None
        kept = c.certainty_ge[k + 1]
        n, correct = int(kept[1]), int(kept[2])
        out.append({"threshold": threshold, "coverage": ratio(n, decided), "accuracy": ratio(correct, n), "n": n})
    return out


def reliability_from_bins(n_bin: npt.NDArray[Any], conf_sum: npt.NDArray[Any],
                          correct_sum: npt.NDArray[Any]) -> tuple[float | None, list[dict[str, Any]]]:
    """(ECE, reliability table) from per-bin counts, confidence sums and correct counts.

    ECE = sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|; bins are equal-width
    over [0.5, 1] (calibration.counts.ece_bin).
    """
    bins = len(n_bin)
    total = int(np.sum(n_bin))
    table = []
    ece = 0.0
    width = 0.5 / bins
    for b in range(bins):
        n = int(n_bin[b])
        mean_conf = float(conf_sum[b]) / n if n else None
        acc = float(correct_sum[b]) / n if n else None
        if mean_conf is not None and acc is not None:
            ece += n / total * abs(acc - mean_conf)
        table.append({"lo": round(0.5 + b * width, 6), "hi": round(0.5 + (b + 1) * width, 6), "n": n,
                      "confidence": mean_conf, "accuracy": acc})
    return (float(ece) if total else None), table


def reliability(c: Counts) -> tuple[float | None, list[dict[str, Any]]]:
    """(ECE, reliability table) over decided items, confidence max(p_a, 1 - p_a)."""
    return reliability_from_bins(c.ece[:, 0], c.ece_confidence, c.ece[:, 1])


def brier(c: Counts) -> float | None:
    """Mean of (p_a - 1[label = A])^2 over items labelled A or B that have a p_a."""
    return c.brier_sum / c["brier_n"] if c["brier_n"] else None


def abstention(c: Counts) -> dict[str, Any]:
    """How the profile's own certainty threshold did: decided items it kept, and their accuracy."""
    return {
        "abstained": c["abstained"],
        "coverage": ratio(c["kept"], counts_summary(c)["decided"]),
        "accuracy": ratio(c["kept_correct"], c["kept"]),
    }


# ---------------------------------------------------------------- position and length

def position_consistency(c: Counts) -> float | None:
    """Over items with calls in both orders, the share whose first samples agree as win/tie/lose
    for A (an unparsed first sample disagrees). None when no item was judged in both orders."""
    return ratio(c["pos_agree"], c["pos_both"])


class PositionFigures(TypedDict):
    calls: int
    first: int
    second: int
    tie: int
    rate: float | None
    rate_no_tie: float | None


def position_figures(first: int, second: int, tie: int) -> PositionFigures:
    """Parsed calls that know their order, by the position of the answer they chose.

    `rate` (SPEC 4 `first_position_rate`: "share of parsed calls choosing the answer shown first")
    keeps tie calls in the denominator, as the SPEC's wording says; so with ties its unbiased value
    is below 0.5. `rate_no_tie` drops them, where 0.5 means no position bias.
    """
    return {
        "calls": first + second + tie,
        "first": first,
        "second": second,
        "tie": tie,
        "rate": ratio(first, first + second + tie),
        "rate_no_tie": ratio(first, first + second),
    }


def position_counts(c: Counts) -> PositionFigures:
    return position_figures(c["calls_first"], c["calls_second"], c["calls_tie"])


def prefers_longer(c: Counts) -> float | None:
    """Share of decided items whose winner is the longer response, among pairs whose lengths differ
    by more than 30 characters. None when no such pair."""
    return ratio(c["len_decided_longer"], c["len_decided"])


class LengthFigures(TypedDict):
    pairs: int
    judge_prefers_longer: float | None
    labelled_pairs: int
    human_prefers_longer: float | None


def length_counts(c: Counts) -> LengthFigures:
    """The judge's prefers_longer (over items with winner A or B) beside the humans' own rate on
    the same kind of pairs, since humans often prefer the longer answer too."""
    return {
        "pairs": c["len_pairs"],
        "judge_prefers_longer": ratio(c["len_pairs_longer"], c["len_pairs"]),
        "labelled_pairs": c["len_labelled"],
        "human_prefers_longer": ratio(c["len_labelled_longer"], c["len_labelled"]),
    }


# ---------------------------------------------------------------- HITL (SPEC 3.3)

def _hitl_walk(c: Counts, beta: float) -> tuple[int, int, IntArray, Cut | None]:
    """(labelled, n_sent, counts of the whole BPDE values selected, the cut or None)."""
    labelled = counts_summary(c)["labelled"]
    n_sent = hitl_n_sent(beta, labelled)
    selected = np.zeros((4, 3), dtype=np.int64)
    remaining = n_sent
    for key in hitl_order(c.hitl):
        if remaining <= 0:
            break
        cells = c.hitl[key]
        size = int(cells.sum())
        if size > remaining:
            return labelled, n_sent, selected, (key, remaining)
        selected += cells
        remaining -= size
    return labelled, n_sent, selected, None


def hitl_cut(c: Counts, beta: float) -> Cut | None:
    """Where the HITL selection at beta cuts through a BPDE value, if it does."""
    return _hitl_walk(c, beta)[3]


def hitl(c: Counts, beta: float = 0.2, cut_items: IntArray | None = None, resamples: int = 1000,
         seed: int = 0) -> dict[str, Any]:
    """{beta, n_sent, accuracy, cohen_kappa} after the BPDE selection got their human labels (their
    winners become their labels). accuracy is SPEC 4's `accuracy`, cohen_kappa has the top-level
    one's shape. `cut_items`: the 4 x 3 counts of the items the selection takes from the BPDE value
    it cuts through (see `hitl_cut`), when it cuts through one."""
    labelled, n_sent, selected, cut = _hitl_walk(c, beta)
    if cut is not None:
        if cut_items is None or int(cut_items.sum()) != cut[1]:
            raise ValueError(f"the HITL cut at BPDE {cut[0]} needs its first {cut[1]} items")
        selected = selected + cut_items
    table = c.confusion[:3, :3] - selected[:3] + np.diag(selected.sum(axis=0))
    correct = int(np.trace(c.confusion[:3, :3]) - np.trace(selected[:3]) + selected.sum())
    return {
        "beta": beta,
        "n_sent": n_sent,
        "accuracy": ratio(correct, labelled),
        "cohen_kappa": value_with_interval(table, kappa_of_tables, resamples, seed),
    }


# ---------------------------------------------------------------- risk control

def clopper_pearson_upper(errors: Any, n: Any, delta: float) -> Any:
    """One-sided Clopper-Pearson upper bound at level 1 - delta on an error rate:
    Beta^-1(1 - delta; errors + 1, n - errors); 1.0 where every item is an error (or n = 0).
    Works elementwise on arrays."""
    errors = np.asarray(errors, dtype=float)
    n = np.asarray(n, dtype=float)
    b = n - errors
    valid = b > 0
    bound = np.where(valid, beta_dist.ppf(1.0 - delta, errors + 1.0, np.where(valid, b, 1.0)), 1.0)
    return float(bound) if bound.ndim == 0 else bound


def clopper_pearson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Two-sided Clopper-Pearson interval at `level` on a proportion: [Beta^-1(a/2; x, n - x + 1),
    Beta^-1(1 - a/2; x + 1, n - x)] with a = 1 - level, 0 where x = 0 and 1 where x = n; (None, None)
    for n = 0."""
    if n == 0:
        return None, None
    alpha = 1.0 - level
    lo = 0.0 if successes == 0 else float(beta_dist.ppf(alpha / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta_dist.ppf(1 - alpha / 2, successes + 1, n - successes))
    return lo, hi


def risk_from_candidates(accepted: IntArray, errors: IntArray, decided: int, target: float,
                         delta: float = DEFAULT_DELTA, min_accepted: int = MIN_ACCEPTED) -> dict[str, Any]:
    """SPEC 4 `risk_control`, the fixed-sequence rule of Jung et al. 2024 ("Trust or Escalate")
    without their code's fallback of keeping a failing top threshold, from each candidate lambda's
    accepted and error counts (candidates = linspace(0, 1, len(accepted)), ascending); `decided` is
    the coverage denominator.

    Start at the highest lambda whose accepted set holds `min_accepted` items, walk down, stop at the
    first lambda whose bound exceeds 1 - target; the threshold is the last lambda that passed. With
    a null threshold nothing is accepted (coverage 0, accuracy null) and `bound` is the one that
    failed at the starting lambda (null when no lambda holds `min_accepted` items); `reason` then
    says which case it was.
    """
    lambdas = np.linspace(0.0, 1.0, len(accepted))
    result: dict[str, Any] = {"target": target, "delta": delta, "threshold": None, "accepted": 0, "errors": 0,
                              "bound": None, "coverage": 0.0, "accuracy": None}
    eligible = np.flatnonzero(accepted >= min_accepted)  # a prefix: accepted shrinks as lambda grows
    if eligible.size == 0:
        result["reason"] = f"fewer than {min_accepted} labelled decided items"
        return result
    start = int(eligible[-1])
    bounds = clopper_pearson_upper(errors[: start + 1], accepted[: start + 1], delta)
    failing = np.flatnonzero(bounds > 1.0 - target)
    if failing.size and failing[-1] == start:
        result["bound"] = float(bounds[start])
        result["reason"] = "the bound fails already at the starting threshold"
        return result
    chosen = int(failing[-1]) + 1 if failing.size else 0
    n, e = int(accepted[chosen]), int(errors[chosen])
    result.update(threshold=float(lambdas[chosen]), accepted=n, errors=e, bound=float(bounds[chosen]),
                  coverage=ratio(n, decided), accuracy=1.0 - e / n)
    return result


def risk_from_histogram(histogram: IntArray, decided: int, target: float, delta: float = DEFAULT_DELTA,
                        min_accepted: int = MIN_ACCEPTED) -> dict[str, Any]:
    """`risk_from_candidates` from a lambda histogram (calibration.counts.risk_histogram: row 0 holds
    confidences below the first candidate): candidate i accepts the confidences in bins >= i."""
    suffix = np.cumsum(histogram[1:][::-1], axis=0)[::-1]
    return risk_from_candidates(suffix[:, 0], suffix[:, 1], decided, target, delta, min_accepted)


def risk_control(c: Counts, target: float, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """SPEC 4 `risk_control` over SPEC 4's 5,000 candidates; coverage over decided items."""
    assert c.risk.shape[0] == CANDIDATES + 1
    return risk_from_histogram(c.risk, counts_summary(c)["decided"], target, delta)


# ---------------------------------------------------------------- the report

def statistics_from_counts(
    c: Counts,
    cut_items: IntArray | None = None,
    threshold: float = 0.8,
    hitl: float | None = 0.2,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    coverage_auc: Any = _ABSENT,
) -> dict[str, Any]:
    """The SPEC 4 numbers of one set of verdicts (no by_group), followed by extras. `cut_items`: see
    `hitl`; hitl None leaves `hitl` out (for Counts without the BPDE table, e.g. a day's).
    `coverage_auc`: the extra only the verdicts can give (left out when not passed)."""
    parts = counts_summary(c)
    high, low = certainty_split(c, threshold)
    ece, reliability_table = reliability(c)
    out: dict[str, Any] = {
        "accuracy": ratio(parts["correct"], parts["labelled"]),
        "accuracy_no_tie": ratio(parts["correct_no_tie"], parts["decided"]),
        "counts": parts,
        "cohen_kappa": cohen_kappa(c, bootstrap_resamples, seed),
        "krippendorff_alpha": krippendorff_alpha(c, bootstrap_resamples, seed),
        "high_certainty": high,
        "low_certainty": low,
        "coverage_curve": coverage_curve(c),
        "ece": ece,
        "brier": brier(c),
        "position_consistency": position_consistency(c),
        "first_position_rate": None,
        "prefers_longer": prefers_longer(c),
    }
    if hitl is not None:
        out["hitl"] = _hitl_of(c, hitl, cut_items, bootstrap_resamples, seed)
    first = position_counts(c)
    out["first_position_rate"] = first["rate"]
    if target_accuracy is not None:
        out["risk_control"] = risk_control(c, target_accuracy, DEFAULT_DELTA if delta is None else delta)
    # Extras, beyond SPEC 4's keys.
    if coverage_auc is not _ABSENT:
        out["coverage_auc"] = coverage_auc
    out["reliability"] = reliability_table
    out["first_position"] = first
    out["length"] = length_counts(c)
    out["abstention"] = abstention(c)
    out["confusion"] = confusion(c)
    return out


_hitl_of = hitl


def report_from_counts(
    total: Counts,
    boundaries: Boundaries,
    models: Iterable[str],
    by_group: Mapping[str, Counts] | None = None,
    group_by: str | None = None,
    threshold: float = 0.8,
    hitl: float = 0.2,
    target_accuracy: float | None = None,
    delta: float | None = None,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    coverage_auc: Mapping[str | None, float | None] | None = None,
) -> dict[str, Any]:
    """The SPEC 4 report: `total` for everything, `by_group` per group name (groups without items
    are left out), `boundaries` the resolver of the HITL cuts (see `Boundaries`), `models` the judge
    models of the verdicts, `coverage_auc` per set when the caller has it. by_group when
    `group_by` is given, risk_control when `target_accuracy` is (delta defaults to 0.1); extras:
    `simulated` (any judge model starts with "sim-"), `models`, the bootstrap settings, the full
    reliability table, position and length counts, abstention, the confusion table. Values are
    JSON-serialisable and never NaN (undefined = None)."""
    threshold, hitl = threshold + 0.0, hitl + 0.0  # an option of -0 is 0, and echoed as 0.0
    sets: dict[str | None, Counts] = {None: total}
    if group_by is not None:
        sets.update((name, counts) for name, counts in sorted((by_group or {}).items()) if counts["items"] > 0)
    cuts = {name: cut for name, counts in sets.items() if (cut := hitl_cut(counts, hitl)) is not None}
    taken = boundaries(cuts) if cuts else {}

    def of(name: str | None) -> dict[str, Any]:
        auc = _ABSENT if coverage_auc is None else coverage_auc.get(name)
        return statistics_from_counts(sets[name], taken.get(name), threshold=threshold, hitl=hitl,
                                      target_accuracy=target_accuracy, delta=delta,
                                      bootstrap_resamples=bootstrap_resamples, seed=seed, coverage_auc=auc)

    report = of(None)
    if group_by is not None:
        report["by_group"] = {name: of(name) for name in sets if name is not None}
        report["group_by"] = group_by
    names = sorted(set(models))
    report["simulated"] = any(name.startswith("sim-") for name in names)
    report["models"] = names
    report["bootstrap"] = {"resamples": bootstrap_resamples, "seed": seed, "method": BOOTSTRAP_METHOD}
    out: dict[str, Any] = json_safe(report)
    return out


def json_safe(value: Any) -> Any:
    """Plain Python types only, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
