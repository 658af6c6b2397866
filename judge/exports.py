"""Preference rows for training (issue 16.5): the `prompt`/`chosen`/`rejected` rows TRL's
DPOTrainer reads, built from a pair item and its verdict, and their JSON Lines and Parquet encodings.

One home for the row and for which verdicts make one: GET /v1/jobs/{id}/export (store.exports reads
a job's items and verdicts a page at a time), `pjudge export` over local files, and the client's
`export_dpo` / `to_dataset` all produce these rows.

Which verdicts (`Selection.keeps`): decided (winner A or B) and not abstained, always; then a
certainty of at least `min_certainty` (a verdict without one fails it) and, with `consistent_only`,
both orders agreeing.

The persona (`persona`):
- "raw": the item's persona as stored (text or an object) under `persona`, absent when the item has
  none: the export's first format, the default of JSON Lines. A Parquet column cannot mix text and
  objects, so Parquet refuses it.
- "column": `persona` on every row, as text (`render_persona`: an object's attributes become one
  sentence each, as the judge's prompt shows them) or null. The default of Parquet.
- "fold": no persona column; an item with a persona has the prompt `FOLD.format(persona=..., prompt=...)`
  (the persona text, then the question, in the judge templates' [User Profile] / [User Question]
  blocks), an item without one its prompt unchanged.

`conversational`: TRL's conversational format instead of plain text: `prompt` is a list of messages
(a system message "[User Profile]\\n<persona>" first when folded, then the user's prompt),
`chosen` and `rejected` one assistant message each.

Beside them every row has `id`, `winner` (the response chosen: "A" or "B"), `p_a`, `certainty`,
`consistent` and `judge` {profile, provider, model}, for weighted or filtered training.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from judge.jsonl import AtomicFile
from judge.records import Verdict
from judge.templates import render_persona

if TYPE_CHECKING:  # pyarrow is imported when Parquet is written
    import pyarrow as pa

PersonaMode = Literal["raw", "column", "fold"]
PERSONA_MODES: tuple[PersonaMode, ...] = ("raw", "column", "fold")
FOLD = "[User Profile]\n{persona}\n\n[User Question]\n{prompt}"
SYSTEM_FOLD = "[User Profile]\n{persona}"
PARQUET_MIMETYPE = "application/vnd.apache.parquet"
ROW_GROUP = 1000  # rows per Parquet row group: what is held in memory while a file is written


class ExportError(ValueError):
    """Options that cannot go together; `field` names the one to change."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Decision:
    """What of a verdict an export row reads."""

    winner: str | None
    p_a: float | None
    certainty: float | None
    consistent: bool | None
    abstained: bool
    profile: str
    provider: str
    model: str

    @classmethod
    def of(cls, verdict: Verdict) -> Decision:
        return cls(verdict.winner, verdict.p_a, verdict.certainty, verdict.consistent, verdict.abstained,
                   verdict.judge.profile, verdict.judge.provider, verdict.judge.model)


@dataclass(frozen=True)
class Selection:
    """Which verdicts become rows and how: the export's options (checked by `check`)."""

    persona: PersonaMode = "raw"
    conversational: bool = False
    min_certainty: float | None = None
    consistent_only: bool = False

    def keeps(self, decision: Decision) -> bool:
        """The one definition of the rows exported (store.exports filters the same in SQL first)."""
        if decision.winner not in ("A", "B") or decision.abstained:
            return False
        if self.min_certainty is not None and (decision.certainty is None or decision.certainty < self.min_certainty):
            return False
        return not self.consistent_only or decision.consistent is True

    def check(self, parquet: bool) -> None:
        if self.min_certainty is not None and not 0.0 <= self.min_certainty <= 1.0:
            raise ExportError("min_certainty", "a certainty between 0 and 1")
        if parquet and self.persona == "raw":
            raise ExportError("persona", "persona=raw keeps objects as objects, which a Parquet column cannot "
                                         "mix with text: use persona=column or persona=fold")


def resolve_persona(persona: PersonaMode | None, parquet: bool) -> PersonaMode:
    """The default persona mode: raw for JSON Lines (the first format), column for Parquet."""
    return persona or ("column" if parquet else "raw")


def fold(prompt: str, persona: str | dict[str, Any] | None) -> str:
    """The prompt with the persona folded in (FOLD), or unchanged when the persona is empty."""
    text = render_persona(persona)
    return FOLD.format(persona=text, prompt=prompt) if text else prompt


