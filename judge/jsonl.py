"""JSON Lines reading and writing with validation that names the file, line and field.

A file is validated whole before anything is returned: one bad line rejects the file, so a caller
never stores half of it.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import operator
import os
import re
import stat
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self, TypeVar

from pydantic import BaseModel, ValidationError

from judge.records import PairItem, Verdict

M = TypeVar("M", bound=BaseModel)


@dataclass
class InputProblem:
    line: int | None
    field: str | None
    message: str

    def describe(self, source: str) -> str:
        where = source
        if self.line is not None:
            where += f", line {self.line}"
        if self.field:
            where += f", field '{self.field}'"
        return f"{where}: {self.message}"


@dataclass
class InputError(Exception):
    """Bad input: a file (or request body) that is rejected whole. CLI exit code 2, HTTP 4xx."""

    source: str
    problems: list[InputProblem] = field(default_factory=list)

    def __str__(self) -> str:
        shown = [p.describe(self.source) for p in self.problems[:10]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problem(s)")
        return "\n".join(shown) if shown else f"{self.source}: invalid input"

    @property
    def first(self) -> InputProblem | None:
        return self.problems[0] if self.problems else None


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def problems_from_validation(error: ValidationError, line: int | None) -> list[InputProblem]:
    problems = []
    for detail in error.errors():
        loc = detail.get("loc", ())
        # Union members add their type name to the location; it only confuses the reader.
        loc = tuple(p for p in loc if p not in ("str", "dict[str,any]", "function-after[_not_blank(), str]"))
        message = detail.get("msg", "invalid value")
        if detail.get("type") == "extra_forbidden":
            message = "unknown field"
        elif detail.get("type") == "missing":
            message = "required field is missing"
        problems.append(InputProblem(line=line, field=_field_path(loc) or None, message=message))
    return problems


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Build many small objects without the cyclic GC rescanning them all: reading 100k verdicts
    takes a quarter of the time. Nothing built here forms reference cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


BOM = b"\xef\xbb\xbf"
# A \u escape of a surrogate half: the only way JSON text decodes to a string UTF-8 cannot encode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > 4000:  # Python refuses over 4300 digits, with a message about its own limit
        raise ValueError(f"an integer of {digits} digits is too long")
    return int(text)


def bad_text(value: str, nul: bool = True) -> str | None:
    """Why a decoded string cannot be stored or written (a lone surrogate; NUL, which PostgreSQL's
    text refuses, unless `nul` is False), or None."""
    if nul and "\x00" in value:
        return "NUL characters are not allowed"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "unpaired surrogate characters are not allowed"
    return None


def _shown(path: str) -> str | None:
    return (path[:300] + "...") if len(path) > 300 else path or None


def find_bad_text(document: object, nul: bool = True) -> tuple[str | None, str] | None:
    """Where the first string (key or value) no database stores is in a decoded document, and why:
    its path as the error details write one (`items[3].prompt`; a bad key is named by the object
    holding it; None: the document itself). Iterative: a recursive walk could overflow on deep nesting."""
    stack: list[tuple[object, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            reason = bad_text(value, nul)
            if reason:
                return _shown(path), reason
        elif isinstance(value, dict):
            for key in value:
                reason = bad_text(key, nul) if isinstance(key, str) else None
                if reason:
                    return _shown(path), f"a key: {reason}"
            stack.extend((child, f"{path}.{str(key)[:100]}" if path else str(key)[:100])
                         for key, child in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{index}]") for index, child in reversed(list(enumerate(value))))
    return None


_STRICT = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float, parse_int=_int)


def strict_json(text: str) -> Any:
    """One JSON text decoded by the one strict rule of every input, files and request bodies alike:
    NaN and Infinity (not JSON), numbers out of a float's range, too long integers and nesting deeper
    than the decoder can follow are refused with ValueError saying why; bad syntax raises
    JSONDecodeError (a ValueError), which knows its line and column. Strings are not checked here
    (decode_json refuses unpaired surrogates; the API names where they are, and NULs)."""
    try:
        return _STRICT.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def decode_json(text: str, raw: bytes | None = None) -> Any:
    """One JSON text of an input file, decoded by strict_json; unpaired surrogates (which no UTF-8
    output could hold) are refused too. ValueError saying why (json_problem gives the message)."""
    try:
        value = strict_json(text)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # NaN/Infinity, 1e999, too long an integer, too deep
        raise ValueError(f"invalid JSON: {exc}") from exc
    _check_text(value, raw if raw is not None else text.encode("utf-8", "surrogatepass"))
    return value


def decode_json_document(text: str, start: int) -> tuple[Any, int]:
    """The JSON value starting at `start` of `text` and where it ends, decoded as strictly as
    decode_json (for files of concatenated documents)."""
    try:
        value, end = _STRICT.raw_decode(text, start)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    _check_text(value, text[start:end].encode("utf-8", "surrogatepass"))
    return value, end


def json_problem(error: ValueError) -> str:
    """The message of decode_json's error."""
    return f"invalid JSON: {error.msg}" if isinstance(error, json.JSONDecodeError) else str(error)


