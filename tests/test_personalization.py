"""Degree of personalization (SPEC 6): the vectorised library against a straightforward implementation.

`straightforward_scores` (bench/straightforward_personalization.py, which the benchmark times the
library against too) is written from SPEC 6 alone, in the simplest pure Python (dictionaries,
loops, math.log2): it shares no code with calibration.personalization. The library must equal it
to 1e-9 on the EGISES sample document, on generated corpora and on the edge cases.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from bench.straightforward_personalization import (
    METRICS,
    simple_jsd,
    simple_round,
    simple_tokens,
    straightforward_scores,
)
from calibration.personalization import evaluate, validate_responses
from calibration.personalization_distances import (
    EmbeddingDistance,
    TextDistance,
    get_distance,
    is_empty_text,
    round_half_even,
    tokenize,
)
from judge.jsonl import InputError
from pjudge.commands.personalization import personalization_command

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PERSEVAL = SHARED_DATA / "perseval"
EGISES_SAMPLE = PERSEVAL / "KDM-LAB__EGISES-EMNLP23" / "docs" / "sample_consolidated.jsonl"
TOLERANCE = 1e-9


# ------------------------------------------------------------------ helpers


def library_scores(lines: list[dict[str, Any]], anchor_system: str | None = None,
                   distance: str | TextDistance = "jsd") -> Any:
    return evaluate(validate_responses(enumerate(lines, start=1), "test"), distance=distance,
                    anchor_system=anchor_system)


def assert_same(lines: list[dict[str, Any]], anchor_system: str | None = None,
                distance: str | TextDistance = "jsd",
                sigma: Callable[[str, str], float | None] = simple_jsd) -> None:
    report = library_scores(lines, anchor_system, distance)
    expected = straightforward_scores(lines, anchor_system, sigma)
    assert set(report.systems) == set(expected["systems"])
    for system, want in expected["systems"].items():
        got = report.systems[system].as_dict()
        assert got["n_prompts"] == want["n_prompts"] and got["n_skipped"] == want["n_skipped"], system
        for metric in METRICS:
            if want[metric] is None:
                assert got[metric] is None, (system, metric)
            else:
                assert got[metric] == pytest.approx(want[metric], abs=TOLERANCE), (system, metric)
    rows = report.persona_rows()
    assert len(rows) == len(expected["personas"])
    for row in rows:
        want = expected["personas"][(row["prompt_id"], row["system"], row["persona_id"])]
        for metric, value in want.items():
            assert row[metric] == pytest.approx(value, abs=TOLERANCE), (row, metric)


def egises_sample_lines(with_document: bool) -> list[dict[str, Any]]:
    """The EGISES sample document as responses.jsonl lines; the document itself as the anchor."""
    if not EGISES_SAMPLE.is_file():
        pytest.skip(f"EGISES sample not found at {EGISES_SAMPLE} (research-only data kept outside the repo)")
    record = json.loads(EGISES_SAMPLE.read_text(encoding="utf-8"))  # one pretty-printed record
    lines = []
    for user, texts in record["m_summary_dict"].items():
        for model, text in texts.items():
            if model != "user":
                lines.append({"prompt_id": record["doc_id"], "persona_id": user, "system": model,
                              "response": text, "reference": texts["user"]})
    if with_document:
        lines.append({"prompt_id": record["doc_id"], "persona_id": None, "system": "document",
                      "response": f"{record['doc_summ']} {record['doc_text']}"})
    return lines


def random_text(rng: random.Random, words: list[str], empty_rate: float = 0.06) -> str:
    if rng.random() < empty_rate:
        return rng.choice(["", "   ", "!!! 42", "--"])  # no token after tokenisation
    chosen = [rng.choice(words) for _ in range(rng.randint(1, 9))]
    decorated = [w.upper() if rng.random() < 0.1 else w + rng.choice(["", "", ",", "!", "7"]) for w in chosen]
    return " ".join(decorated)


def generated_lines(seed: int) -> list[dict[str, Any]]:
    """A random corpus: 1-7 personas per prompt, missing and empty references, empty responses,
    identical texts (small vocabulary), three systems and a persona-agnostic anchor system."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefg") for _ in range(rng.randint(1, 3))) for _ in range(14)]
    lines: list[dict[str, Any]] = []
    for p in range(10):
        personas = [f"u{i}" for i in rng.sample(range(20), rng.randint(1, 7))]
        references = {u: random_text(rng, words) for u in personas if rng.random() < 0.85}
        lines.append({"prompt_id": f"p{p}", "persona_id": None, "system": "anchor",
                      "response": random_text(rng, words, empty_rate=0.1)})
        for system in ("s1", "s2", "s3"):
            for persona in personas:
                line: dict[str, Any] = {"prompt_id": f"p{p}", "persona_id": persona, "system": system,
                                        "response": random_text(rng, words)}
                if persona in references:
                    line["reference"] = references[persona]
                lines.append(line)
    rng.shuffle(lines)  # order of lines must not matter
    return lines