def preference_row(item: Mapping[str, Any], decision: Decision, selection: Selection) -> dict[str, Any]:
    """The export row of one kept verdict. `item` is a PairItem's JSON object (as stored, or
    `PairItem.model_dump()`)."""
    chosen, rejected = ("response_a", "response_b") if decision.winner == "A" else ("response_b", "response_a")
    persona = item.get("persona")
    text = render_persona(persona)
    prompt: Any = item["prompt"]
    if selection.conversational:
        messages = [{"role": "user", "content": prompt}]
        if selection.persona == "fold" and text:
            messages.insert(0, {"role": "system", "content": SYSTEM_FOLD.format(persona=text)})
        row: dict[str, Any] = {"id": item["id"], "prompt": messages,
                               "chosen": [{"role": "assistant", "content": item[chosen]}],
                               "rejected": [{"role": "assistant", "content": item[rejected]}]}
    else:
        if selection.persona == "fold":
            prompt = fold(prompt, persona)
        row = {"id": item["id"], "prompt": prompt, "chosen": item[chosen], "rejected": item[rejected]}
    if selection.persona == "column":
        row["persona"] = text or None
    elif selection.persona == "raw" and persona not in (None, "", {}):
        row["persona"] = persona
    row.update(winner=decision.winner, p_a=decision.p_a, certainty=decision.certainty,
               consistent=decision.consistent,
               judge={"profile": decision.profile, "provider": decision.provider, "model": decision.model})
    return row


def preference_rows(pairs: Iterable[tuple[Mapping[str, Any], Decision]], selection: Selection,
                    ) -> Iterator[dict[str, Any]]:
    """The rows of the kept pairs, in the order given."""
    for item, decision in pairs:
        if selection.keeps(decision):
            yield preference_row(item, decision, selection)


def jsonl_lines(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """One UTF-8 JSON line per row."""
    for row in rows:
        yield (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode()


# ---------------------------------------------------------------- Parquet

def arrow_schema(selection: Selection) -> pa.Schema:
    """The Parquet columns of rows made with `selection` (the JSON keys, in the same order)."""
    import pyarrow as pa

    text = pa.string()
    messages = pa.list_(pa.struct([("role", text), ("content", text)]))
    body = messages if selection.conversational else text
    fields = [("id", text), ("prompt", body), ("chosen", body), ("rejected", body)]
    if selection.persona == "column":
        fields.append(("persona", text))
    fields += [("winner", text), ("p_a", pa.float64()), ("certainty", pa.float64()), ("consistent", pa.bool_()),
               ("judge", pa.struct([("profile", text), ("provider", text), ("model", text)]))]
    return pa.schema(fields)


class _Pending:
    """A write-only file that keeps what was written until taken: ParquetWriter's sink, so a file
    streams out a row group at a time."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        return data


def parquet_chunks(rows: Iterable[dict[str, Any]], selection: Selection, row_group: int | None = None,
                   ) -> Iterator[bytes]:
    """A Parquet file of the rows, as bytes a row group at a time: at most `row_group` rows
    (ROW_GROUP) are held in memory, however many there are. No rows make a valid file with the
    columns and no row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_group = row_group or ROW_GROUP
    schema = arrow_schema(selection)
    sink = _Pending()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        group: list[dict[str, Any]] = []
        for row in rows:
            group.append(row)
            if len(group) >= row_group:
                writer.write_table(pa.Table.from_pylist(group, schema=schema))
                group = []
                yield sink.take()
        if group:
            writer.write_table(pa.Table.from_pylist(group, schema=schema))
    finally:
        writer.close()
    yield sink.take()


def is_parquet(path: str | Path) -> bool:
    """Parquet for a .parquet (or .pq) name, JSON Lines for any other."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]], selection: Selection) -> int:
    """The rows written to `path` (Parquet or JSON Lines by its name) through a temporary file beside
    it, moved into place once complete; the number of rows."""
    path = Path(path)
    selection.check(is_parquet(path))
    counted = _Counted(rows)
    chunks = parquet_chunks(counted, selection) if is_parquet(path) else jsonl_lines(counted)
    with AtomicFile(path, binary=True) as output:
        for chunk in chunks:
            output.file.write(chunk)
    return counted.count


class _Counted:
    def __init__(self, rows: Iterable[dict[str, Any]]):
        self.rows, self.count = rows, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.rows:
            self.count += 1
            yield row
