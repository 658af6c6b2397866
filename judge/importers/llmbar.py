"""LLMBar (Zeng et al. 2024) evaluator results: `result.json`, a list of {input, output_1,
output_2, label, results}. The last element of `results` holds both orders, `swap = False`
(output_1 shown first) and `swap = True`, each with `completion` [text, finish reason] and the
`winner` ("1" or "2") already mapped back to output_1/output_2.

Layout: `<Dataset>/evaluators/<Evaluator>/<Protocol>/result.json` names the judge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from judge.importers._common import (
    PROVIDER,
    Importer,
    LabelFile,
    RowError,
    as_object,
    build_verdict,
    convert_rows,
    input_error,
    optional_text,
    read_json,
    require,
)
from judge.records import Call, Choice, JudgeInfo, Label, Order, Verdict

FORMAT = "llmbar"
WINNERS: dict[str, Choice] = {"1": "A", "2": "B"}
ORDERS: tuple[tuple[str, Order], ...] = (("swap = False", "AB"), ("swap = True", "BA"))


def describe_path(path: Path) -> dict[str, str]:
    parts = path.resolve().parts
    if "evaluators" in parts[:-1]:
        at = len(parts) - 1 - parts[::-1].index("evaluators")
        tail = parts[at + 1:-1]
        return {
            "dataset": parts[at - 1] if at > 0 else "llmbar",
            "evaluator": tail[0] if tail else "unknown",
            "protocol": tail[1] if len(tail) > 1 else "unknown",
        }
    return {"dataset": "llmbar", "evaluator": "unknown", "protocol": path.parent.name or "unknown"}


def _raw_text(completion: Any) -> str | None:
    # `completion` is [text, finish_reason]; keep the text as the call's raw output.
    if isinstance(completion, list) and completion and isinstance(completion[0], str):
        return completion[0]
    return completion if isinstance(completion, str) else None


def order_call(result: Any, key: str, order: Order) -> Call:
    if not isinstance(result, dict):
        raise RowError(f"results.-1.{key}", "expected an object with 'winner'")
    raw = _raw_text(result.get("completion"))
    winner = result.get("winner")
    choice = WINNERS.get(str(winner)) if isinstance(winner, str | int) and not isinstance(winner, bool) else None
    if choice is None:
        return Call(order=order, sample=0, raw=raw, error=f"no winner recorded (winner = {json.dumps(winner)})")
    return Call(order=order, sample=0, raw=raw, choice=choice)


def calls_of(row: dict[str, Any]) -> list[Call]:
    results = require(row, "results")
    if not isinstance(results, list) or not results or not isinstance(results[-1], dict):
        raise RowError("results", "expected a list whose last element holds 'swap = False' and 'swap = True'")
    last = results[-1]
    calls = [order_call(last[key], key, order) for key, order in ORDERS if key in last]
    if not calls:
        raise RowError("results.-1", "holds neither 'swap = False' nor 'swap = True'")
    return calls


def human_label(row: dict[str, Any]) -> Label | None:
    label = row.get("label")
    if label is None:
        return None
    if isinstance(label, bool) or str(label) not in WINNERS:
        raise RowError("label", f"expected 1 or 2, got {json.dumps(label)}")
    return WINNERS[str(label)]


def _convert(index: int, value: Any, judge: JudgeInfo, dataset: str, metadata: dict[str, Any]) -> Verdict:
    row = as_object(value)
    output_1, output_2 = optional_text(row, "output_1"), optional_text(row, "output_2")
    return build_verdict(
        f"{dataset}-{index}", calls_of(row), mode="choice", swapped=True, judge=judge,
        human_label=human_label(row), metadata={**metadata, "index": index},
        len_a=len(output_1) if output_1 is not None else None,
        len_b=len(output_2) if output_2 is not None else None,
    )


def _convert_item(index: int, value: Any, judge: JudgeInfo, dataset: str, metadata: dict[str, Any]) -> Verdict:
    # One JSON document has no useful line numbers, so a problem names the item by its list
    # index (0-based, as in the ids), e.g. field '[12].results'.
    try:
        return _convert(index, value, judge, dataset, metadata)
    except RowError as exc:
        where = f"[{index}]" + (f".{exc.field}" if exc.field else "")
        raise RowError(where, exc.message) from None


def import_file(path: Path, labels: LabelFile | None = None) -> list[Verdict]:
    source = str(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise input_error(source, "expected a JSON list of {input, output_1, output_2, label, results}")
    info = describe_path(path)
    judge = JudgeInfo(profile=f"llmbar-{info['protocol']}", provider=PROVIDER, model=info["evaluator"])
    metadata = {"source": path.name, "path": source, **info}
    rows = [(None, (index, value)) for index, value in enumerate(data)]
    return convert_rows(
        source, rows, lambda _line, pair: _convert_item(pair[0], pair[1], judge, info["dataset"], metadata)
    )


IMPORTER = Importer(
    name=FORMAT, import_file=import_file,
    description="LLMBar evaluator result.json (winner in both orders)",
)
