"""FastChat (Vicuna) GPT-4 reviews: JSON Lines of {question_id, text, score}, the vanilla template
in one order (Assistant 1 = response A). `text` is re-parsed; the stored `score` is ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from judge.importers._common import (
    PROVIDER,
    Importer,
    LabelFile,
    RowError,
    build_verdict,
    convert_rows,
    labels_by_question,
    parsed_call,
    read_question_rows,
    require,
)
from judge.parsers import parse_fastchat_scores
from judge.records import JudgeInfo, Label, Verdict

FORMAT = "fastchat"
PROFILE = "fastchat-vanilla"
# reviewer_id = <model>-<prompt kind>, e.g. gpt-4-0328-generic; the kind names FastChat's prompt.
_PROMPT_KINDS = ("default", "generic", "coding", "math")


def judge_of(row: dict[str, Any]) -> JudgeInfo:
    reviewer = row.get("reviewer_id")
    model = reviewer if isinstance(reviewer, str) and reviewer else "unknown"
    head, _, kind = model.rpartition("-")
    if head and kind in _PROMPT_KINDS:
        model = head
    return JudgeInfo(profile=PROFILE, provider=PROVIDER, model=model)


def _convert(row: dict[str, Any], label: Label | None, metadata: dict[str, Any]) -> Verdict:
    text = require(row, "text")
    if text is not None and not isinstance(text, str):
        raise RowError("text", "expected a string")
    call = parsed_call(text, "AB", 0, parse_fastchat_scores)
    if isinstance(row.get("reviewer_id"), str):
        metadata = {**metadata, "reviewer_id": row["reviewer_id"]}
    return build_verdict(
        str(row["question_id"]), [call], mode="scores", swapped=False, judge=judge_of(row),
        human_label=label, metadata=metadata,
    )


def import_file(path: Path, labels: LabelFile | None = None) -> list[Verdict]:
    source = str(path)
    rows = read_question_rows(path)
    by_question = labels_by_question(labels, [row["question_id"] for _, row in rows], source)
    base = {"dataset": "fastchat", "source": path.name, "path": source}
    return convert_rows(
        source, rows,
        lambda line, row: _convert(row, by_question.get(row["question_id"]), {**base, "line": line}),
    )


IMPORTER = Importer(
    name=FORMAT, import_file=import_file, uses_labels=True,
    description="FastChat review JSONL (vanilla template, one order), re-parsed; labels via --labels",
)