def _check_text(value: Any, raw: bytes) -> None:
    found = find_bad_text(value, nul=False) if _SURROGATE_ESCAPE.search(raw) else None
    if found:
        where, reason = found
        raise ValueError(f"invalid JSON: {reason}" + (f" (at {where})" if where else ""))


def read_input_bytes(path: str | Path) -> bytes:
    """A whole input file's bytes without a leading UTF-8 byte-order mark (some Windows tools write
    one); InputError naming the file when it cannot be read."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(str(path), [InputProblem(None, None, f"cannot read file: {exc.strerror}")]) from exc
    return data[len(BOM):] if data.startswith(BOM) else data


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded JSON) for each non-blank line; raise InputError on bad bytes/JSON."""
    source = str(path)
    data = read_input_bytes(path)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(source, [InputProblem(number, None, f"invalid UTF-8 at byte {exc.start}")]) from exc
        try:
            yield number, decode_json(text, raw)
        except ValueError as exc:
            raise InputError(source, [InputProblem(number, None, json_problem(exc))]) from exc


def validate_items(rows: Iterable[tuple[int | None, Any]], source: str) -> list[PairItem]:
    """Validate decoded rows as pair items; all problems are collected, then raised together."""
    items: list[PairItem] = []
    problems: list[InputProblem] = []
    seen: dict[str, int | None] = {}
    for line, row in rows:
        if not isinstance(row, dict):
            hint = " (one item per line: JSON Lines, not a JSON array)" if isinstance(row, list) else ""
            problems.append(InputProblem(line, None, f"expected a JSON object{hint}"))
            continue
        try:
            item = PairItem.model_validate(row)
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, line))
            continue
        if item.id in seen:
            first = seen[item.id]
            where = f" (first seen on line {first})" if first is not None else ""
            problems.append(InputProblem(line, "id", f"duplicate id '{item.id}'{where}"))
            continue
        seen[item.id] = line
        items.append(item)
    if problems:
        raise InputError(source, problems)
    return items


def read_items(path: str | Path) -> list[PairItem]:
    with gc_paused():
        items = validate_items(iter_json_lines(path), str(path))
    if not items:
        raise InputError(str(path), [InputProblem(None, None, "no items in file")])
    return items


def read_verdicts(path: str | Path) -> list[Verdict]:
    """Verdicts of a JSON Lines file; pydantic parses each line's JSON directly (fast on large files)."""
    source = str(path)
    data = read_input_bytes(path)
    verdicts: list[Verdict] = []
    problems: list[InputProblem] = []
    with gc_paused():
        _parse_verdict_lines(data, verdicts, problems)
    if problems:
        raise InputError(source, problems)
    return verdicts


def _parse_verdict_lines(data: bytes, verdicts: list[Verdict], problems: list[InputProblem]) -> None:
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            verdict = Verdict.model_validate_json(raw)
        except ValidationError as exc:
            if any(e.get("type") == "json_invalid" for e in exc.errors()):
                try:
                    decode_json(raw.decode("utf-8"), raw)
                    problems.append(InputProblem(number, None, "invalid JSON"))
                except UnicodeDecodeError as decode_error:
                    problems.append(InputProblem(number, None, f"invalid UTF-8 at byte {decode_error.start}"))
                except ValueError as json_error:
                    problems.append(InputProblem(number, None, json_problem(json_error)))
            else:
                problems.extend(problems_from_validation(exc, number))
        else:
            line_problems = verdict_problems(verdict, number)
            if not line_problems and (b"NaN" in raw or b"Infinity" in raw or _LONG_NUMBER.search(raw)
                                      or (b"\\u" in raw and _SURROGATE_ESCAPE.search(raw))):
                # pydantic's JSON reads NaN, Infinity and 1e999 (as inf), and keeps unpaired surrogates
                # in free fields such as metadata: the strict rule decides those lines
                line_problems = _strict_json_problems(raw, number)
            if line_problems:
                problems.extend(line_problems)
            else:
                verdicts.append(verdict)
        if len(problems) > 100:
            break


# A number that may be out of a float's range (an exponent of 3 digits) or an integer too long.
_LONG_NUMBER = re.compile(rb"[eE][+-]?\d{3}|\d{4000}")


def _strict_json_problems(raw: bytes, line: int) -> list[InputProblem]:
    try:
        decode_json(raw.decode("utf-8"), raw)
    except ValueError as exc:
        return [InputProblem(line, None, json_problem(exc))]
    return []


# What a verdict read from a file may hold although its types are right (SPEC 1.2: p_a and
# certainty are probabilities; every statistic of SPEC 4 assumes these): (field, low, high), finite.
_FINITE = sys.float_info.max
VERDICT_BOUNDS = (("p_a", 0.0, 1.0), ("certainty", 0.0, 1.0), ("bpde", 0.0, _FINITE), ("len_a", 0, _FINITE),
                  ("len_b", 0, _FINITE))
