"""Dong et al. 2024 ("Can LLM be a Personalized Judge?"): `outputs/*.jsonl`, one judge call per row.

The recorded `answer` and `certainty` already are the parsed call (their code kept the first
character after `[[` and the first integer), so they are taken as recorded, not re-parsed.
"""

from __future__ import annotations

import json
import math
import re
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
    optional_text,
    require,
)
from judge.jsonl import iter_json_lines
from judge.records import Call, Choice, JudgeInfo, Label, Verdict

FORMAT = "personalized-judge"
PROFILE = "personalized-judge"

ANSWERS: dict[str, Choice] = {"A": "A", "B": "B", "C": "tie"}  # C is the tie option of *_with_tie files
TRUTHS: dict[str, Label] = {"A": "A", "B": "B", "C": "tie"}
DEFAULT_SCALE = 100
# The no-persona PRISM prompt asks for a certainty "from 1 to 5", the others "from 1 to 100".
_SCALE = re.compile(r"certainty level from 1 to (\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_RUN_SUFFIX = re.compile(r"^(?:jun\d+|new)$")
_HEADER = re.compile(r"^\[[^\]\n]+\][ \t]*$", re.MULTILINE)

# (start of A, end of A, start of B, end of B) in the three prompt layouts (PRISM, EC, AP).
_LAYOUTS: tuple[tuple[str, str, str, str], ...] = (
    ("[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]",
     "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]"),
    ("[Response A]", "[Response B]", "[Response B]", "[Answer]"),
    ("[Question-Answer Pair A]", "[Question-Answer Pair B]", "[Question-Answer Pair B]", "[Answer]"),
)


def describe_file(stem: str) -> dict[str, str]:
    """`<dataset>_<features>_<model>` or `<dataset>_..._<model>_jun5`: the dataset is the first part,
    the model the trailing parts with a hyphen (`meta-llama_Meta-Llama-3-70B-Instruct` has two),
    a `jun5`/`new` suffix marks a re-run and the middle names the prompt variant."""
    parts = stem.split("_")
    info: dict[str, str] = {"dataset": parts[0]}
    if len(parts) > 1 and _RUN_SUFFIX.match(parts[-1]):
        info["run"] = parts.pop()
    model_parts: list[str] = []
    while len(parts) > 1 and "-" in parts[-1]:
        model_parts.insert(0, parts.pop())
    info["model"] = "_".join(model_parts) or "unknown"
    if len(parts) > 1:
        info["variant"] = "_".join(parts[1:])
    return info


def certainty_scale(prompt: str | None) -> int:
    match = _SCALE.search(prompt or "")
    return int(match.group(1)) if match and int(match.group(1)) > 1 else DEFAULT_SCALE


def recorded_certainty(value: Any, scale: int) -> float | None:
    """An integer-like certainty on 1..scale as a fraction; `NA`, text or out of range = missing."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if not _NUMBER.match(value):
            return None
        value = float(value)
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= scale:
        return None
    return round(value / scale, 9)


def recorded_call(answer: Any, certainty: Any, raw: str, scale: int) -> Call:
    choice = ANSWERS.get(answer.strip()) if isinstance(answer, str) else None
    if choice is None:
        return Call(order="AB", sample=0, raw=raw,
                    error=f"no answer: recorded answer {json.dumps(answer)} is not A, B or C")
    return Call(order="AB", sample=0, raw=raw, choice=choice, certainty=recorded_certainty(certainty, scale))


def _between(text: str, start: str, end: str, last_end: bool) -> str | None:
    begin = text.find(start)
    if begin < 0:
        return None
    begin += len(start)
    # The B span ends at the final `[Answer]`; searching from the right keeps an answer that
    # happens to contain that word intact.
    stop = text.rfind(end) if last_end else text.find(end, begin)
    return text[begin:stop].strip() if stop >= begin else None


def _answer_part(span: str) -> str:
    # AP prompts show a question-answer pair; the user wrote the answer, so only it is measured.
    question, marker, answer = span.partition("\nAnswer: ")
    return answer.strip() if marker else question


def answers_from_prompt(prompt: str) -> tuple[str | None, str | None]:
    for start_a, end_a, start_b, end_b in _LAYOUTS:
        if start_a in prompt and start_b in prompt:
            a = _between(prompt, start_a, end_a, last_end=False)
            b = _between(prompt, start_b, end_b, last_end=True)
            if a is not None and b is not None:
                return _answer_part(a), _answer_part(b)
    return None, None


def persona_from_prompt(prompt: str) -> str | None:
    """The persona the judge saw. In the ap_* files `user_info` repeats one persona on every row
    (an upstream bug), so the prompt is the only faithful source."""
    start = prompt.find("[User Profile]\n")
    if start < 0:
        return None
    start += len("[User Profile]\n")
    header = _HEADER.search(prompt, start)
    persona = prompt[start:header.start() if header else len(prompt)].strip()
    return persona or None


def _lengths(row: dict[str, Any], prompt: str | None) -> tuple[int | None, int | None]:
    a, b = optional_text(row, "asst_A"), optional_text(row, "asst_B")
    if (a is None or b is None) and prompt:
        from_prompt = answers_from_prompt(prompt)
        a = a if a is not None else from_prompt[0]
        b = b if b is not None else from_prompt[1]
    return (len(a) if a is not None else None, len(b) if b is not None else None)


def _human_label(row: dict[str, Any]) -> Label | None:
    truth = row.get("ground_truth")
    if truth is None:
        return None
    if not isinstance(truth, str) or truth.strip() not in TRUTHS:
        raise RowError("ground_truth", f"expected A, B or C, got {json.dumps(truth)}")
    return TRUTHS[truth.strip()]


def _convert(path: Path, file_info: dict[str, str], judge: JudgeInfo, line: int | None, value: Any) -> Verdict:
    row = as_object(value)
    answer = require(row, "answer")
    certainty = require(row, "certainty")
    prompt = optional_text(row, "prompt")
    res = optional_text(row, "res")
    # SPEC 3.1: recorded certainties are on 1-100 whatever the prompt asked; a prompt that asked
    # for another scale (the no-persona file asks for 1-5) is noted, not rescaled.
    scale = DEFAULT_SCALE
    prompt_scale = certainty_scale(prompt)
    raw = res if res is not None else answer if isinstance(answer, str) else json.dumps(answer)
    call = recorded_call(answer, certainty, raw, scale)
    len_a, len_b = _lengths(row, prompt)
    metadata: dict[str, Any] = {"source": path.name, "path": str(path), "line": line}
    metadata.update((key, value) for key, value in file_info.items() if key != "model")  # model is in `judge`
    persona = persona_from_prompt(prompt) if prompt else None
    if persona is not None:
        metadata["persona"] = persona
    if isinstance(row.get("conversation_type"), str):  # PRISM: unguided / values guided / controversy guided
        metadata["conversation_type"] = row["conversation_type"]
    if prompt_scale != DEFAULT_SCALE:
        metadata["prompt_certainty_scale"] = prompt_scale
    return build_verdict(
        f"{path.stem}-{line}", [call], mode="choice", swapped=False, judge=judge,
        human_label=_human_label(row), metadata=metadata, len_a=len_a, len_b=len_b,
    )


def import_file(path: Path, labels: LabelFile | None = None) -> list[Verdict]:
    file_info = describe_file(path.stem)
    judge = JudgeInfo(profile=PROFILE, provider=PROVIDER, model=file_info["model"])
    return convert_rows(
        str(path), iter_json_lines(path), lambda line, row: _convert(path, file_info, judge, line, row)
    )


IMPORTER = Importer(
    name=FORMAT, import_file=import_file,
    description="Dong et al. 2024 outputs/*.jsonl (recorded answer + certainty, one order)",
)