def line(prompt: str, persona: str | None, system: str, response: Any, reference: str | None = None) -> dict:
    row = {"prompt_id": prompt, "persona_id": persona, "system": system, "response": response}
    if reference is not None:
        row["reference"] = reference
    return row


# ------------------------------------------------------------------ distance and tokens


def test_tokens_follow_spec() -> None:
    assert tokenize("Hello, World! 42 times—again\tand_again") == ["hello", "world", "timesagain", "and_again"]
    assert tokenize("R2-D2 is 3CPO's friend") == ["rd", "is", "cpos", "friend"]
    assert tokenize("") == [] and tokenize(" 123 !!! ") == []


def test_is_empty_text_agrees_with_tokenize_on_every_code_point() -> None:
    for code_point in range(0x110000):
        character = chr(code_point)
        assert is_empty_text(character) == (not tokenize(character)), hex(code_point)
    assert is_empty_text("!!! 2024 ...") and not is_empty_text("a")


def test_jsd_values() -> None:
    jsd = get_distance("jsd")
    assert jsd("the cat sat", "The cat, sat!") == 0.0
    assert jsd("a b", "c d") == 1.0
    assert jsd("a b", "a c") == 0.5
    assert math.isnan(jsd("", "a")) and math.isnan(jsd("123", "123"))
    assert jsd("a a b", "a b b c") == simple_jsd("a a b", "a b b c")


def test_jsd_matches_straightforward_on_random_pairs() -> None:
    rng = random.Random(7)
    words = list(string.ascii_lowercase[:6]) + ["ab", "ba", "abc"]
    texts = [random_text(rng, words, empty_rate=0.1) for _ in range(300)]
    jsd = get_distance("jsd")
    prepared = jsd.prepare(texts)
    left = np.array([rng.randrange(300) for _ in range(3000)])
    right = np.array([rng.randrange(300) for _ in range(3000)])
    got = jsd.between(prepared, left, right)
    for value, i, j in zip(got, left, right, strict=True):
        want = simple_jsd(texts[i], texts[j])
        assert (math.isnan(value) and want is None) or value == want


def test_rounding_is_half_even_on_the_decimal_value() -> None:
    values = np.array([0.00625, 0.00635, 0.12345, 0.123451, 1e-17, -1e-17, 0.99995, np.nan])
    got = round_half_even(values, 4)
    assert got[:7].tolist() == [0.0062, 0.0064, 0.1234, 0.1235, 0.0, 0.0, 1.0]
    assert math.isnan(got[7])


def letter_counts(texts: list[str]) -> list[list[int]]:
    """A stand-in sentence encoder (no model is ever downloaded): counts of the letters a-z."""
    return [[text.lower().count(letter) for letter in string.ascii_lowercase] for text in texts]


def simple_cosine_distance(text_a: str, text_b: str) -> float | None:
    if not simple_tokens(text_a) or not simple_tokens(text_b):
        return None
    (a,), (b,) = letter_counts([text_a]), letter_counts([text_b])
    norm_a, norm_b = math.sqrt(sum(v * v for v in a)), math.sqrt(sum(v * v for v in b))
    if norm_a == 0 or norm_b == 0:
        return None
    cosine = sum(u * v for u, v in zip(a, b, strict=True)) / (norm_a * norm_b)
    return simple_round(min(max((1 - cosine) / 2, 0.0), 1.0))


def test_embedding_distance_needs_its_optional_package_or_a_local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PJUDGE_EMBEDDING_MODEL", raising=False)
    distance = get_distance("embedding")
    with pytest.raises(RuntimeError, match="sentence-transformers|PJUDGE_EMBEDDING_MODEL"):
        distance.prepare(["some text"])


