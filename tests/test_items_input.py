"""Bad input is rejected whole, with the file, line and field named (SPEC 1.1), exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge.jsonl import InputError, read_items
from tests.support.cli import invoke_pjudge

GOOD = {"id": "a1", "persona": "x", "prompt": "p", "response_a": "ra", "response_b": "rb", "human_label": "A"}


def write_lines(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_good_items_with_every_persona_shape(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "id": "a2", "persona": {"age": "30"}}, {**GOOD, "id": "a3", "persona": None},
            {**GOOD, "id": "a4", "human_label": None, "metadata": {"dataset": "d"}}]
    rows[2].pop("persona")
    items = read_items(write_lines(tmp_path / "items.jsonl", rows))
    assert [i.id for i in items] == ["a1", "a2", "a3", "a4"]
    assert not items[2].has_persona() and items[1].has_persona()


@pytest.mark.parametrize(
    ("bad_row", "line_field"),
    [
        ({k: v for k, v in GOOD.items() if k != "response_b"}, "line 2, field 'response_b'"),
        ({**GOOD, "prompt": 5}, "line 2, field 'prompt'"),
        ({**GOOD, "human_label": "C"}, "line 2, field 'human_label'"),
        ({**GOOD, "id": "a0"}, "line 2, field 'id'"),  # duplicate of line 1
        ({**GOOD, "colour": "red"}, "line 2, field 'colour'"),
        ({**GOOD, "response_a": "   "}, "line 2, field 'response_a'"),
        ("{not json", "line 2"),
        ([1, 2], "line 2"),
    ],
)
def test_bad_items_name_line_and_field(tmp_path: Path, bad_row: object, line_field: str) -> None:
    path = write_lines(tmp_path / "items.jsonl", [{**GOOD, "id": "a0"}, bad_row])
    with pytest.raises(InputError) as error:
        read_items(path)
    assert line_field in str(error.value)
    assert str(path) in str(error.value)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"id": "\xff\xfe"}\n')
    with pytest.raises(InputError, match="line 2: invalid UTF-8"):
        read_items(path)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no items"):
        read_items(write_lines(tmp_path / "items.jsonl", [""]))


@pytest.mark.parametrize(
    "bad_row",
    [{k: v for k, v in GOOD.items() if k != "prompt"}, {**GOOD, "human_label": "maybe"}, {**GOOD, "id": "a0"}],
)
def test_cli_exits_2_and_writes_nothing(tmp_path: Path, bad_row: dict[str, object]) -> None:
    items = write_lines(tmp_path / "items.jsonl", [{**GOOD, "id": "a0"}, GOOD, bad_row])
    out = tmp_path / "verdicts.jsonl"
    result = invoke_pjudge("judge", str(items), "-o", str(out), "--provider", "openai-compatible",
                           "--model", "sim-judge", "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2, result.stderr
    assert "line 3" in result.stderr
    assert not out.exists()
    assert list(tmp_path.glob("*.partial")) == []


def test_cli_invalid_utf8_exits_2(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_bytes(json.dumps(GOOD).encode() + b"\n\xc3\x28\n")
    out = tmp_path / "v.jsonl"
    result = invoke_pjudge("judge", str(items), "-o", str(out), "--provider", "openai-compatible", "--model", "m",
                           "--base-url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2 and "line 2" in result.stderr and not out.exists()


def test_cli_unknown_profile_exits_2(tmp_path: Path) -> None:
    items = write_lines(tmp_path / "items.jsonl", [GOOD])
    result = invoke_pjudge("judge", str(items), "-o", str(tmp_path / "v.jsonl"), "--profile", "no-such-profile")
    assert result.returncode == 2 and "unknown profile 'no-such-profile'" in result.stderr