CALL_BOUNDS = (("certainty", 0.0, 1.0), ("cost_usd", 0.0, _FINITE))


def _within(value: float | None, low: float, high: float) -> bool:
    return value is None or low <= value <= high  # NaN and infinities fail it


def _bounds_message(high: float) -> str:
    return "must be a number in [0, 1]" if high == 1.0 else "must be a finite number >= 0"


_VERDICT_VALUES = operator.attrgetter(*(name for name, _, _ in VERDICT_BOUNDS))
_CALL_VALUES = operator.attrgetter(*(name for name, _, _ in CALL_BOUNDS))
_VERDICT_RANGES = [(low, high) for _, low, high in VERDICT_BOUNDS]
_CALL_RANGES = [(low, high) for _, low, high in CALL_BOUNDS]


def _in_range(verdict: Verdict) -> bool:
    """verdict_problems' fast answer for the usual verdict (read for every line of a file)."""
    for value, (low, high) in zip(_VERDICT_VALUES(verdict), _VERDICT_RANGES, strict=True):
        if value is not None and not low <= value <= high:
            return False
    for call in verdict.calls:
        if call.scores is not None:
            return False
        for value, (low, high) in zip(_CALL_VALUES(call), _CALL_RANGES, strict=True):
            if value is not None and not low <= value <= high:
                return False
    return True


def verdict_problems(verdict: Verdict, line: int | None) -> list[InputProblem]:
    """Each field of a verdict (and of its calls) outside VERDICT_BOUNDS / CALL_BOUNDS, and a call's
    scores that are not finite, named with `line`."""
    if _in_range(verdict):
        return []
    problems = [InputProblem(line, name, _bounds_message(high))
                for name, low, high in VERDICT_BOUNDS if not _within(getattr(verdict, name), low, high)]
    for index, call in enumerate(verdict.calls):
        problems += [InputProblem(line, f"calls.{index}.{name}", _bounds_message(high))
                     for name, low, high in CALL_BOUNDS if not _within(getattr(call, name), low, high)]
        if call.scores is not None and not all(math.isfinite(score) for score in call.scores):
            problems.append(InputProblem(line, f"calls.{index}.scores", "must be finite numbers"))
    return problems


def dump_record(record: BaseModel) -> str:
    return json.dumps(record.model_dump(mode="json"), ensure_ascii=False)


def replaced_file(path: str | Path) -> Path | None:
    """The file an output to `path` replaces: `path`, or its target when it is a symlink; None when
    `path` exists and is no regular file (/dev/stdout, a FIFO), which is written in place."""
    target = Path(path)
    if target.exists() and not target.is_file():
        return None
    return target.resolve() if target.is_symlink() else target


class AtomicFile:
    """An output written to a temporary file beside its target and renamed into place by `commit`,
    so a run that fails or is interrupted leaves the previous file whole (`abort` drops the
    temporary one): the one way every command writes a file. The new file gets the mode the old
    one had, else the umask's; a symlink stays and its target is replaced; a target that exists
    and is no regular file (/dev/stdout, a FIFO, `>(gzip > x)`) is written in place."""

    def __init__(self, path: str | Path, binary: bool = False):
        replaced = replaced_file(path)
        self.in_place = replaced is None
        mode = "wb" if binary else "w"
        encoding = None if binary else "utf-8"
        if replaced is None:
            self.target, self.partial = Path(path), None
            self.file: IO[Any] = open(path, mode, encoding=encoding)  # noqa: SIM115 - closed by commit/abort
            return
        self.target = replaced
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.target.with_name(f".{self.target.name}.{uuid.uuid4().hex[:12]}.partial")
        # os.open with 0o666 lets the umask decide, as for any new file (mkstemp would make it 0600).
        descriptor = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            if self.target.exists():
                os.fchmod(descriptor, stat.S_IMODE(self.target.stat().st_mode))
            self.file = os.fdopen(descriptor, mode, encoding=encoding)
        except BaseException:
            os.close(descriptor)
            self.partial.unlink(missing_ok=True)
            raise

    def commit(self) -> None:
        self.file.close()
        if self.partial is not None:
            os.replace(self.partial, self.target)

    def abort(self) -> None:
        self.file.close()
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class JsonlWriter(AtomicFile):
    """Records written as JSON Lines through an AtomicFile, flushed line by line: an interrupted
    run leaves either the previous file or every line written so far in the `.partial` file, never
    a torn line in the target."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.path = Path(path)
        self.count = 0

    def write(self, record: BaseModel) -> None:
        self.file.write(dump_record(record) + "\n")
        self.file.flush()
        self.count += 1


def write_text_atomic(path: str | Path, text: str) -> None:
    """`text` written through an AtomicFile: the previous file stays whole unless this one is."""
    with AtomicFile(path) as output:
        output.file.write(text)


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> int:
    with JsonlWriter(path) as writer:
        for record in records:
            writer.write(record)
        return writer.count