# ------------------------------------------------------------------ library == straightforward


@pytest.mark.parametrize("anchor_system", [None, "anchor"])
def test_distances_are_pluggable(anchor_system: str | None) -> None:
    distance = EmbeddingDistance(encoder=letter_counts)
    assert_same(generated_lines(5), anchor_system, distance, simple_cosine_distance)
    report = library_scores(generated_lines(5), anchor_system, distance)
    assert report.distance == "embedding"


@pytest.mark.shared_data
@pytest.mark.parametrize("anchor_system", [None, "document"])
def test_egises_sample_document(anchor_system: str | None) -> None:
    assert_same(egises_sample_lines(with_document=True), anchor_system)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("anchor_system", [None, "anchor"])
def test_generated_corpora(seed: int, anchor_system: str | None) -> None:
    assert_same(generated_lines(seed), anchor_system)


def test_prompt_with_one_persona_is_skipped_and_counted() -> None:
    lines = [line("p1", "u1", "A", "x y", "x"), line("p1", "u2", "A", "z", "z w"),
             line("p2", "u1", "A", "x", "x y"),  # one persona
             line("p3", "u1", "A", "x", "x y"), line("p3", "u2", "A", "y")]  # u2 has no reference
    report = library_scores(lines)
    assert report.systems["A"].n_prompts == 1 and report.systems["A"].n_skipped == 2
    assert report.systems["A"].skipped_prompts == ("p2", "p3")
    assert_same(lines)


def test_all_prompts_skipped_gives_null_scores() -> None:
    report = library_scores([line("p1", "u1", "A", "x", "x")])
    assert report.to_dict()["systems"]["A"] == {
        "n_prompts": 0, "n_skipped": 1, "degress": None, "egises": None, "edp": None, "perseval": None,
        "distance_to_reference": None}


@pytest.mark.parametrize("anchor_system", [None, "D"])
def test_identical_responses_mean_no_personalization(anchor_system: str | None) -> None:
    references = ["markets fell sharply today", "my team won the final", "new vegan recipes", "rain again"]
    lines = [line("p", f"u{i}", "same", "news of the day", ref) for i, ref in enumerate(references)]
    lines += [line("p", f"u{i}", "copy", ref, ref) for i, ref in enumerate(references)]
    lines.append(line("p", None, "D", "markets team vegan rain news"))
    report = library_scores(lines, anchor_system)
    assert report.systems["same"].degress < 1e-4 and report.systems["same"].egises > 0.9999
    assert report.systems["copy"].degress == pytest.approx(1.0)
    assert report.systems["copy"].distance_to_reference == 0.0
    assert_same(lines, anchor_system)


@pytest.mark.parametrize("anchor_system", [None, "D"])
def test_empty_texts(anchor_system: str | None) -> None:
    lines = [line("p", "u1", "A", "", "alpha beta"), line("p", "u2", "A", "gamma", "gamma delta"),
             line("p", "u3", "A", "beta", "beta"), line("p", "u4", "A", "zeta", "?! 12"),  # empty reference
             line("p", None, "D", "")]  # empty anchor: every ratio is 0, weights uniform
    report = library_scores(lines, anchor_system)
    rows = {row["persona_id"]: row for row in report.persona_rows()}
    assert set(rows) == {"u1", "u2", "u3"}  # a reference without tokens counts as no reference
    assert rows["u1"]["distance_to_reference"] == 1.0  # undefined a_j counts as 1
    assert rows["u1"]["degress"] == 0.0  # every pair with the empty response is undefined
    assert_same(lines, anchor_system)


def test_system_that_swaps_responses_keeps_degress_but_loses_perseval() -> None:
    """Personas on a ring; persona j's reference shares one word with each neighbour's. A system that
    answers j with j's own reference (plus a generic word) and one that answers j with j+1's: the
    distances between responses are the same (a rotation), so DEGRESS stays; accuracy collapses."""
    n = 6
    words = [a + b for a in "pqr" for b in "abcdef"]  # 18 words, no digits
    references = [" ".join(words[(3 * j + i) % (3 * n)] for i in range(4)) for j in range(n)]
    lines = []
    for j in range(n):
        lines.append(line("p", f"u{j}", "faithful", references[j] + " news", references[j]))
        lines.append(line("p", f"u{j}", "swapped", references[(j + 1) % n] + " news", references[j]))
    report = library_scores(lines)
    faithful, swapped = report.systems["faithful"], report.systems["swapped"]
    assert swapped.degress == pytest.approx(faithful.degress, abs=1e-12)
    assert faithful.degress > 0.75 and faithful.edp > 0.99  # close responses, accurate
    assert swapped.perseval < 0.1 * faithful.perseval
    assert_same(lines)


