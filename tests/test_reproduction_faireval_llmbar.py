"""The FairEval 2025 re-runs and LLMBar's FairEval verdicts, imported and reported, against accuracy,
Cohen's kappa, conflict rate and human-in-the-loop figures recomputed here from the raw files.

The expected values follow SPEC sections 3 and 4 with the plainest code: scores are the number after
the last ':' of the last two non-blank lines; the swapped order's scores are un-swapped; the winner
compares the two mean scores over all samples of both orders (equal denominators, so the sums);
LLMBar's winners "1"/"2" are votes 0.75/0.25 (choice without certainty) averaged over the orders;
BPDE is the entropy of the calls' win/tie/lose outcomes; the human-in-the-loop step gives the
floor(0.2 n + 0.5) items with the highest BPDE their human label. Nothing is imported from the
project for these. The conflict rate is the share of items whose two orders' first samples disagree
(1 - position_consistency). Skipped, with the reason, where ../shared/data is absent.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from calibration.report import build_report
from judge.importers import import_verdicts

pytestmark = pytest.mark.shared_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAIREVAL_LABELS = DATA / "faireval" / "review" / "review_gpt35_vicuna-13b_human.txt"
RUNS = sorted((DATA / "faireval-2025-runs").glob("*/*.jsonl"))
LLMBAR = DATA / "llmbar" / "Dataset" / "Processed" / "FairEval" / "evaluators"
LLMBAR_FILES = sorted(LLMBAR.glob("*/*/result.json"))
HUMAN = {"CHATGPT": "A", "VICUNA13B": "B", "TIE": "tie"}  # ChatGPT is assistant 1 = A
BETA = 0.2


# ----------------------------------------------------------------------------- plain statistics


def kappa(judge: list[str], human: list[str]) -> float:
    n = len(judge)
    observed = sum(j == h for j, h in zip(judge, human, strict=True)) / n
    cj, ch = Counter(judge), Counter(human)
    chance = sum(cj[c] * ch[c] for c in ("A", "B", "tie")) / n / n
    return (observed - chance) / (1 - chance)


def entropy(outcomes: list[str]) -> float | None:
    if not outcomes:
        return None
    n = len(outcomes)
    # Rounded so that equal outcome mixes are equal numbers, whatever the order of the sum.
    return round(-sum(k / n * math.log(k / n) for k in Counter(outcomes).values()), 9)


def agreement(winners: list[str | None], labels: list[str]) -> tuple[float, float]:
    """(accuracy over all labelled items, a null winner wrong; kappa over items with a winner)."""
    accuracy = sum(w == h for w, h in zip(winners, labels, strict=True)) / len(labels)
    pairs = [(w, h) for w, h in zip(winners, labels, strict=True) if w is not None]
    return accuracy, kappa([w for w, _ in pairs], [h for _, h in pairs])


def with_humans(winners: list[str | None], labels: list[str], bpdes: list[float | None]) -> list[str | None]:
    n_sent = math.floor(BETA * len(labels) + 0.5)
    # Highest BPDE first, a missing BPDE above all, ties in input order.
    ranked = sorted(range(len(labels)), key=lambda i: (-(math.inf if bpdes[i] is None else bpdes[i]), i))
    sent = set(ranked[:n_sent])
    return [labels[i] if i in sent else w for i, w in enumerate(winners)]


def expected(winners: list[str | None], labels: list[str], bpdes: list[float | None],
             conflicts: list[bool] | None) -> dict[str, float | None]:
    accuracy, k = agreement(winners, labels)
    hitl_accuracy, hitl_kappa = agreement(with_humans(winners, labels, bpdes), labels)
    return {
        "accuracy": accuracy,
        "kappa": k,
        "conflict_rate": None if conflicts is None else sum(conflicts) / len(conflicts),
        "hitl_accuracy": hitl_accuracy,
        "hitl_kappa": hitl_kappa,
    }


def reported(report: dict) -> dict[str, float | None]:
    consistency = report["position_consistency"]
    return {
        "accuracy": report["accuracy"],
        "kappa": report["cohen_kappa"]["value"],
        "conflict_rate": None if consistency is None else 1 - consistency,
        "hitl_accuracy": report["hitl"]["accuracy"],
        "hitl_kappa": report["hitl"]["cohen_kappa"]["value"],
    }


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        if value is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, abs=1e-9), key


# ----------------------------------------------------------------------------- FairEval 2025 runs


def scores(text: str) -> tuple[float, float]:
    lines = [line for line in text.split("\n") if line.strip()]
    return float(lines[-2].split(":")[-1]), float(lines[-1].split(":")[-1])


def json_objects(text: str) -> list[dict]:
    """JSON Lines or JSON objects one after another (one run stores pretty-printed objects)."""
    decoder, rows, position = json.JSONDecoder(), [], 0
    while text[position:].strip():
        position = len(text) - len(text[position:].lstrip())
        row, position = decoder.raw_decode(text, position)
        rows.append(row)
    return rows


def outcome(a: float, b: float) -> str:
    return "win" if a > b else "lose" if a < b else "tie"


def faireval_expected(path: Path) -> dict[str, float | None]:
    labels_by_question = [HUMAN[w] for w in FAIREVAL_LABELS.read_text().split()]
    winners, labels, bpdes, conflicts = [], [], [], []
    for row in json_objects(path.read_text()):
        original = [scores(t) for t in row["review"]]
        swapped = [tuple(reversed(scores(t))) for t in row.get("review_bpc") or []]
        calls = original + swapped
        a, b = sum(s[0] for s in calls), sum(s[1] for s in calls)
        winners.append("A" if a > b else "B" if a < b else "tie")
        labels.append(labels_by_question[row["question_id"] - 1])
        bpdes.append(entropy([outcome(*s) for s in calls]))
        if swapped:
            conflicts.append(outcome(*original[0]) != outcome(*swapped[0]))
    return expected(winners, labels, bpdes, conflicts or None)


def test_faireval_runs_are_here(shared_data: Path) -> None:
    assert len(RUNS) == 35
    assert (DATA / "faireval-2025-runs" / "review_gpt35_vicuna-13b_human.txt").read_text() == FAIREVAL_LABELS.read_text()


@pytest.mark.parametrize("run", [str(p.relative_to(DATA)) for p in RUNS] or ["(no files)"])
def test_faireval_run(shared_data: Path, run: str) -> None:
    path = DATA / run
    want = faireval_expected(path)
    report = build_report(import_verdicts("faireval", [str(path)], str(FAIREVAL_LABELS)), bootstrap_resamples=0)
    assert report["counts"]["labelled"] == 80
    assert report["hitl"]["n_sent"] == 16
    assert_same(reported(report), want)


# ----------------------------------------------------------------------------- LLMBar


def llmbar_expected(path: Path) -> dict[str, float | None]:
    winners, labels, bpdes, conflicts = [], [], [], []
    for row in json.loads(path.read_text()):
        last = row["results"][-1]
        ab = {"1": "A", "2": "B"}.get(last["swap = False"]["winner"])
        ba = {"1": "A", "2": "B"}.get(last["swap = True"]["winner"])
        votes = [0.75 if c == "A" else 0.25 for c in (ab, ba) if c is not None]
        p_a = sum(votes) / len(votes) if votes else None
        winners.append(None if p_a is None else "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie")
        labels.append({1: "A", 2: "B"}[row["label"]])
        bpdes.append(entropy([{"A": "win", "B": "lose"}[c] for c in (ab, ba) if c is not None]))
        conflicts.append(ab is None or ba is None or ab != ba)
    return expected(winners, labels, bpdes, conflicts)


def test_llmbar_files_are_here(shared_data: Path) -> None:
    assert len(LLMBAR_FILES) == 8


@pytest.mark.parametrize("evaluator", [str(p.relative_to(LLMBAR)) for p in LLMBAR_FILES] or ["(no files)"])
def test_llmbar_evaluator(shared_data: Path, evaluator: str) -> None:
    path = LLMBAR / evaluator
    want = llmbar_expected(path)
    report = build_report(import_verdicts("llmbar", [str(path)]), bootstrap_resamples=0)
    assert report["counts"]["labelled"] == 66
    assert report["hitl"]["n_sent"] == 13
    assert_same(reported(report), want)


@pytest.mark.parametrize(("judge", "conflict_rate"), [("ChatGPT", 0.818), ("GPT-4", 0.303)])
def test_llmbar_published_conflict_rates(shared_data: Path, judge: str, conflict_rate: float) -> None:
    """LLMBar on FairEval: ChatGPT changes its verdict on 81.8% of pairs when swapped, GPT-4 on 30.3%."""
    path = LLMBAR / judge / "Vanilla_NoRules" / "result.json"
    report = build_report(import_verdicts("llmbar", [str(path)]), bootstrap_resamples=0)
    assert round(1 - report["position_consistency"], 3) == conflict_rate
