"""The `pjudge` command line attacked as a hidden test suite would (SPEC 7): every verb answers
--help; bad input exits 2 naming the file, line and field, anything else 1, never with a traceback
or a secret; an option out of range (NaN included) is a usage error before anything runs; an output
never replaces one of the command's inputs and is never left half-written; `--format json` prints
one JSON document on stdout. In this process (click's runner), nothing is served or started."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from judge.jsonl import read_items
from pjudge.cli import COMMANDS
from tests.support.cli import invoke_pjudge
from tests.support.verdicts import synthetic

GOOD = {"id": "a1", "persona": "x", "prompt": "p", "response_a": "ra", "response_b": "rb", "human_label": "A"}
VERDICT = {"id": "x", "winner": "A", "p_a": 0.7, "certainty": 0.4, "consistent": True, "abstained": False,
           "bpde": 0.0, "human_label": "A", "judge": {"profile": "p", "provider": "replay", "model": "m"}}
TOE_ROW = {"instruction": "q", "outputs": ["one", "two"], "preferences": {"human": 1}, "probs": [0.7, 0.3]}


def lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def items_file(tmp_path: Path, n: int = 3) -> Path:
    return lines(tmp_path / "items.jsonl", [{**GOOD, "id": f"i{k}", "human_label": "AB"[k % 2]} for k in range(n)])


def replay_file(tmp_path: Path, n: int = 3) -> Path:
    return lines(tmp_path / "rec.jsonl", [{"id": f"i{k}", "order": order, "sample": 0, "raw": "[[A]] [[80]]"}
                                          for k in range(n) for order in ("AB", "BA")])


def verdicts_file(tmp_path: Path, n: int = 40, name: str = "verdicts.jsonl") -> Path:
    return lines(tmp_path / name, [v.model_dump(mode="json") for v in synthetic(n)])


def assert_bad_input(result: Any, *where: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    for text in where:
        assert text in result.stderr, (text, result.stderr)


# ----------------------------------------------------------------------------- already right, pinned

@pytest.mark.parametrize("verb", [*COMMANDS, "keys create", "keys list", "keys revoke", "keys webhook-secret"])
def test_every_verb_has_help(verb: str) -> None:
    result = invoke_pjudge(*verb.split(), "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage:"), result.stderr


@pytest.mark.parametrize(("row", "field"), [
    ({**GOOD, "id": 1}, "field 'id'"),
    ({**GOOD, "human_label": "a"}, "field 'human_label'"),  # labels are exactly A, B, tie (SPEC 1.1)
    ({**GOOD, "human_label": "C"}, "field 'human_label'"),  # C = tie only in imported files (SPEC 5)
    ({**GOOD, "persona": [1]}, "field 'persona'"),
    ({**GOOD, "metadata": [1]}, "field 'metadata'"),
    ({**GOOD, "colour": "red"}, "field 'colour'"),
    ({k: v for k, v in GOOD.items() if k != "response_a"}, "field 'response_a'"),
    ({**GOOD, "id": "i0"}, "field 'id'"),  # duplicate
    ([1, 2], "expected a JSON object"),
    ("null", "expected a JSON object"),
    ('"text"', "expected a JSON object"),
])
def test_a_bad_item_line_exits_2_naming_file_line_and_field(tmp_path: Path, row: object, field: str) -> None:
    path = lines(tmp_path / "items.jsonl", [{**GOOD, "id": "i0"}, row])
    assert_bad_input(invoke_pjudge("estimate", str(path), "--format", "json"), str(path), "line 2", field)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "no items in file"), (b"\n \r\n\n", "no items in file"), (b'{"id": "\xe9"}\n', "invalid UTF-8"),
    (b"{not json\n", "invalid JSON"),
])
def test_an_empty_or_undecodable_items_file_exits_2(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(content)
    assert_bad_input(invoke_pjudge("estimate", str(path)), str(path), message)


def test_crlf_and_blank_lines_are_read(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\r\n".join([json.dumps(GOOD).encode(), b"", json.dumps({**GOOD, "id": "a2"}).encode(), b""]))
    assert [item.id for item in read_items(path)] == ["a1", "a2"]


@pytest.mark.parametrize("verb", ["estimate", "report", "personalization"])
def test_a_missing_file_exits_2_naming_it(tmp_path: Path, verb: str) -> None:
    missing = tmp_path / "nope.jsonl"
    assert_bad_input(invoke_pjudge(verb, str(missing)), str(missing), "cannot read file")


@pytest.mark.parametrize("args", [
    ["report", "V", "--threshold", "2"], ["report", "V", "--hitl", "-1"],
    ["report", "V", "--target-accuracy", "0.8", "--delta", "0"], ["report", "V", "--target-accuracy", "0.8", "--delta", "1"],
    ["report", "V", "--target-accuracy", "1.5"], ["report", "V", "--delta", "0.1"], ["report", "V", "--bootstrap", "-1"],
    ["report", "V", "--bootstrap", "100000000000"], ["report", "V", "--format", "xml"],
    ["calibrate", "V", "--target-accuracy", "1"], ["calibrate", "--target-accuracy", "0.8"],
    ["judge", "I", "-o", "O", "--samples", "0"], ["judge", "I", "-o", "O", "--concurrency", "0"],
    ["judge", "I", "-o", "O", "--concurrency", "99999999999999999999"], ["judge", "I", "-o", "O", "--temperature", "3"],
    ["estimate", "I", "--samples", "33"],
    ["llm-sim", "--port", "70000"], ["llm-sim", "--first-bias", "1.5"], ["llm-sim", "--latency-ms", "-1"],
    ["serve", "--port", "-1"], ["serve", "--threads", "0"], ["worker", "--processes", "0"],
    ["worker", "--concurrency", "0"], ["demo", "--noise", "2"],
])
def test_an_option_out_of_range_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    paths = {"V": str(verdicts_file(tmp_path)), "I": str(items_file(tmp_path)), "O": str(tmp_path / "out.jsonl")}
    result = invoke_pjudge(*[paths.get(a, a) for a in args])
    assert_bad_input(result)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("value", ["A", "B", "tie"])
def test_every_label_of_the_spec_is_read(tmp_path: Path, value: str) -> None:
    path = lines(tmp_path / "items.jsonl", [{**GOOD, "human_label": value}])
    assert read_items(path)[0].human_label == value


def test_format_json_prints_one_document_on_stdout(tmp_path: Path) -> None:
    items, replay = items_file(tmp_path), replay_file(tmp_path)
    verdicts = verdicts_file(tmp_path)
    toe = lines(tmp_path / "toe.calibration.jsonl", [TOE_ROW] * 40)
    responses = lines(tmp_path / "responses.jsonl", [
        {"prompt_id": p, "persona_id": u, "system": "s", "response": f"{u} {p} words", "reference": f"ref {u} {p}"}
        for p in ("p1", "p2") for u in ("u1", "u2", "u3")])
    runs = [
        ("judge", str(items), "-o", str(tmp_path / "v.jsonl"), "--replay", str(replay), "--format", "json"),
        ("import", "trust-or-escalate", str(toe), "-o", str(tmp_path / "t.jsonl"), "--format", "json"),
        ("estimate", str(items), "--format", "json"),
        ("calibrate", str(verdicts), "--target-accuracy", "0.6", "--format", "json"),
        ("report", str(verdicts), "--format", "json", "--bootstrap", "20", "--group-by", "g"),
        ("config", "--format", "json"),
        ("personalization", str(responses), "--format", "json"),
    ]
    for args in runs:
        result = invoke_pjudge(*args)
        assert result.returncode == 0, (args, result.stderr)
        json.loads(result.stdout)  # exactly one document: anything else on stdout fails here


# ----------------------------------------------------------------------------- JSON the decoder refused badly

@pytest.mark.parametrize(("raw", "message"), [
    (b'{"id": "a1", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": NaN}}',
     "NaN is not valid JSON"),
    (b'{"id": "a1", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": -Infinity}}',
     "-Infinity is not valid JSON"),
    (b'{"id": "a1", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": 1e999}}',
     "out of range"),
    (b'{"id": "a1", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": ' + b"9" * 5000 + b"}}",
     "too long"),
    (b'{"id": "a1", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": '
     + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}", "nested too deeply"),
    (b'{"id": "a1", "prompt": "p", "response_a": "a", "response_b": "b", "metadata": {"x": "\\udc00"}}',
     "unpaired surrogate characters are not allowed (at metadata.x)"),
], ids=["nan", "infinity", "1e999", "long-integer", "deep", "surrogate"])
def test_json_no_output_could_carry_exits_2_naming_the_line(tmp_path: Path, raw: bytes, message: str) -> None:
    """NaN/Infinity are not JSON, 1e999 is no number a verdict could carry back, a long integer or
    deep nesting raised ValueError/RecursionError (exit 1 without file or line), and an unpaired
    surrogate failed only when the verdicts were written, after every call was made."""
    path = tmp_path / "items.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + raw + b"\n")
    assert_bad_input(invoke_pjudge("estimate", str(path)), str(path), "line 2", message)
    toe = tmp_path / "toe.jsonl"
    toe.write_bytes(json.dumps(TOE_ROW).encode() + b"\n" + raw + b"\n")
    assert_bad_input(invoke_pjudge("import", "trust-or-escalate", str(toe), "-o", str(tmp_path / "o.jsonl")),
                     str(toe), "line 2", message)
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("fmt", ["llmbar", "faireval"])
def test_json_documents_of_the_json_importers_are_decoded_as_strictly(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(b"[" * 50_000 + b"]" * 50_000)
    labels = ["--labels", str(lines(tmp_path / "labels.txt", ["CHATGPT"]))] if fmt == "faireval" else []
    result = invoke_pjudge("import", fmt, str(path), "-o", str(tmp_path / "o.jsonl"), *labels)
    assert_bad_input(result, str(path), "nested too deeply")


def test_a_utf8_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Some Windows tools start UTF-8 files with a BOM: json.loads refused it (exit 2, 'Unexpected
    UTF-8 BOM') for items, verdicts, labels and every importer."""
    bom = b"\xef\xbb\xbf"
    items = tmp_path / "items.jsonl"
    items.write_bytes(bom + items_file(tmp_path).read_bytes())
    assert invoke_pjudge("estimate", str(items)).returncode == 0
    verdicts = tmp_path / "bom-verdicts.jsonl"
    verdicts.write_bytes(bom + verdicts_file(tmp_path).read_bytes())
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(bom + b'{"id": "s0", "human_label": "B"}\n')
    result = invoke_pjudge("report", str(verdicts), "--bootstrap", "0", "--labels", str(labels))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["items"] == 40
    toe = tmp_path / "toe.calibration.jsonl"
    toe.write_bytes(bom + json.dumps(TOE_ROW).encode() + b"\n")
    result = invoke_pjudge("import", "trust-or-escalate", str(toe), "-o", str(tmp_path / "o.jsonl"))
    assert result.returncode == 0, result.stderr


