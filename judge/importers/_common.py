"""Plumbing shared by the importers: reading files, row checks that name the line and field,
FairEval-style label files, and turning calls into a verdict with `judge.aggregation`."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.aggregation import Mode, aggregate
from judge.jsonl import InputError, InputProblem, decode_json, decode_json_document, read_input_bytes
from judge.parsers import Parsed, to_item_labels
from judge.records import Call, JudgeInfo, Label, Order, Verdict

PROVIDER = "replay"  # recorded outputs: nothing is called, nothing costs


class RowError(Exception):
    """One bad record; the caller adds the line number and collects it with the others."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass
class LabelFile:
    """Human labels given by position (line i labels the i-th question in question_id order)."""

    source: str
    labels: list[Label]


@dataclass(frozen=True)
class Importer:
    name: str
    import_file: Callable[[Path, LabelFile | None], list[Verdict]]
    uses_labels: bool = False
    description: str = ""


@dataclass
class ProblemLog:
    """Collects every problem of one file so that the user sees them all at once."""

    source: str
    problems: list[InputProblem] = field(default_factory=list)

    def add(self, line: int | None, field_name: str | None, message: str) -> None:
        self.problems.append(InputProblem(line, field_name, message))

    def raise_if_any(self) -> None:
        if self.problems:
            raise InputError(self.source, self.problems)


def input_error(source: str, message: str, line: int | None = None, field_name: str | None = None) -> InputError:
    return InputError(source, [InputProblem(line, field_name, message)])


def read_text(path: Path) -> str:
    source = str(path)
    if path.is_dir():
        raise input_error(source, "is a directory, expected a file")
    data = read_input_bytes(path)  # without a byte-order mark
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise input_error(source, f"invalid UTF-8 at byte {exc.start}", line) from exc


_NON_SPACE = re.compile(r"\S")


def iter_json_documents(path: Path) -> Iterator[tuple[int, Any]]:
    """(line where it starts, value) for each JSON value of a file holding either JSON Lines or
    concatenated pretty-printed objects: FairEval's scripts write both, so one reader serves."""
    text = read_text(path)
    line, counted_to = 1, 0
    position = 0
    while (match := _NON_SPACE.search(text, position)) is not None:
        start = match.start()
        line += text.count("\n", counted_to, start)
        counted_to = start
        try:
            value, position = decode_json_document(text, start)
        except json.JSONDecodeError as exc:
            raise input_error(str(path), f"invalid JSON: {exc.msg}", exc.lineno) from exc
        except ValueError as exc:  # NaN, nesting too deep, ...: decode_json_document says which
            raise input_error(str(path), str(exc), line) from exc
        yield line, value


def read_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return decode_json(text)
    except json.JSONDecodeError as exc:
        raise input_error(str(path), f"invalid JSON: {exc.msg}", exc.lineno) from exc
    except ValueError as exc:
        raise input_error(str(path), str(exc)) from exc


def convert_rows(
    source: str,
    rows: Iterable[tuple[int | None, Any]],
    convert: Callable[[int | None, Any], Verdict],
) -> list[Verdict]:
    """Convert every row, collecting all problems; the file is rejected whole if any row is bad."""
    log = ProblemLog(source)
    verdicts: list[Verdict] = []
    for line, row in rows:
        try:
            verdicts.append(convert(line, row))
        except RowError as exc:
            log.add(line, exc.field, exc.message)
    log.raise_if_any()
    if not verdicts:
        raise input_error(source, "no records in file")
    return verdicts


