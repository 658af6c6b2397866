#!/usr/bin/env python
"""Does the risk-controlled threshold (SPEC 4 `risk_control`) keep its promise on recorded judges?

For each judge file and each target accuracy T: draw a calibration set of the file's size with
replacement, choose the threshold on it with the fixed-sequence rule (delta 0.1), then measure the
accuracy of the items the threshold accepts on the whole file. The guarantee says the accuracy is at
least T on at least 1 - delta of the draws; abstaining on everything (no threshold passes) keeps it
trivially, and is counted as meeting the target. Printed beside it: the fixed certainty threshold
0.8 (SPEC 4's high_certainty split, i.e. confidence 0.9), which promises nothing, and the coverage
Jung et al. 2024 report for their Mistral-7B -> GPT-3.5 -> GPT-4 cascade on ~5.2k Chatbot Arena items
(a cascade over a larger test set: not the same experiment as one judge on these 500 items).

Files (research-only reference data, never copied into the repository; default ../shared/data):
- trust-or-escalate/result/gpt-4-turbo.calibration.jsonl (GPT-4-turbo, Simulated Annotators);
- personalized-judge/outputs/prism_all_features_command-r-plus.jsonl (Dong et al. 2024, PRISM).

    python scripts/risk_control_experiment.py [--draws 200] [--seed 0] [--delta 0.1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from calibration.risk import accepted_by, risk_control  # noqa: E402
from calibration.table import DECIMALS, VerdictTable, build_table  # noqa: E402
from judge.importers import import_verdicts  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
FILES = {
    "toe-gpt-4-turbo": ("trust-or-escalate", Path("trust-or-escalate/result/gpt-4-turbo.calibration.jsonl")),
    "pj-prism-command-r-plus": (
        "personalized-judge",
        Path("personalized-judge/outputs/prism_all_features_command-r-plus.jsonl"),
    ),
}
TARGETS = (0.8, 0.85, 0.9)
PAPER_CASCADE_COVERAGE = {0.8: 0.791, 0.85: 0.632, 0.9: 0.481}  # Jung et al. 2024, Figure 4
FIXED_CERTAINTY = 0.8


@dataclass(frozen=True)
class Row:
    file: str
    target: float
    draws: int
    met: int  # draws whose whole-file accuracy reached the target (abstaining on all counts)
    abstained_all: int  # draws where no threshold passed
    mean_coverage: float  # over all draws, 0 for the abstaining ones
    mean_accuracy: float | None  # over the draws that accepted something
    full_threshold: float | None  # the threshold chosen on the whole file itself
    full_coverage: float
    fixed_coverage: float  # certainty >= 0.8 on the whole file
    fixed_accuracy: float | None
    paper_coverage: float
    delta: float

    @property
    def met_share(self) -> float:
        return self.met / self.draws

    @property
    def p_value(self) -> float:
        """P(met or fewer draws meet the target | each meets it with probability exactly 1 - delta).

        200 draws estimate the share to about +-0.02, so a share a little under 1 - delta is what a
        valid procedure shows now and then; a small p-value is what would show it is not valid."""
        return float(binom.cdf(self.met, self.draws, 1.0 - self.delta))


def load_table(data: Path, name: str) -> VerdictTable:
    fmt, relative = FILES[name]
    path = data / relative
    if not path.is_file():
        raise FileNotFoundError(f"reference data not found at {path}")
    return build_table(import_verdicts(fmt, [str(path)]))


def kept_by_confidence(table: VerdictTable, threshold: float | None) -> tuple[float, float | None, int]:
    """(coverage, accuracy, accepted) of decided items with confidence >= threshold; None = keep none."""
    decided = table.decided
    kept = decided & accepted_by(table, threshold)
    n = int(kept.sum())
    return n / int(decided.sum()), (float((kept & table.correct).sum() / n) if n else None), n


def kept_by_certainty(table: VerdictTable, threshold: float) -> tuple[float, float | None]:
    kept = table.decided & (table.certainty >= round(threshold, DECIMALS))
    n = int(kept.sum())
    return n / int(table.decided.sum()), (float((kept & table.correct).sum() / n) if n else None)


def experiment(table: VerdictTable, name: str, targets: Sequence[float] = TARGETS, draws: int = 200,
               delta: float = 0.1, seed: int = 0) -> list[Row]:
    """One Row per target; every target sees the same `draws` calibration sets."""
    rng = np.random.default_rng(seed)
    samples = [rng.integers(0, len(table), len(table)) for _ in range(draws)]
    fixed_coverage, fixed_accuracy = kept_by_certainty(table, FIXED_CERTAINTY)
    rows = []
    for target in targets:
        met = abstained = 0
        coverages, accuracies = [], []
        for sample in samples:
            threshold = risk_control(table.subset(sample), target, delta)["threshold"]
            coverage, accuracy, accepted = kept_by_confidence(table, threshold)
            abstained += threshold is None
            met += accepted == 0 or (accuracy is not None and accuracy >= target)
            coverages.append(coverage)
            if accuracy is not None:
                accuracies.append(accuracy)
        full = risk_control(table, target, delta)
        rows.append(Row(
            file=name, target=target, draws=draws, met=met, abstained_all=abstained,
            mean_coverage=float(np.mean(coverages)),
            mean_accuracy=float(np.mean(accuracies)) if accuracies else None,
            full_threshold=full["threshold"], full_coverage=full["coverage"],
            fixed_coverage=fixed_coverage, fixed_accuracy=fixed_accuracy,
            paper_coverage=PAPER_CASCADE_COVERAGE.get(target, float("nan")), delta=delta,
        ))
    return rows


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render(rows: Sequence[Row], delta: float) -> str:
    header = ["file", "target", f"met (need ≥ {1 - delta:.2f})", "P(≤ met)", "abstain-all", "mean coverage",
              "mean acc.", "whole-file λ / coverage", "fixed cert≥0.8 cov / acc (meets?)", "paper cascade cov."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        meets = "yes" if r.fixed_accuracy is not None and r.fixed_accuracy >= r.target else "no"
        lines.append("| " + " | ".join([
            r.file, f"{r.target:.2f}", f"{r.met}/{r.draws} = {r.met_share:.3f}", f"{r.p_value:.3f}",
            f"{r.abstained_all}",
            _f(r.mean_coverage), _f(r.mean_accuracy), f"{_f(r.full_threshold, 4)} / {_f(r.full_coverage)}",
            f"{_f(r.fixed_coverage)} / {_f(r.fixed_accuracy)} ({meets})", _f(r.paper_coverage),
        ]) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="reference data folder")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for name in FILES:
        rows += experiment(load_table(args.data, name), name, draws=args.draws, delta=args.delta, seed=args.seed)
    if args.json:
        print(json.dumps([asdict(r) | {"met_share": r.met_share, "p_value": r.p_value} for r in rows], indent=2))
    else:
        print(render(rows, args.delta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
