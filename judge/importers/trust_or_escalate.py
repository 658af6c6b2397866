"""Jung et al. 2024 ("Trust or Escalate"): `result/*.calibration.jsonl` with {instruction, outputs,
preferences {"human": 1|2}, probs}. `probs` are the judge's probabilities that outputs[0] /
outputs[1] is preferred, already averaged over both response orders upstream, so each row becomes
one call without order information.

Ids are `toe-<line>` (1-based line of the file, SPEC 5): the three judges' files hold the same 500
pairs in the same order, so their verdicts join by id as the stages of a cascade (calibration.cascade).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from judge.aggregation import DECIMALS
from judge.importers._common import (
    PROVIDER,
    Importer,
    LabelFile,
    RowError,
    as_object,
    build_verdict,
    convert_rows,
    require,
)
from judge.jsonl import iter_json_lines
from judge.records import Call, Choice, JudgeInfo, Label, Verdict

FORMAT = "trust-or-escalate"
PROFILE = "trust-or-escalate"
HUMAN: dict[int, Label] = {1: "A", 2: "B"}


def probability_of_a(row: dict[str, Any]) -> float:
    """p_a = probs[0] / (probs[0] + probs[1]), rounded as aggregation rounds (SPEC 3.1).
    The two probabilities need not sum to 1 (Mistral's go down to 0.96)."""
    probs = require(row, "probs")
    if (
        not isinstance(probs, list) or len(probs) != 2
        or any(isinstance(p, bool) or not isinstance(p, int | float) for p in probs)
    ):
        raise RowError("probs", "expected a list of two numbers")
    first, second = float(probs[0]), float(probs[1])
    if not all(math.isfinite(p) and p >= 0 for p in (first, second)) or first + second <= 0:
        raise RowError("probs", "expected two non-negative probabilities with a positive sum")
    total = first + second
    if not math.isfinite(total):  # two huge finite numbers: their halves add without overflowing
        return round((first / 2) / (first / 2 + second / 2), DECIMALS)
    return round(first / total, DECIMALS)


def call_of(p_a: float, raw: str) -> Call:
    # The vote of a call with certainty u is 0.5 + u/2 (A) or 0.5 - u/2 (B), so certainty
    # |2 p_a - 1| gives back p_a itself as the aggregated probability.
    choice: Choice = "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"
    return Call(order=None, sample=0, raw=raw, choice=choice, certainty=round(abs(2 * p_a - 1), DECIMALS))


def human_label(row: dict[str, Any]) -> Label | None:
    preferences = row.get("preferences")
    if preferences is None:
        return None
    if not isinstance(preferences, dict):
        raise RowError("preferences", "expected an object like {\"human\": 1}")
    vote = preferences.get("human")
    if vote is None:
        return None
    if isinstance(vote, bool) or not isinstance(vote, int) or vote not in HUMAN:
        raise RowError("preferences.human", f"expected 1 or 2, got {json.dumps(vote)}")
    return HUMAN[vote]


def _lengths(row: dict[str, Any]) -> tuple[int | None, int | None]:
    outputs = row.get("outputs")
    if outputs is None:
        return None, None
    if not isinstance(outputs, list) or len(outputs) != 2 or not all(isinstance(o, str) for o in outputs):
        raise RowError("outputs", "expected a list of two strings")
    return len(outputs[0]), len(outputs[1])


def item_id(line: int | None) -> str:
    """`toe-<line>`: the same item has the same id in every judge's file (same rows, same order)."""
    return f"toe-{line}"


def _convert(path: Path, judge: JudgeInfo, line: int | None, value: Any) -> Verdict:
    row = as_object(value)
    p_a = probability_of_a(row)
    call = call_of(p_a, json.dumps(row["probs"]))  # no raw text was released; the probabilities are the output
    len_a, len_b = _lengths(row)
    verdict = build_verdict(
        item_id(line), [call], mode="choice", swapped=False, judge=judge,
        human_label=human_label(row), len_a=len_a, len_b=len_b,
        metadata={"dataset": "chatbot-arena", "source": path.name, "path": str(path), "line": line},
    )
    # The vote formula gives back p_a up to float rounding at the 9th decimal; the recorded
    # probability is the truth, so it is set exactly (winner and certainty follow the same rules).
    if verdict.p_a != p_a:
        verdict = verdict.model_copy(update={
            "p_a": p_a, "certainty": round(abs(2 * p_a - 1), DECIMALS), "winner": call.choice,
        })
    return verdict


def model_of(path: Path) -> str:
    name = path.name
    for suffix in (".calibration.jsonl", ".test.jsonl", ".jsonl"):
        if name.endswith(suffix):
            return name[: -len(suffix)] or "unknown"
    return path.stem or "unknown"


def import_file(path: Path, labels: LabelFile | None = None) -> list[Verdict]:
    judge = JudgeInfo(profile=PROFILE, provider=PROVIDER, model=model_of(path))
    return convert_rows(str(path), iter_json_lines(path), lambda line, row: _convert(path, judge, line, row))


IMPORTER = Importer(
    name=FORMAT, import_file=import_file,
    description="Trust or Escalate result/*.calibration.jsonl (judge probabilities, one call)",
)
