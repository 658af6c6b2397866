"""Calls per item against judge agreement, per profile, on the replayed FairEval 2025 runs: the
recorded raw outputs stand in for the provider (provider `replay`), so this runs the real
runner, parsers and aggregation, then the SPEC 4 statistics."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.common import SHARED_DATA, emit, skip

# (name, samples k per order, swap): the FairEval ladder from vanilla to MEC + BPC.
PROFILES = (("vanilla", 1, False), ("bpc", 1, True), ("mec3", 3, False), ("mec3+bpc", 3, True))
LABELS = {"CHATGPT": "A", "VICUNA13B": "B", "TIE": "tie"}


def _items(faireval: Path) -> list[Any]:
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


def _recording(run_file: Path, folder: Path) -> Path:
    from judge.importers._common import iter_json_documents

    out = folder / f"replay-{run_file.parent.name}-{run_file.stem}.jsonl"
    with out.open("w") as handle:
        for _, row in iter_json_documents(run_file):
            for order, key in (("AB", "review"), ("BA", "review_bpc")):
                for sample, raw in enumerate(row.get(key) or []):
                    handle.write(json.dumps({"id": str(row["question_id"]), "order": order, "sample": sample,
                                             "raw": raw}) + "\n")
    return out


def _judge(items: list[Any], recording: Path, samples: int, swap: bool) -> list[Any]:
    from judge.profiles import load_profile
    from judge.runner import judge_all

    profile = load_profile("faireval-scores", provider="replay", replay_path=str(recording), samples=samples,
                           swap=swap, max_reasks=0)
    return asyncio.run(judge_all(profile, items))


def run(as_json: bool, quick: bool = False) -> None:
    runs = SHARED_DATA / "faireval-2025-runs"
    if not runs.is_dir():
        skip("cost", f"reference data not found at {runs}", as_json)
        return
    from calibration.report import build_report

    items = _items(SHARED_DATA / "faireval")
    files = sorted(runs.glob("*/*_mec3_bpc1.jsonl"))  # k = 3 in both orders: every profile can be replayed
    if quick:
        files = files[:1]
    with tempfile.TemporaryDirectory() as folder:
        for run_file in files:
            recording = _recording(run_file, Path(folder))
            model = run_file.stem.split("_")[3]
            for name, samples, swap in PROFILES:
                verdicts = _judge(items, recording, samples, swap)
                report = build_report(verdicts, bootstrap_resamples=0)
                calls = sum(1 for v in verdicts for c in v.calls if c.error is None)
                hitl = report["hitl"]
                emit({"benchmark": "cost", "run": run_file.parent.name, "judge_model": model, "profile": name,
                      "calls_per_item": round(calls / len(verdicts), 3),
                      "accuracy": round(report["accuracy"], 4),
                      "cohen_kappa": _round(report["cohen_kappa"]["value"]),
                      "hitl_beta": hitl["beta"], "hitl_accuracy": _round(hitl["accuracy"]),
                      "hitl_cohen_kappa": _round(_value(hitl["cohen_kappa"]))}, as_json)


def _value(statistic: Any) -> Any:
    return statistic.get("value") if isinstance(statistic, dict) else statistic


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