def test_order_of_lines_does_not_change_scores() -> None:
    lines = generated_lines(3)
    first = library_scores(lines).to_dict()
    second = library_scores(list(reversed(lines))).to_dict()
    for system, scores in first["systems"].items():
        for metric in METRICS:
            assert second["systems"][system][metric] == pytest.approx(scores[metric], abs=1e-12)


# ------------------------------------------------------------------ bad input names the line


def problems_of(lines: list[Any]) -> list[Any]:
    with pytest.raises(InputError) as caught:
        validate_responses(enumerate(lines, start=1), "responses.jsonl")
    return caught.value.problems


def test_line_without_persona_id() -> None:
    problems = problems_of([line("p", "u1", "A", "x", "x"), {"prompt_id": "p", "system": "A", "response": "y"}])
    assert (problems[0].line, problems[0].field) == (2, "persona_id")
    assert "missing" in problems[0].message


def test_system_missing_for_some_personas() -> None:
    problems = problems_of([line("p", "u1", "A", "x", "x"), line("p", "u1", "B", "x"),
                            line("p", "u2", "A", "y", "y")])
    assert (problems[0].line, problems[0].field) == (3, "system")
    assert "'B'" in problems[0].message and "'u2'" in problems[0].message


@pytest.mark.parametrize("response", [42, None, ["a"], {"text": "a"}])
def test_non_text_response(response: Any) -> None:
    problems = problems_of([line("p", "u1", "A", "x", "x"), line("p", "u2", "A", response, "y")])
    assert (problems[0].line, problems[0].field) == (2, "response")
    assert "must be text" in problems[0].message


def test_duplicate_line() -> None:
    problems = problems_of([line("p", "u1", "A", "x"), line("p", "u2", "A", "y"), line("p", "u1", "A", "z")])
    assert problems[0].line == 3 and "first seen on line 1" in problems[0].message


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"prompt_id": "p", "persona_id": "u2", "system": "A", "response": "y", "score": 1}, "score"),
        ({"prompt_id": "", "persona_id": "u2", "system": "A", "response": "y"}, "prompt_id"),
        ({"prompt_id": "p", "persona_id": "u2", "system": 3.5, "response": "y"}, "system"),
        ({"prompt_id": "p", "persona_id": "u2", "system": "A", "response": "y", "reference": 1}, "reference"),
        ({"prompt_id": "p", "persona_id": None, "system": "A", "response": "y", "reference": "r"}, "reference"),
        ({"prompt_id": "p", "persona_id": "u1", "system": "C", "response": "y", "reference": "other"},
         "reference"),
        (["not", "an", "object"], None),
    ],
)
def test_other_bad_lines(bad: Any, field: str | None) -> None:
    problems = problems_of([line("p", "u1", "A", "x", "x"), line("p", "u1", "B", "x"), bad])
    assert problems[0].line == 3 and problems[0].field == field


def test_cli_exit_2_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps(line("p", "u1", "A", "x", "x")) + "\n"
                    + json.dumps({"prompt_id": "p", "system": "A", "response": "y"}) + "\n")
    result = CliRunner().invoke(personalization_command, [str(path), "--format", "json"])
    assert result.exit_code == 2
    assert "line 2" in result.output and "persona_id" in result.output


