"""Calls against judge agreement on the replayed FairEval 2025 runs: fixed k samples per order
against adaptive sampling (profile `adaptive`), per judge model and run. The recorded raw outputs
stand in for the provider (provider `replay`), so this runs the real runner, parsers, aggregation
and adaptive rule, then the SPEC 4 statistics (Cohen's kappa against the 80 human labels).

Each run's `mec3_bpc1` file holds k = 3 answers in each order, so every configuration replays from
it: fixed k = 1, 2, 3 takes samples 0..k-1 of each order, adaptive takes them round by round.
Acceptance (issue 15): adaptive with samples = 3 at the default margin reaches at least the kappa
of fixed k = 3 in both orders with at most half its calls (means over the four runs, per model)."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import SHARED_DATA, emit, skip

if TYPE_CHECKING:
    from judge.records import Choice

LABELS: dict[str, Choice] = {"CHATGPT": "A", "VICUNA13B": "B", "TIE": "tie"}


@dataclass(frozen=True)
class Config:
    name: str
    samples: int
    swap: bool = True
    margin: float | None = None  # adaptive sampling at this margin; None: fixed k

    @property
    def adaptive(self) -> bool:
        return self.margin is not None


def default_margin() -> float:
    from judge.profiles import JudgeProfile

    return float(JudgeProfile.model_fields["adaptive_margin"].default)


FIXED = Config("fixed k=3", 3)


def configs() -> tuple[Config, ...]:
    """The curve: the FairEval ladder (one order), fixed k in both orders, adaptive at several margins."""
    margins = sorted({0.0, default_margin(), 0.1, 0.15, 0.2, 0.3})
    return (Config("vanilla", 1, swap=False), Config("mec3", 3, swap=False),
            Config("fixed k=1", 1), Config("fixed k=2", 2), FIXED,
            *(Config(f"adaptive m={m:g}", 3, margin=m) for m in margins))


def adaptive_default() -> Config:
    return Config(f"adaptive m={default_margin():g}", 3, margin=default_margin())


def items(faireval: Path) -> list[Any]:
    from judge.records import PairItem

    questions = [json.loads(line) for line in (faireval / "question.jsonl").read_text().splitlines() if line]
    answers = {}
    for name in ("gpt35", "vicuna-13b"):
        rows = [json.loads(line) for line in (faireval / "answer" / f"answer_{name}.jsonl").read_text().splitlines()
                if line]
        answers[name] = {row["question_id"]: row["text"] for row in rows}
    label_file = next((faireval / "review").glob("*_human.txt"))  # ChatGPT (A) against Vicuna-13B (B)
    labels = [LABELS[w.strip()] for w in label_file.read_text().split("\n") if w.strip()]
    questions.sort(key=lambda q: q["question_id"])
    return [PairItem(id=str(q["question_id"]), prompt=q["text"], response_a=answers["gpt35"][q["question_id"]],
                     response_b=answers["vicuna-13b"][q["question_id"]], human_label=label)
            for q, label in zip(questions, labels, strict=True)]


def recording(run_file: Path, folder: Path) -> Path:
    """The run's raw answers as replay rows {id, order, sample, raw}."""
    from judge.importers._common import iter_json_documents

    out = folder / f"replay-{run_file.parent.name}-{run_file.stem}.jsonl"
    with out.open("w") as handle:
        for _, row in iter_json_documents(run_file):
            for order, key in (("AB", "review"), ("BA", "review_bpc")):
                for sample, raw in enumerate(row.get(key) or []):
                    handle.write(json.dumps({"id": str(row["question_id"]), "order": order, "sample": sample,
                                             "raw": raw}) + "\n")
    return out


def judge(pair_items: list[Any], replay: Path, config: Config) -> list[Any]:
    from judge.profiles import load_profile
    from judge.runner import judge_all

    profile = load_profile("faireval-scores", provider="replay", replay_path=str(replay), samples=config.samples,
                           swap=config.swap, max_reasks=0, adaptive=config.adaptive,
                           adaptive_margin=config.margin)
    return asyncio.run(judge_all(profile, pair_items))


def run_files(runs: Path) -> list[Path]:
    return sorted(runs.glob("*/*_mec3_bpc1.jsonl"))  # k = 3 in both orders: every configuration replays


