"""Wang et al. 2023 ("Large Language Models are not Fair Evaluators"): review files with k raw
texts in the original order (`review`, Assistant 1 = response A) and k in the swapped order
(`review_bpc`, Assistant 1 = response B) per question.

Every text is re-parsed: the stored `score` field is wrong in some published runs (it averages the
swapped reviews without un-swapping them).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from judge.importers._common import (
    PROVIDER,
    Importer,
    LabelFile,
    build_verdict,
    convert_rows,
    labels_by_question,
    parsed_call,
    read_question_rows,
    text_list,
)
from judge.parsers import parse_scores
from judge.records import Call, JudgeInfo, Label, Verdict

FORMAT = "faireval"
PROFILE = "faireval-scores"
# <pair>_<judge model>_mec3_bpc1: the judge model, then k (MEC) and whether BPC was on.
_FILE_NAME = re.compile(r"_(?P<model>[^_]+)_mec(?P<mec>\d+)_bpc(?P<bpc>\d+)$")


def describe_file(stem: str) -> dict[str, Any]:
    match = _FILE_NAME.search(stem)
    if match is None:
        return {"model": "unknown"}
    return {"model": match["model"], "mec": int(match["mec"]), "bpc": int(match["bpc"])}


def calls_of(row: dict[str, Any]) -> list[Call]:
    """Order AB samples 0..k-1 from `review`, then order BA samples from `review_bpc`."""
    original = text_list(row, "review", required=True)
    swapped = text_list(row, "review_bpc", required=False)
    return [parsed_call(raw, "AB", sample, parse_scores) for sample, raw in enumerate(original)] + [
        parsed_call(raw, "BA", sample, parse_scores) for sample, raw in enumerate(swapped)
    ]


def _convert(row: dict[str, Any], label: Label | None, judge: JudgeInfo, metadata: dict[str, Any]) -> Verdict:
    calls = calls_of(row)
    swapped = any(call.order == "BA" for call in calls)
    return build_verdict(
        str(row["question_id"]), calls, mode="scores", swapped=swapped, judge=judge,
        human_label=label, metadata=metadata,
    )


def import_file(path: Path, labels: LabelFile | None = None) -> list[Verdict]:
    source = str(path)
    rows = read_question_rows(path)
    by_question = labels_by_question(labels, [row["question_id"] for _, row in rows], source)
    file_info = describe_file(path.stem)
    judge = JudgeInfo(profile=PROFILE, provider=PROVIDER, model=file_info.pop("model"))
    base = {"dataset": "faireval", "source": path.name, "path": source, **file_info}
    return convert_rows(
        source, rows,
        lambda line, row: _convert(row, by_question.get(row["question_id"]), judge, {**base, "line": line}),
    )


IMPORTER = Importer(
    name=FORMAT, import_file=import_file, uses_labels=True,
    description="FairEval review files (review + review_bpc raw texts), re-parsed; labels via --labels",
)