def test_cli_anchor_errors(tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    rows = [line("p1", "u1", "A", "x", "x"), line("p1", "u2", "A", "y", "y"), line("p1", None, "D", "x y"),
            line("p2", "u1", "A", "x", "x"), line("p2", "u2", "A", "y", "y")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(personalization_command, [str(path), "--anchor-system", "E"])
    assert result.exit_code == 2 and "anchor system 'E'" in result.output
    result = CliRunner().invoke(personalization_command, [str(path), "--anchor-system", "D"])
    assert result.exit_code == 2 and "line 4" in result.output and "'p2'" in result.output


# ------------------------------------------------------------------ CLI output


def test_cli_json_and_markdown(tmp_path: Path) -> None:
    lines = generated_lines(1)
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = CliRunner().invoke(personalization_command, [str(path), "--format", "json", "--anchor-system", "anchor"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["distance"] == "jsd" and document["variant"] == "anchored"
    assert document["anchor_system"] == "anchor"
    expected = straightforward_scores(lines, "anchor")["systems"]
    assert set(document["systems"]) == {"s1", "s2", "s3"}
    for system, scores in document["systems"].items():
        assert {"n_prompts", "n_skipped", "degress", "egises", "edp", "perseval"} <= set(scores)
        assert scores["perseval"] == pytest.approx(expected[system]["perseval"], abs=TOLERANCE)
    result = CliRunner().invoke(personalization_command, [str(path)])
    assert result.exit_code == 0 and "| rank | system |" in result.output and "simplified" in result.output


# ------------------------------------------------------------------ PENS (reference data)


def load_converter() -> Any:
    spec = importlib.util.spec_from_file_location("pens_to_responses", REPO / "scripts" / "pens_to_responses.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pens_lines(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The converted PENS file (102,770 lines, read only by the tests), converted once per module."""
    if not (PERSEVAL / "derived" / "pens_personalized_consolidated.jsonl").is_file():
        pytest.skip(f"PENS data not found under {PERSEVAL} (research-only data kept outside the repo)")
    output = tmp_path_factory.mktemp("pens") / "pens.jsonl"
    load_converter().convert("consolidated", PERSEVAL, output)
    return [json.loads(raw) for raw in output.read_text(encoding="utf-8").splitlines()]


@pytest.mark.shared_data
@pytest.mark.slow  # the 102,770-line PENS data set converted
def test_pens_converter_routes_agree(tmp_path: Path, pens_lines: list[dict[str, Any]]) -> None:
    """The raw files (tsv + hyps) give the same lines; the consolidated file stores the user headlines
    lower-cased and stripped, which changes no token."""
    output = tmp_path / "raw.jsonl"
    load_converter().convert("raw", PERSEVAL, output)
    raw = [json.loads(text) for text in output.read_text(encoding="utf-8").splitlines()]
    for row in raw:
        row["reference"] = row["reference"].lower().strip()

    def keyed(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[str, str]]:
        return {(r["prompt_id"], r["persona_id"], r["system"]): (r["response"], r["reference"]) for r in rows}

    assert len(raw) == len(pens_lines) == 102770
    assert keyed(raw) == keyed(pens_lines)


@pytest.mark.shared_data
@pytest.mark.slow  # the 102,770-line PENS data set converted
def test_pens_subset_matches_straightforward(pens_lines: list[dict[str, Any]]) -> None:
    prompts = sorted({r["prompt_id"] for r in pens_lines})[::25]  # ~150 news items keep this quick
    chosen = set(prompts)
    assert_same([r for r in pens_lines if r["prompt_id"] in chosen])


def test_converter_refuses_to_write_into_the_repository() -> None:
    with pytest.raises(SystemExit, match="research-only"):
        load_converter().convert("consolidated", PERSEVAL, REPO / "pens.jsonl")
    assert not (REPO / "pens.jsonl").exists()


def test_cli_unknown_distance_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "responses.jsonl"
    path.write_text(json.dumps(line("p", "u1", "A", "x", "x")) + "\n")
    result = CliRunner().invoke(personalization_command, [str(path), "--distance", "nope"])
    assert result.exit_code == 2 and "unknown distance 'nope'" in result.output


@pytest.mark.slow  # a timing over 75,000 generated lines
def test_thousands_of_prompts_take_seconds() -> None:
    rng = random.Random(11)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(5)) for _ in range(400)]
    lines = []
    for p in range(3000):
        for u in range(rng.randint(2, 8)):
            reference = " ".join(rng.choices(words, k=10))
            for system in ("a", "b", "c", "d", "e"):
                lines.append(line(f"p{p}", f"u{u}", system, " ".join(rng.choices(words, k=10)), reference))
    responses = validate_responses(enumerate(lines, start=1), "generated")
    started = time.perf_counter()
    report = evaluate(responses)
    elapsed = time.perf_counter() - started
    assert report.systems["a"].n_prompts == 3000
    assert elapsed < 15, f"{len(lines)} lines took {elapsed:.1f} s"