def measure(data: Path = SHARED_DATA, only_runs: set[str] | None = None,
            chosen: tuple[Config, ...] | None = None) -> list[dict[str, Any]]:
    """One row per (run, judge model, configuration): calls, accuracy, kappa, human-in-the-loop."""
    from calibration.report import build_report

    pair_items = items(data / "faireval")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for run_file in run_files(data / "faireval-2025-runs"):
            if only_runs is not None and run_file.parent.name not in only_runs:
                continue
            replay = recording(run_file, Path(folder))
            model = run_file.stem.split("_")[3]
            for config in chosen or configs():
                verdicts = judge(pair_items, replay, config)
                report = build_report(verdicts, bootstrap_resamples=0)
                calls = sum(len(v.calls) for v in verdicts)
                hitl = report["hitl"]
                rows.append({"run": run_file.parent.name, "judge_model": model, "profile": config.name,
                             "samples": config.samples, "swap": config.swap, "adaptive": config.adaptive,
                             "adaptive_margin": config.margin, "items": len(verdicts), "calls": calls,
                             "failed_calls": sum(1 for v in verdicts for c in v.calls if c.error is not None),
                             "calls_per_item": round(calls / len(verdicts), 3),
                             "accuracy": _round(report["accuracy"]),
                             "cohen_kappa": _round(report["cohen_kappa"]["value"]),
                             "hitl_beta": hitl["beta"], "hitl_accuracy": _round(hitl["accuracy"]),
                             "hitl_cohen_kappa": _round(_value(hitl["cohen_kappa"]))})
    return rows


def means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (judge model, configuration): mean kappa and mean calls per item over the runs."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["judge_model"], row["profile"]), []).append(row)
    return [{"judge_model": model, "profile": name, "runs": len(group),
             "mean_cohen_kappa": round(statistics.fmean(r["cohen_kappa"] for r in group), 4),
             "mean_calls": round(statistics.fmean(r["calls"] for r in group), 2),
             "mean_calls_per_item": round(statistics.fmean(r["calls_per_item"] for r in group), 3)}
            for (model, name), group in groups.items()]


def acceptance(rows: list[dict[str, Any]], adaptive: Config | None = None) -> list[dict[str, Any]]:
    """Per judge model: adaptive's mean kappa >= fixed k = 3's, with at most half its mean calls."""
    adaptive = adaptive or adaptive_default()
    by_key = {(m["judge_model"], m["profile"]): m for m in means(rows)}
    out = []
    for model in sorted({r["judge_model"] for r in rows}):
        fixed, chosen = by_key[(model, FIXED.name)], by_key[(model, adaptive.name)]
        out.append({"judge_model": model, "adaptive": adaptive.name,
                    "fixed_kappa": fixed["mean_cohen_kappa"], "adaptive_kappa": chosen["mean_cohen_kappa"],
                    "fixed_calls": fixed["mean_calls"], "adaptive_calls": chosen["mean_calls"],
                    "calls_ratio": round(chosen["mean_calls"] / fixed["mean_calls"], 3),
                    "kappa_holds": chosen["mean_cohen_kappa"] >= fixed["mean_cohen_kappa"],
                    "calls_hold": 2 * chosen["mean_calls"] <= fixed["mean_calls"]})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """Kappa against calls per item: one line per (judge model, configuration), runs side by side."""
    runs = sorted({r["run"] for r in rows})
    index = {(r["judge_model"], r["profile"], r["run"]): r for r in rows}
    head = f"{'judge model':<14} {'configuration':<16}" + "".join(f" {'run ' + run:>14}" for run in runs)
    head += f" {'mean kappa':>10} {'calls/item':>10}"
    lines = [head, "-" * len(head)]
    for summary in means(rows):
        model, name = summary["judge_model"], summary["profile"]
        cells = "".join(f" {index[(model, name, run)]['cohen_kappa']:>7.4f} ({index[(model, name, run)]['calls_per_item']:>4.2f})"
                        for run in runs)
        lines.append(f"{model:<14} {name:<16}{cells} {summary['mean_cohen_kappa']:>10.4f} "
                     f"{summary['mean_calls_per_item']:>10.2f}")
    lines.append("cells: Cohen's kappa (calls per item); 80 items per run, human labels of FairEval")
    return "\n".join(lines)


def run(as_json: bool, quick: bool = False) -> None:
    runs = SHARED_DATA / "faireval-2025-runs"
    if not runs.is_dir():
        skip("cost", f"reference data not found at {runs}", as_json)
        return
    rows = measure(only_runs={"1"} if quick else None)
    if as_json:
        for row in rows:
            emit({"benchmark": "cost", **row}, True)
        for summary in means(rows):
            emit({"benchmark": "cost", "summary": "mean over runs", **summary}, True)
        for verdict in acceptance(rows):
            emit({"benchmark": "cost", "summary": "acceptance", **verdict}, True)
        return
    print(table(rows), flush=True)
    for verdict in acceptance(rows):
        holds = verdict["kappa_holds"] and verdict["calls_hold"]
        print(f"acceptance {verdict['judge_model']}: {verdict['adaptive']} kappa {verdict['adaptive_kappa']:.4f} "
              f"vs fixed k=3 {verdict['fixed_kappa']:.4f}; calls {verdict['adaptive_calls']:g} vs "
              f"{verdict['fixed_calls']:g} ({verdict['calls_ratio']:.1%}) -> {'holds' if holds else 'FAILS'}",
              flush=True)


def _value(statistic: Any) -> Any:
    return statistic.get("value") if isinstance(statistic, dict) else statistic


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
