#!/usr/bin/env python
"""Does a calibrated judge cascade (SPEC 4 `cascade`) keep its promise on recorded judges?

The Trust-or-Escalate files of Jung et al. 2024 hold three judges' confidences (Mistral-7B-Instruct,
GPT-3.5-turbo, GPT-4-turbo) on the same 500 Chatbot Arena pairs, each with one human vote. They are
imported with `pjudge import trust-or-escalate` (ids toe-<line>, so the three files join by id). For
each of `--splits` random calibration/test splits (half and half, seeded) and each target accuracy T
(delta 0.1), every ordered sub-cascade of the three judges (7 of them, the three single judges
included) gets its thresholds from the calibration half; the test half then says how accurate the
accepted items are, how many are accepted and what the judging costs per item.

The guarantee says accuracy >= T on accepted items with probability >= 1 - delta. A split whose
cascade accepts no test item never violates it (abstaining on everything is always allowed): such
splits count as meeting the target and are reported separately (`vacuous`) so that they hide
nothing. The guarantee is about the distribution the calibration items are drawn from; the test half
is 250 items, so its accuracy is itself noisy, and being the complement of the calibration half in a
fixed pool of 500 it is pessimistic exactly when the calibration half was optimistic. A share a little
under 1 - delta is therefore possible for a valid procedure; `P(<= met)` is the chance of so few
successes if each split met the target with probability exactly 1 - delta.

Beside it, the setting of the guarantee itself (`iid`): the population is the 500 items, the
calibration set is 250 draws from it with replacement (i.i.d., as the theorem assumes), and the truth
is the accuracy on accepted items of the whole population, measured without test-set noise. There the
share must be at least 1 - delta up to the 200 draws' own noise (standard error about 0.02).

Costs: the recorded files carry no cost, so each judge has a price per item (`--price NAME=USD`).
Defaults: list prices per million input tokens in 2024 (OpenAI: gpt-4-turbo-2024-04-09 $10,
gpt-3.5-turbo-0125 $0.50; Mistral AI: open-mistral-7b $0.25) times an estimated 10,200 input tokens
per item: Simulated Annotators as released (data/split/fewshot.jsonl) sends 3 annotators x 2 orders =
6 prompts, each with 3 demonstrations (about 4,400 characters on average) and the pair itself (1,905
characters on average on these 500 items), about 6,800 characters or 1,700 tokens at 4 characters
per token; the answer is one token read through its log-probabilities (output cost ignored). Only the
ratios matter for the comparison: GPT-4-turbo costs 20 times GPT-3.5-turbo and 40 times Mistral-7B.

    python scripts/cascade_experiment.py [--splits 200] [--seed 0] [--delta 0.1] [--json]
        [--price mistral-7b-instruct=0.00255 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from calibration.cascade import Stages, StageVerdicts, apply, calibrate, join_stages, sub_cascades  # noqa: E402
from judge.importers import import_verdicts  # noqa: E402
from scripts.risk_control_experiment import DEFAULT_DATA, TARGETS  # noqa: E402

JUDGES = ("mistral-7b-instruct", "gpt-3.5-turbo", "gpt-4-turbo")  # cheap to strong, the paper's order
TOKENS_PER_ITEM = 10_200  # see the module docstring
USD_PER_MTOK = {"mistral-7b-instruct": 0.25, "gpt-3.5-turbo": 0.50, "gpt-4-turbo": 10.0}
DEFAULT_PRICES = {name: round(TOKENS_PER_ITEM * usd / 1e6, 6) for name, usd in USD_PER_MTOK.items()}
# ../shared/data/README.md (Jung et al. 2024, Chatbot Arena, delta 0.1; Figure 4): the cascade
# Mistral-7B -> GPT-3.5 -> GPT-4 on the paper's ~5.2k items (not only these 500), and each judge's
# agreement on these 500 items without abstention.
PAPER_CASCADE_COVERAGE = {0.8: 0.791, 0.85: 0.632, 0.9: 0.481}
PAPER_GPT4_NO_ABSTENTION = 0.778
PAPER_AGREEMENT = {"mistral-7b-instruct": 0.750, "gpt-3.5-turbo": 0.756, "gpt-4-turbo": 0.784}
PAPER_SUCCESS_085 = 0.910  # Table 3 (target 0.85): share of 1,000 splits meeting the target (PROVENANCE.md)


def load_stages(data: Path) -> Stages:
    folder = data / "trust-or-escalate" / "result"
    stages = []
    for name in JUDGES:
        path = folder / f"{name}.calibration.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"reference data not found at {path}")
        stages.append(StageVerdicts(name=name, source=str(path), verdicts=import_verdicts("trust-or-escalate",
                                                                                         [str(path)])))
    return join_stages(stages)


@dataclass(frozen=True)
class Row:
    target: float
    cascade: tuple[str, ...]
    splits: int
    met: int  # splits whose test accuracy on accepted items reached the target (vacuous ones included)
    vacuous: int  # splits whose cascade accepted no test item
    mean_coverage: float  # over all splits, 0 for the vacuous ones
    mean_accuracy: float | None  # over the splits that accepted something
    mean_cost: float  # USD per item on the test half
    iid_met: int  # i.i.d. calibration draws whose population accuracy on accepted items reached the target
    iid_vacuous: int  # ... whose cascade accepted nothing
    iid_mean_coverage: float  # population coverage, mean over the draws
    delta: float

    @property
    def met_share(self) -> float:
        return self.met / self.splits

    @property
    def p_value(self) -> float:
        """P(met or fewer splits meet the target | each meets it with probability exactly 1 - delta)."""
        return float(binom.cdf(self.met, self.splits, 1.0 - self.delta))

    @property
    def iid_share(self) -> float:
        return self.iid_met / self.splits

    @property
    def iid_p_value(self) -> float:
        return float(binom.cdf(self.iid_met, self.splits, 1.0 - self.delta))

    @property
    def name(self) -> str:
        return " → ".join(self.cascade)


def splits_of(n: int, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` random (calibration, test) halves of n items; every target and cascade sees the same."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        order = rng.permutation(n)
        out.append((np.sort(order[: n // 2]), np.sort(order[n // 2:])))
    return out


def draws_of(n: int, count: int, seed: int) -> list[np.ndarray]:
    """`count` calibration sets of n // 2 items drawn from the n with replacement (the i.i.d. check)."""
    rng = np.random.default_rng([seed, 1])
    return [rng.integers(0, n, n // 2) for _ in range(count)]


def experiment(stages: Stages, prices: Mapping[str, float], targets: Sequence[float] = TARGETS,
               splits: int = 200, delta: float = 0.1, seed: int = 0) -> list[Row]:
    """One Row per (target, sub-cascade), in target order then sub-cascade order (shortest first)."""
    halves = splits_of(len(stages), splits, seed)
    draws = [stages.take(d) for d in draws_of(len(stages), splits, seed)]
    rows = []
    for target in targets:
        for combo in sub_cascades(len(stages.names)):
            sub = stages.select(combo)
            costs = [prices[name] for name in sub.names]
            met = vacuous = 0
            coverages, accuracies, spent = [], [], []
            for calibration_rows, test_rows in halves:
                thresholds = calibrate(sub, target, delta, rows=calibration_rows).thresholds
                outcome = apply(sub, thresholds, rows=test_rows)
                accuracy = outcome.accuracy
                vacuous += accuracy is None
                met += accuracy is None or accuracy >= target
                coverages.append(outcome.coverage)
                spent.append(outcome.cost_per_item(costs))
                if accuracy is not None:
                    accuracies.append(accuracy)
            iid_met = iid_vacuous = 0
            iid_coverages = []
            for drawn in draws:
                population = apply(sub, calibrate(drawn.select(combo), target, delta).thresholds)
                iid_vacuous += population.accuracy is None
                iid_met += population.accuracy is None or population.accuracy >= target
                iid_coverages.append(population.coverage)
            rows.append(Row(target=target, cascade=sub.names, splits=splits, met=met, vacuous=vacuous,
                            mean_coverage=float(np.mean(coverages)),
                            mean_accuracy=float(np.mean(accuracies)) if accuracies else None,
                            mean_cost=float(np.mean(spent)), iid_met=iid_met, iid_vacuous=iid_vacuous,
                            iid_mean_coverage=float(np.mean(iid_coverages)), delta=delta))
    return rows


def best_single(rows: Sequence[Row], target: float) -> Row:
    """The single judge covering most at this target (same guarantee); the cheaper one on a tie."""
    singles = [r for r in rows if r.target == target and len(r.cascade) == 1]
    return max(singles, key=lambda r: (r.mean_coverage, -r.mean_cost))


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(rows: Sequence[Row], prices: Mapping[str, float], delta: float) -> str:
    header = ["target", "sub-cascade", f"met (need ≥ {1 - delta:.2f})", "P(≤ met)", "vacuous", "mean coverage",
              "mean acc.", "mean cost / item (USD)", "best single judge: coverage / cost",
              "i.i.d. check: met / P(≤ met) / vacuous / coverage"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        best = best_single(rows, r.target)
        lines.append("| " + " | ".join([
            f"{r.target:.2f}", r.name, f"{r.met}/{r.splits} = {r.met_share:.3f}", f"{r.p_value:.3f}",
            str(r.vacuous), _f(r.mean_coverage), _f(r.mean_accuracy), f"{r.mean_cost:.5f}",
            f"{best.name}: {_f(best.mean_coverage)} / {best.mean_cost:.5f}",
            f"{r.iid_share:.3f} / {r.iid_p_value:.3f} / {r.iid_vacuous} / {_f(r.iid_mean_coverage)}",
        ]) + " |")
    lines += [
        "",
        "Prices per item (USD): " + ", ".join(f"{k} {v:g}" for k, v in prices.items()) + ".",
        "",
        "Paper (../shared/data/README.md; Jung et al. 2024, Chatbot Arena, delta 0.1, ~5.2k items, their rule "
        "with a fallback): cascade Mistral-7B → GPT-3.5 → GPT-4 coverage "
        + ", ".join(f"{c:.1%} at {t}" for t, c in PAPER_CASCADE_COVERAGE.items())
        + f"; success {PAPER_SUCCESS_085:.1%} of splits at 0.85 (Table 3); GPT-4 alone without abstention "
        f"{PAPER_GPT4_NO_ABSTENTION:.1%}; agreement on these 500 items without abstention: "
        + ", ".join(f"{k} {v:.3f}" for k, v in PAPER_AGREEMENT.items()) + ".",
    ]
    return "\n".join(lines)


def parse_prices(values: Sequence[str]) -> dict[str, float]:
    prices = dict(DEFAULT_PRICES)
    for value in values:
        name, sep, usd = value.partition("=")
        if not sep or name not in prices:
            raise SystemExit(f"--price {value!r}: expected NAME=USD_PER_ITEM with NAME one of {', '.join(JUDGES)}")
        prices[name] = float(usd)
    return prices


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="reference data folder")
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--price", action="append", default=[], metavar="NAME=USD_PER_ITEM",
                        help=f"a judge's cost per item; defaults {DEFAULT_PRICES}")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    prices = parse_prices(args.price)
    rows = experiment(load_stages(args.data), prices, splits=args.splits, delta=args.delta, seed=args.seed)
    if args.json:
        print(json.dumps({
            "prices": prices, "delta": args.delta, "splits": args.splits, "seed": args.seed,
            "rows": [asdict(r) | {"name": r.name, "met_share": r.met_share, "p_value": r.p_value,
                                  "iid_share": r.iid_share, "iid_p_value": r.iid_p_value,
                                  "best_single": best_single(rows, r.target).name} for r in rows],
            "paper": {"cascade_coverage": {str(k): v for k, v in PAPER_CASCADE_COVERAGE.items()},
                      "success_at_0.85": PAPER_SUCCESS_085, "gpt4_no_abstention": PAPER_GPT4_NO_ABSTENTION,
                      "agreement": PAPER_AGREEMENT},
        }, indent=2))
    else:
        print(render(rows, prices, args.delta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