def test_a_bom_before_a_json_document_importer_file_is_read(tmp_path: Path, shared_data: Path) -> None:
    source = shared_data / "llmbar/Dataset/LLMBar/Natural/evaluators/LLaMA2/Swap/result.json"
    path = tmp_path / "result.json"
    path.write_bytes(b"\xef\xbb\xbf" + source.read_bytes())
    result = invoke_pjudge("import", "llmbar", str(path), "-o", str(tmp_path / "o.jsonl"), "--format", "json")
    assert result.returncode == 0 and json.loads(result.stdout)["verdicts"] == 100, result.stderr


# ----------------------------------------------------------------------------- verdict files

@pytest.mark.parametrize(("change", "field"), [
    ({"p_a": 1.5}, "field 'p_a'"), ({"p_a": -0.5}, "field 'p_a'"), ({"certainty": 3}, "field 'certainty'"),
    ({"certainty": -0.1}, "field 'certainty'"), ({"bpde": -1}, "field 'bpde'"), ({"len_a": -4}, "field 'len_a'"),
    ({"calls": [{"order": "AB", "choice": "A", "certainty": 80}]}, "field 'calls.0.certainty'"),
    ({"calls": [{"order": "AB", "choice": "A", "cost_usd": -1}]}, "field 'calls.0.cost_usd'"),
])
def test_a_verdict_number_outside_its_range_exits_2(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    """SPEC 1.2: p_a and certainty are in [0, 1]; every SPEC 4 statistic assumes it. A p_a of 1.5
    was counted as a confident A and gave a report with exit 0."""
    path = lines(tmp_path / "v.jsonl", [VERDICT, {**VERDICT, "id": "y", **change}])
    assert_bad_input(invoke_pjudge("report", str(path), "--bootstrap", "0"), str(path), "line 2", field)
    stage = lines(tmp_path / "s.jsonl", [VERDICT, {**VERDICT, "id": "y", **change}])
    assert_bad_input(invoke_pjudge("calibrate", str(stage), "--target-accuracy", "0.8"), str(stage), "line 2")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_verdict_number_exits_2(tmp_path: Path, number: str) -> None:
    """pydantic's JSON reads NaN and Infinity, and 1e999 as inf: each was a p_a of the report."""
    text = json.dumps({**VERDICT, "id": "y"})
    free = json.dumps({**VERDICT, "id": "z"}).replace('"human_label"', f'"metadata": {{"x": {number}}}, "human_label"')
    path = lines(tmp_path / "v.jsonl", [VERDICT, text.replace('"p_a": 0.7', f'"p_a": {number}'), free])
    result = invoke_pjudge("report", str(path), "--bootstrap", "0")
    assert_bad_input(result, str(path), "line 2, field 'p_a'")
    assert "line 3" in result.stderr  # in metadata too: 1e999 was read as inf and written back as null


# ----------------------------------------------------------------------------- options

@pytest.mark.parametrize("args", [
    ["report", "V", "--threshold", "nan"], ["report", "V", "--hitl", "nan"],
    ["report", "V", "--target-accuracy", "nan"], ["report", "V", "--target-accuracy", "0.8", "--delta", "nan"],
    ["calibrate", "V", "--target-accuracy", "nan"], ["calibrate", "V", "--target-accuracy", "0.8", "--delta", "nan"],
    ["export", "I", "V", "--min-certainty", "nan"], ["judge", "I", "-o", "O", "--adaptive-margin", "nan"],
    ["submit", "I", "--url", "http://127.0.0.1:9", "--key", "k", "--poll", "nan"],
    ["submit", "I", "--url", "http://127.0.0.1:9", "--key", "k", "--max-cost", "inf"],
    ["report", "V", "--bootstrap", "10", "--seed", "-5"],
])
def test_nan_infinity_and_negative_seeds_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    """click's FloatRange compares the bounds only, and NaN fails no comparison: `--hitl nan` exited
    1 ('cannot convert float NaN to integer'), `--threshold nan` and `--target-accuracy nan` gave a
    report, `calibrate --delta nan` exited 1; a negative --seed exited 1 from numpy."""
    paths = {"V": str(verdicts_file(tmp_path)), "I": str(items_file(tmp_path)), "O": str(tmp_path / "out.jsonl")}
    assert_bad_input(invoke_pjudge(*[paths.get(a, a) for a in args]), "Invalid value")


def test_llm_sim_with_a_nan_rate_is_refused_before_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    import llm_sim.server

    def serve_forever(*args: object, **kwargs: object) -> None:
        raise AssertionError("started serving")

    monkeypatch.setattr(llm_sim.server, "serve_forever", serve_forever)
    for flag in ("--noise", "--first-bias", "--fail-rate", "--malformed-rate", "--latency-ms"):
        assert_bad_input(invoke_pjudge("llm-sim", "--port", "0", flag, "nan"), flag)


# ----------------------------------------------------------------------------- outputs

def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    """`pjudge judge items.jsonl -o items.jsonl` replaced the items with the verdicts (exit 0); report,
    import and export overwrote their input the same way."""
    items, replay = items_file(tmp_path), replay_file(tmp_path)
    verdicts = verdicts_file(tmp_path)
    toe = lines(tmp_path / "toe.calibration.jsonl", [TOE_ROW])
    profile = tmp_path / "mine.toml"
    profile.write_text(f'provider = "replay"\nmodel = "m"\nreplay_path = "{replay}"\n', encoding="utf-8")
    before = {path: path.read_bytes() for path in (items, replay, verdicts, toe, profile)}
    runs = [
        ("judge", str(items), "-o", str(items), "--replay", str(replay)),
        ("judge", str(items), "-o", str(profile), "--profile", str(profile)),
        ("judge", str(items), "-o", str(replay), "--replay", str(replay)),
        ("judge", str(items), "-o", str(tmp_path / "." / "items.jsonl"), "--replay", str(replay)),
        ("report", str(verdicts), "-o", str(verdicts), "--bootstrap", "0"),
        ("import", "trust-or-escalate", str(toe), "-o", str(toe)),
        ("export", str(items), str(verdicts), "-o", str(items)),
        ("submit", str(items), "--url", "http://127.0.0.1:9", "--key", "k", "-o", str(items)),
    ]
    for args in runs:
        assert_bad_input(invoke_pjudge(*args), "'-o'", "is an input of this command")
    assert {path: path.read_bytes() for path in before} == before


def test_an_empty_or_folder_output_is_a_usage_error_before_any_call(tmp_path: Path) -> None:
    """`-o ''` judged every item, then failed renaming onto '.' with exit 1."""
    items, replay = items_file(tmp_path), replay_file(tmp_path)
    for output in ("", str(tmp_path)):
        assert_bad_input(invoke_pjudge("judge", str(items), "-o", output, "--replay", str(replay)), "'-o'")
        toe = lines(tmp_path / "toe.calibration.jsonl", [TOE_ROW])
        assert_bad_input(invoke_pjudge("import", "trust-or-escalate", str(toe), "-o", output), "'-o'")


def test_an_unwritable_output_fails_before_any_call_naming_it(tmp_path: Path) -> None:
    """The output was opened only after judging: every call was made (and paid) first, and the
    message named a '.partial' file the user never gave."""
    items = items_file(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    output = blocker / "v.jsonl"  # a folder that is a file: cannot be made
    result = invoke_pjudge("judge", str(items), "-o", str(output), "--replay", str(replay_file(tmp_path)))
    assert result.returncode == 1 and str(output) in result.stderr and ".partial" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    result = invoke_pjudge("report", str(verdicts_file(tmp_path)), "-o", str(output), "--bootstrap", "0")
    assert result.returncode == 1 and str(output) in result.stderr, result.stderr


def test_report_output_is_replaced_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`report -o` truncated the old file and then wrote: a failure while writing left it empty."""
    import calibration.markdown

    verdicts, output = verdicts_file(tmp_path), tmp_path / "report.md"
    output.write_text("previous report\n", encoding="utf-8")
    monkeypatch.setattr(calibration.markdown, "render_markdown", lambda report: "half\ud800 written")
    result = invoke_pjudge("report", str(verdicts), "--format", "md", "-o", str(output), "--bootstrap", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert output.read_text(encoding="utf-8") == "previous report\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_text_atomic_leaves_no_scratch_file(tmp_path: Path) -> None:
    from judge.jsonl import write_text_atomic

    target = tmp_path / "deep" / "out.md"
    write_text_atomic(target, "text\n")
    assert target.read_text(encoding="utf-8") == "text\n" and sorted(p.name for p in target.parent.iterdir()) == ["out.md"]


# ----------------------------------------------------------------------------- URLs and secrets

def test_submit_never_shows_a_password_given_in_the_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.client

    monkeypatch.setattr(api.client.Retry, "delay", lambda self, attempt, retry_after: None)  # no retries
    items = items_file(tmp_path)
    result = invoke_pjudge("submit", str(items), "--url", "http://user:hunter2-secret@127.0.0.1:9", "--key", "k")
    assert result.returncode == 1 and "cannot reach" in result.stderr, result.stderr
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize("url", ["notaurl", "ftp://host", "http://", "http://127.0.0.1:99999"])
def test_submit_with_a_url_that_is_no_http_url_exits_2(tmp_path: Path, url: str) -> None:
    assert_bad_input(invoke_pjudge("submit", str(items_file(tmp_path)), "--url", url, "--key", "k"), "'--url'")


@pytest.mark.parametrize("verb", ["judge", "estimate"])
def test_a_bad_base_url_is_a_usage_error_without_its_password(tmp_path: Path, verb: str) -> None:
    """It was exit 1 from the provider, after the items were read."""
    items = items_file(tmp_path)
    out = [] if verb == "estimate" else ["-o", str(tmp_path / "v.jsonl")]
    for url, message in [("http://me:hunter2-secret@127.0.0.1:9/v1", "user name or password"),
                         ("ftp://127.0.0.1/v1", "http or https")]:
        result = invoke_pjudge(verb, str(items), *out, "--provider", "openai-compatible", "--model", "m",
                               "--base-url", url)
        assert_bad_input(result, "'--base-url'", message)
        assert "hunter2" not in result.stderr


def test_config_shows_an_absolute_sqlite_url_as_given() -> None:
    """mask_url rebuilt every URL: sqlite:////abs/path.db came back as sqlite://abs/path.db."""
    url = "sqlite:////var/lib/pjudge/jobs.db"
    result = invoke_pjudge("config", "--format", "json", env={"DATABASE_URL": url})
    assert json.loads(result.stdout)["settings"]["DATABASE_URL"] == url
    secret = invoke_pjudge("config", "--format", "json", env={"DATABASE_URL": "postgresql://u:hunter2@h/db"})
    assert "hunter2" not in secret.stdout and "u:***@h" in secret.stdout


@pytest.mark.parametrize("verb", ["submit", "judge", "keys list", "config"])
def test_a_bad_setting_in_the_environment_exits_2_naming_the_variable(tmp_path: Path, verb: str) -> None:
    """submit read its --url default from the settings before its error handling: a bad variable
    was a traceback; judge and keys printed pydantic's dump (with the value) and exited 1."""
    args = {"submit": [str(items_file(tmp_path))], "judge": [str(items_file(tmp_path)), "-o", str(tmp_path / "v.jsonl"),
                                                            "--replay", str(replay_file(tmp_path))]}.get(verb, [])
    result = invoke_pjudge(*verb.split(), *args, env={"PJUDGE_LANES": "many", "DATABASE_URL": "sqlite://"})
    assert_bad_input(result, "PJUDGE_LANES: Input should be a valid integer")
    assert "many" not in result.stderr and "pydantic" not in result.stderr


@pytest.mark.parametrize(("variable", "url", "args"), [
    ("DATABASE_URL", "mysql://u:hunter2-secret@db/jobs", ["keys", "list"]),
    ("DATABASE_URL", "jobs.sqlite", ["config"]),
    ("REDIS_URL", "cache.internal:6379", ["config"]),
    ("REDIS_URL", "http://:hunter2-secret@cache/0", ["worker", "--processes", "1"]),
])
def test_a_database_or_broker_url_of_no_known_kind_exits_2(monkeypatch: pytest.MonkeyPatch, variable: str, url: str,
                                                          args: list[str]) -> None:
    """A REDIS_URL without redis:// started workers that crashed and were restarted forever; a
    DATABASE_URL of another database exited 1 with 'No module named MySQLdb'; config showed both."""
    import worker.processes

    monkeypatch.setattr(worker.processes.Supervisor, "run", lambda self: pytest.fail("workers started"))
    result = invoke_pjudge(*args, env={variable: url})
    assert_bad_input(result, f"{variable}: must be")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(("variable", "url", "used"), [
    ("DATABASE_URL", "sqlite://", "sqlite://"), ("DATABASE_URL", "sqlite:////abs/x.db", "sqlite:////abs/x.db"),
    ("DATABASE_URL", "sqlite+pysqlite:///x.db", "sqlite+pysqlite:///x.db"),
    ("DATABASE_URL", "postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("DATABASE_URL", "postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
    ("DATABASE_URL", "postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("REDIS_URL", "redis://h:6379/0", "redis://h:6379/0"), ("REDIS_URL", "rediss://h:6380/1", "rediss://h:6380/1"),
    ("REDIS_URL", "redis+socket:///run/redis.sock", "redis+socket:///run/redis.sock"),
    ("REDIS_URL", "unix:///run/redis.sock", "redis+socket:///run/redis.sock"),  # kombu knows no unix://
])
def test_every_documented_url_form_is_accepted_and_usable(monkeypatch: pytest.MonkeyPatch, variable: str, url: str,
                                                          used: str) -> None:
    import kombu
    from sqlalchemy.engine import make_url

    from judge.settings import reset_settings, settings
    from store.db import database_url

    monkeypatch.setenv(variable, url)
    reset_settings()
    try:
        if variable == "DATABASE_URL":
            assert database_url() == used
            make_url(used).get_dialect()  # a driver SQLAlchemy has here
        else:
            secret = settings().redis_url
            assert secret is not None and secret.get_secret_value() == used
            kombu.Connection(used).transport  # noqa: B018 - the transport kombu resolves (KeyError for unix://)
    finally:
        reset_settings()


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    """`pjudge export ... | head -1`: stdout closed early printed 'error: [Errno 32] Broken pipe'."""
    import subprocess
    import sys

    n = 3000
    items = lines(tmp_path / "items.jsonl", [{**GOOD, "id": f"s{k}", "response_a": "a" * 60} for k in range(n)])
    verdicts = lines(tmp_path / "v.jsonl", [{**VERDICT, "id": f"s{k}"} for k in range(n)])
    proc = subprocess.Popen([sys.executable, "-m", "pjudge", "export", str(items), str(verdicts)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["chosen"] == "a" * 60
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert stderr == "" and proc.returncode in (0, 1), (proc.returncode, stderr)


def test_pjudge_report_reads_what_pjudge_judge_writes_at_the_ends_of_the_score_scale(tmp_path: Path) -> None:
    """faireval-scores parsed scores on 0-10, the template's scale being 1-10 (SPEC 3.2): 10 against
    0 gave p_a 1.056, which report (rightly, SPEC 1.2) refuses; a 0 is now an invalid sample."""
    items = items_file(tmp_path, 2)
    def raw(first: int, second: int) -> str:
        return f"Explained.\nScore of the Assistant 1: {first}\nScore of the Assistant 2: {second}"

    # A shown first in AB, second in BA: the same judgment (A 10, B low) in both orders.
    raws = {("i0", "AB"): raw(10, 0), ("i0", "BA"): raw(0, 10), ("i1", "AB"): raw(10, 1), ("i1", "BA"): raw(1, 10)}
    replay = lines(tmp_path / "rec.jsonl", [{"id": item_id, "order": order, "sample": sample, "raw": text}
                                            for (item_id, order), text in raws.items() for sample in range(3)])
    out = tmp_path / "v.jsonl"
    result = invoke_pjudge("judge", str(items), "-o", str(out), "--profile", "faireval-scores", "--replay", str(replay))
    assert result.returncode == 0, result.stderr
    verdicts = {row["id"]: row for row in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert verdicts["i0"]["winner"] is None and all(call["error"] for call in verdicts["i0"]["calls"])
    assert verdicts["i1"]["p_a"] == 1.0 and verdicts["i1"]["certainty"] == 1.0
    report = invoke_pjudge("report", str(out), "--bootstrap", "0")
    assert report.returncode == 0, report.stderr


def test_huge_probabilities_of_a_recorded_judge_keep_their_ratio(tmp_path: Path) -> None:
    """probs [1e308, 1e308]: their sum overflowed to infinity and p_a came out 0, not 0.5."""
    from judge.importers.trust_or_escalate import probability_of_a

    assert probability_of_a({"probs": [1e308, 1e308]}) == 0.5
    assert probability_of_a({"probs": [1.5e308, 0.5e308]}) == 0.75
    assert probability_of_a({"probs": [0.7, 0.3]}) == 0.7


# ---------------------------------------------------------------- outputs: links, devices, modes

def test_an_output_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.md"
    real.write_text("old\n")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    result = invoke_pjudge("report", str(verdicts_file(tmp_path)), "--format", "md", "-o", str(link), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and real.read_text().startswith("#") and link.read_text() == real.read_text()
    assert not list(tmp_path.glob(".*partial"))


def test_an_output_that_is_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    """`-o /dev/stdout` or `-o >(gzip > x)`: the report goes into the pipe; the pipe is not replaced
    by a regular file (as root, /dev/stdout itself would have been)."""
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke_pjudge("report", str(verdicts_file(tmp_path)), "--format", "md", "-o", str(fifo), "--bootstrap", "0")
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert received and received[0].startswith(b"#") and fifo.is_fifo()


def test_a_new_output_takes_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    import os
    import stat

    from judge.jsonl import write_text_atomic

    fresh, kept = tmp_path / "fresh.md", tmp_path / "kept.md"
    kept.write_text("old")
    kept.chmod(0o640)
    umask = os.umask(0o022)
    try:
        write_text_atomic(fresh, "new")
        write_text_atomic(kept, "new")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o644  # mkstemp made every output 0600
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"


def test_an_output_that_a_profile_reads_is_refused_however_the_profile_names_it(tmp_path: Path) -> None:
    """The guard saw only --replay: a profile file naming the recordings as its replay_path let
    `-o` overwrite them."""
    recordings = tmp_path / "rec.jsonl"
    recordings.write_text("{}\n")
    profile = tmp_path / "mine.toml"
    profile.write_text(f'name = "mine"\nprovider = "replay"\nmodel = "m"\nreplay_path = "{recordings}"\n')
    result = invoke_pjudge("judge", str(items_file(tmp_path)), "-o", str(recordings), "--profile", str(profile),
                           "--quiet")
    assert_bad_input(result, "is an input of this command")
    assert recordings.read_text() == "{}\n"


def test_options_of_minus_zero_are_echoed_as_zero(tmp_path: Path) -> None:
    result = invoke_pjudge("report", str(verdicts_file(tmp_path)), "--format", "json", "--threshold", "-0",
                           "--hitl", "-0", "--bootstrap", "0")
    assert result.returncode == 0 and "-0.0" not in result.stdout, result.stdout[:300]


def test_profile_and_price_files_are_read_by_the_rule_of_every_input(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A JSON profile with a byte-order mark was 'Unexpected UTF-8 BOM'; PJUDGE_PRICES took NaN."""
    from judge.prices import PriceError, parse_prices
    from judge.profiles import ProfileError, load_profile

    profile = tmp_path / "mine.json"
    profile.write_bytes(b"\xef\xbb\xbf" + json.dumps({"name": "mine", "model": "m-1"}).encode())
    assert load_profile(str(profile)).model == "m-1"
    profile.write_text('{"name": "mine", "temperature": NaN}')
    with pytest.raises(ProfileError, match="NaN is not valid JSON"):
        load_profile(str(profile))
    with pytest.raises(PriceError, match="NaN is not valid JSON"):
        parse_prices('{"m": {"input_per_mtok": NaN}}')
    prices = tmp_path / "prices.json"
    prices.write_bytes(b"\xef\xbb\xbf" + json.dumps({"m": {"input_per_mtok": 1.0}}).encode())
    assert parse_prices(str(prices))["m"].input_per_mtok == 1.0