def as_object(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise RowError(None, "expected a JSON object")
    return row


def require(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise RowError(name, "required field is missing")
    return row[name]


def optional_text(row: dict[str, Any], name: str) -> str | None:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise RowError(name, "expected a string")
    return value


def question_id(row: dict[str, Any]) -> int:
    value = require(row, "question_id")
    # bool is an int in Python, but `true` is never a question number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise RowError("question_id", "expected an integer")
    return value


def text_list(row: dict[str, Any], name: str, required: bool) -> list[str | None]:
    """A list of raw judge texts; null entries are kept (a failed sample), other types are an error."""
    value = require(row, name) if required else row.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RowError(name, "expected a list of strings")
    for index, entry in enumerate(value):
        if entry is not None and not isinstance(entry, str):
            raise RowError(f"{name}.{index}", "expected a string")
    return value


def parsed_call(raw: str | None, order: Order | None, sample: int, parse: Callable[[str], Parsed]) -> Call:
    """A call re-parsed from its raw text with this project's parser; a failure stays as an error."""
    if raw is None:
        return Call(order=order, sample=sample, raw=None, error="no recorded output")
    parsed = parse(raw)
    if not parsed.ok:
        return Call(order=order, sample=sample, raw=raw, error=f"unparseable: {parsed.error}")
    choice, scores = to_item_labels(parsed, order)
    return Call(order=order, sample=sample, raw=raw, choice=choice, certainty=parsed.certainty, scores=scores)


def build_verdict(
    verdict_id: str,
    calls: list[Call],
    mode: Mode,
    swapped: bool,
    judge: JudgeInfo,
    human_label: Label | None,
    metadata: dict[str, Any],
    len_a: int | None = None,
    len_b: int | None = None,
) -> Verdict:
    # No certainty threshold on import (SPEC 1.2), so `abstained` is always false here.
    result = aggregate(calls, mode=mode, swapped=swapped, certainty_threshold=None)
    error = None
    if result.winner is None:
        first = next((c.error for c in calls if c.error), "no call")
        error = f"no call could be parsed: {first}"
    return Verdict(
        id=verdict_id, winner=result.winner, p_a=result.p_a, certainty=result.certainty,
        consistent=result.consistent, abstained=result.abstained, bpde=result.bpde,
        human_label=human_label, judge=judge, calls=calls, len_a=len_a, len_b=len_b,
        error=error, metadata=metadata,
    )


# FairEval's human label file (also used for FastChat's reviews of the same 80 questions).
LABEL_WORDS: dict[str, Label] = {"CHATGPT": "A", "VICUNA13B": "B", "TIE": "tie"}


def read_label_file(path: str) -> LabelFile:
    text = read_text(Path(path))
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing newline (or its absence) is not a label
        lines.pop()
    log = ProblemLog(path)
    labels: list[Label] = []
    for number, line in enumerate(lines, start=1):
        word = line.strip().upper()
        if word not in LABEL_WORDS:
            log.add(number, None, f"unknown label {line.strip()!r} (expected CHATGPT, VICUNA13B or TIE)")
            continue
        labels.append(LABEL_WORDS[word])
    log.raise_if_any()
    if not labels:
        raise input_error(path, "no labels in file")
    return LabelFile(source=path, labels=labels)


def labels_by_question(labels: LabelFile | None, question_ids: list[int], source: str) -> dict[int, Label]:
    """Label i goes to the i-th question in question_id order; the counts must match exactly,
    since a shifted label file would silently score every item against the wrong label."""
    if labels is None:
        return {}
    ordered = sorted(question_ids)
    if len(labels.labels) != len(ordered):
        raise input_error(
            labels.source,
            f"has {len(labels.labels)} labels but {source} has {len(ordered)} questions "
            "(line i labels the i-th question in question_id order)",
        )
    return dict(zip(ordered, labels.labels, strict=True))


def read_question_rows(path: Path) -> list[tuple[int | None, dict[str, Any]]]:
    """The records of a FairEval/FastChat review file, each an object with a unique integer
    `question_id`; checked before anything else because the labels are matched by that order."""
    source = str(path)
    log = ProblemLog(source)
    rows: list[tuple[int | None, dict[str, Any]]] = []
    seen: dict[int, int | None] = {}
    for line, value in iter_json_documents(path):
        try:
            row = as_object(value)
            qid = question_id(row)
        except RowError as exc:
            log.add(line, exc.field, exc.message)
            continue
        if qid in seen:
            log.add(line, "question_id", f"duplicate question_id {qid} (first on line {seen[qid]})")
            continue
        seen[qid] = line
        rows.append((line, row))
    log.raise_if_any()
    if not rows:
        raise input_error(source, "no records in file")
    return rows
