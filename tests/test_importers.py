"""`pjudge import` (SPEC section 5): every format against the published files in ../shared/data,
with expected numbers computed here by independent, deliberately simple code, plus small
hand-written fixtures for the edge and error cases."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from judge.aggregation import aggregate
from judge.importers import FORMATS, import_verdicts
from judge.jsonl import InputError, read_verdicts
from judge.records import Verdict
from pjudge.cli import main

# Also the `shared_data` fixture of conftest.py, which skips (saying why) when the data is absent;
# the constant is needed at collection time for parametrize.
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PJ = DATA / "personalized-judge" / "outputs"
FAIREVAL_LABELS = DATA / "faireval" / "review" / "review_gpt35_vicuna-13b_human.txt"
FAIREVAL_RUNS = sorted((DATA / "faireval-2025-runs").glob("*/*.jsonl"))
LLMBAR = DATA / "llmbar" / "Dataset" / "Processed" / "FairEval" / "evaluators"
TOE = DATA / "trust-or-escalate" / "result"
FASTCHAT_GPT35 = DATA / "fastchat-gpt4-reviews" / "review" / "review_gpt35_vicuna-13b.jsonl"
WORDS = {"CHATGPT": "A", "VICUNA13B": "B", "TIE": "tie"}


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(path: Path, rows: list[Any]) -> str:
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def raises_input(format: str, paths: list[str], labels: str | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        import_verdicts(format, paths, labels)
    return info.value


def human_words(path: Path) -> list[str]:
    return [WORDS[line] for line in path.read_text().split("\n") if line]


def no_tie_accuracy(verdicts: list[Verdict]) -> tuple[int, int]:
    decided = [v for v in verdicts if v.winner in ("A", "B")]
    return sum(v.winner == v.human_label for v in decided), len(decided)


def cohen_kappa(a: list[str], b: list[str]) -> float:
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in set(a) | set(b)) / n / n
    return (observed - expected) / (1 - expected)


# --------------------------------------------------------------------------- personalized-judge

@pytest.mark.shared_data
def test_personalized_judge_prism_command_r_plus_matches_dong_et_al(shared_data: Path) -> None:
    verdicts = import_verdicts("personalized-judge", [str(PJ / "prism_all_features_command-r-plus.jsonl")])
    assert len(verdicts) == 1001
    assert no_tie_accuracy(verdicts) == (721, 1001)  # Table 1: 0.720
    high = [v for v in verdicts if v.winner in ("A", "B") and v.certainty is not None and v.certainty >= 0.8]
    assert (sum(v.winner == v.human_label for v in high), len(high)) == (133, 149)  # Table 2: .893
    first = verdicts[0]
    assert first.id == "prism_all_features_command-r-plus-1"
    assert first.judge.model == "command-r-plus" and first.judge.provider == "replay"
    assert first.consistent is None and first.abstained is False
    assert len(first.calls) == 1 and first.calls[0].order == "AB"
    assert first.metadata["dataset"] == "prism"
    assert first.metadata["source"] == "prism_all_features_command-r-plus.jsonl"


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(p.name for p in PJ.glob("*.jsonl")) or ["(no files)"])
def test_personalized_judge_every_file_imports(shared_data: Path, name: str) -> None:
    path = PJ / name
    rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    verdicts = import_verdicts("personalized-judge", [str(path)])
    assert len(verdicts) == len(rows)
    for verdict, row in zip(verdicts, rows, strict=True):
        # Independent reading of the recorded answer: A, B or C, anything else is no answer.
        expected = {"A": "A", "B": "B", "C": "tie"}.get(row["answer"]) if isinstance(row["answer"], str) else None
        assert verdict.winner == expected
        assert (verdict.error is None) == (expected is not None)
        assert verdict.human_label == {"A": "A", "B": "B", "C": "tie"}[row["ground_truth"]]
        if expected is not None:
            assert (verdict.winner == verdict.human_label) == row["acc"]  # their own correctness flag
        assert verdict.calls[0].raw == row.get("res", row["answer"] if isinstance(row["answer"], str) else "false")
        assert verdict.len_a is not None and verdict.len_b is not None
        assert verdict.judge.model in {"command-r-plus", "gpt-4o", "gpt-3.5-turbo",
                                       "meta-llama_Meta-Llama-3-70B-Instruct"}


@pytest.mark.shared_data
def test_personalized_judge_ap_persona_comes_from_the_prompt(shared_data: Path) -> None:
    path = PJ / "ap_all_features_all_features_gpt-4o_jun5.jsonl"
    rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    verdicts = import_verdicts("personalized-judge", [str(path)])
    assert len({row["user_info"] for row in rows}) == 1  # the upstream bug
    personas = [v.metadata["persona"] for v in verdicts]
    assert len(set(personas)) > 1
    assert all(p in row["prompt"] for p, row in zip(personas, rows, strict=True))
    assert no_tie_accuracy(verdicts) == (495, 523)  # Table 1, Public Reddit, GPT-4o: 0.946


@pytest.mark.shared_data
def test_personalized_judge_five_point_certainty_scale(shared_data: Path) -> None:
    # The no-persona PRISM prompt asks for a certainty from 1 to 5; SPEC 3.1 still reads recorded
    # certainties on 1-100, and the prompt's own scale is noted in the metadata.
    path = PJ / "prism_no_persona_command-r-plus_new.jsonl"
    rows = [json.loads(line) for line in path.read_text().split("\n") if line.strip()]
    verdicts = import_verdicts("personalized-judge", [str(path)])
    for verdict, row in zip(verdicts, rows, strict=True):
        if verdict.winner is not None:
            assert verdict.calls[0].certainty == int(row["certainty"]) / 100
            assert verdict.metadata["prompt_certainty_scale"] == 5


def _pj_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt": "[User Profile]\nThe person is 30.\n\n[User Question]\nQ?\n\n"
                  "[The Start of Assistant A's Answer]\naaaa\n[The End of Assistant A's Answer]\n\n"
                  "[The Start of Assistant B's Answer]\nbb\n[The End of Assistant B's Answer]\n\n[Answer]\n[[",
        "answer": "A", "certainty": "90", "acc": True, "ground_truth": "A", "user_info": "x",
    }
    row.update(overrides)
    return row


def test_personalized_judge_recorded_calls(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "prism_all_features_with_tie_all_features_gpt-4o_jun5.jsonl", [
        _pj_row(),
        _pj_row(answer="B", certainty="NA", ground_truth="C"),
        _pj_row(answer="C", certainty="NA"),
        _pj_row(answer="[", certainty="80", res="[[[A]]]"),
        _pj_row(answer=False, certainty=False),
        _pj_row(answer="A", certainty="250"),  # out of range: missing, vote 0.75
    ])
    v = import_verdicts("personalized-judge", [path])
    assert [x.id for x in v] == [f"prism_all_features_with_tie_all_features_gpt-4o_jun5-{i}" for i in range(1, 7)]
    assert v[0].judge.model == "gpt-4o" and v[0].metadata["run"] == "jun5"
    assert (v[0].winner, v[0].p_a, v[0].certainty) == ("A", 0.95, 0.9)
    assert (v[1].winner, v[1].p_a, v[1].human_label) == ("B", 0.25, "tie")  # NA counts as 0.5
    assert (v[2].winner, v[2].p_a, v[2].calls[0].choice) == ("tie", 0.5, "tie")
    assert v[3].winner is None and v[3].calls[0].error and v[3].calls[0].raw == "[[[A]]]" and v[3].error
    assert v[4].winner is None and v[4].calls[0].raw == "false"
    assert (v[5].winner, v[5].p_a) == ("A", 0.75)
    assert (v[0].len_a, v[0].len_b) == (4, 2)  # from the prompt's markers: no asst_A/asst_B here
    assert v[0].metadata["persona"] == "The person is 30."
    assert all(x.abstained is False and x.consistent is None for x in v)


def test_personalized_judge_lengths_in_other_layouts(tmp_path: Path) -> None:
    ap = "[User Profile]\nP\n\n[Question-Answer Pair A]\nQuestion: q1\nAnswer: abc\n\n" \
         "[Question-Answer Pair B]\nQuestion: q2\nAnswer: abcdefg\n\n[Answer]\n[["
    ec = "[News Article]\nN\n[User Profile]\nP\n[Response A]\nxyz\n[Response B]\nxy\n[Answer]\n[["
    path = jsonl(tmp_path / "ap_x_gpt-4o.jsonl", [_pj_row(prompt=ap), _pj_row(prompt=ec),
                                                  _pj_row(asst_A="12345", asst_B="1")])
    v = import_verdicts("personalized-judge", [path])
    assert [(x.len_a, x.len_b) for x in v] == [(3, 7), (3, 2), (5, 1)]


def test_personalized_judge_bad_input_names_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path / "prism_x_gpt-4o.jsonl", "\n".join([
        json.dumps(_pj_row()),
        json.dumps(_pj_row(ground_truth="D")),
        json.dumps({k: val for k, val in _pj_row().items() if k != "answer"}),
        "[1, 2]",
    ]))
    problems = raises_input("personalized-judge", [path]).problems
    assert [(p.line, p.field) for p in problems] == [(2, "ground_truth"), (3, "answer"), (4, None)]
    broken = write(tmp_path / "broken.jsonl", json.dumps(_pj_row()) + "\n{not json\n")
    assert raises_input("personalized-judge", [broken]).problems[0].line == 2
    assert "no records" in str(raises_input("personalized-judge", [write(tmp_path / "empty.jsonl", "\n")]))


# --------------------------------------------------------------------------- faireval

def _simple_scores(text: str) -> tuple[float, float]:
    lines = [line for line in text.split("\n") if line.strip()]
    return float(lines[-2].split(":")[-1]), float(lines[-1].split(":")[-1])


def _expected_faireval_winners(path: Path) -> dict[str, str]:
    text, decoder, position, winners = path.read_text(), json.JSONDecoder(), 0, {}
    while text[position:].strip():
        row, position = decoder.raw_decode(text, len(text) - len(text[position:].lstrip()))
        pairs = [_simple_scores(t) for t in row["review"]]
        pairs += [tuple(reversed(_simple_scores(t))) for t in row.get("review_bpc") or []]
        # Same denominator for both, so comparing the sums avoids any float division.
        a, b = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        winners[str(row["question_id"])] = "A" if a > b else "B" if a < b else "tie"
    return winners


@pytest.mark.shared_data
@pytest.mark.parametrize("run", [str(p.relative_to(DATA)) for p in FAIREVAL_RUNS] or ["(no files)"])
def test_faireval_runs_follow_spec_3_2(shared_data: Path, run: str) -> None:
    path = DATA / run
    verdicts = import_verdicts("faireval", [str(path)], str(FAIREVAL_LABELS))
    assert len(verdicts) == 80
    assert {v.id: v.winner for v in verdicts} == _expected_faireval_winners(path)
    labels = human_words(FAIREVAL_LABELS)
    assert [v.human_label for v in sorted(verdicts, key=lambda v: int(v.id))] == labels
    swapped = "_bpc1" in path.name
    assert all((v.consistent is not None) == swapped for v in verdicts)
    assert all(v.abstained is False and v.judge.profile == "faireval-scores" for v in verdicts)
    assert verdicts[0].judge.model in {"gpt-3.5-turbo", "gpt-4"}


@pytest.mark.shared_data
def test_faireval_ignores_the_wrong_stored_score(shared_data: Path) -> None:
    # Run 1's mec1_bpc1 file stores scores averaged without un-swapping review_bpc.
    path = DATA / "faireval-2025-runs" / "1" / "review_gpt35_vicuna-13b_gpt-3.5-turbo_mec1_bpc1.jsonl"
    rows = {str(r["question_id"]): r for r in map(json.loads, path.read_text().splitlines())}
    verdicts = import_verdicts("faireval", [str(path)])
    differs = 0
    for v in verdicts:
        cs_a = sum(c.scores[0] for c in v.calls if c.scores) / len(v.calls)
        differs += abs(cs_a - rows[v.id]["score"][0]) > 1e-9
        assert v.calls[1].order == "BA"
        assert v.calls[1].scores == list(reversed(_simple_scores(v.calls[1].raw or "")))
    assert differs > 0


def test_faireval_concatenated_json_unswap_and_labels(tmp_path: Path) -> None:
    def review(s1: float, s2: float) -> str:
        return f"Evaluation evidence: fine.\n\nScore of the Assistant 1: {s1}\nScore of the Assistant 2: {s2}"

    rows = [
        {"question_id": 2, "review": [review(8, 7), "no scores here"], "review_bpc": [review(6, 9)]},
        {"question_id": 1, "review": [review(7, 7)], "review_bpc": []},
    ]
    path = write(tmp_path / "review_gpt35_vicuna-13b_gpt-4_mec2_bpc1.jsonl",
                 "".join(json.dumps(r, indent=2) + "\n" for r in rows))
    labels = write(tmp_path / "labels.txt", "TIE\nCHATGPT")  # no trailing newline
    v = {x.id: x for x in import_verdicts("faireval", [path], labels)}
    two = v["2"]
    assert [(c.order, c.sample) for c in two.calls] == [("AB", 0), ("AB", 1), ("BA", 0)]
    assert two.calls[1].error and two.calls[1].raw == "no scores here"
    assert two.calls[2].scores == [9.0, 6.0]  # un-swapped: its Assistant 1 is response B
    # CS_A = (8 + 9) / 2, CS_B = (7 + 6) / 2 over the two valid samples of both orders.
    assert (two.winner, two.p_a, two.certainty) == ("A", round(0.5 + 2 / 18, 9), round(2 / 9, 9))
    assert two.consistent is True
    assert (two.human_label, v["1"].human_label) == ("A", "tie")  # label i = i-th question by id
    assert (v["1"].winner, v["1"].consistent) == ("tie", None)
    assert two.judge.model == "gpt-4" and two.metadata["mec"] == 2


def test_faireval_label_errors(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "r.jsonl", [{"question_id": 1, "review": ["a: 1\nb: 2"]}])
    mismatch = raises_input("faireval", [path], write(tmp_path / "two.txt", "TIE\nTIE\n"))
    assert mismatch.source.endswith("two.txt") and "1 questions" in str(mismatch)
    unknown = raises_input("faireval", [path], write(tmp_path / "bad.txt", "MAYBE\n"))
    assert (unknown.problems[0].line, unknown.source) == (1, str(tmp_path / "bad.txt"))


def test_faireval_bad_rows(tmp_path: Path) -> None:
    # Question ids are checked first (the labels are matched by their order), then the reviews.
    ids = jsonl(tmp_path / "ids.jsonl", [
        {"question_id": 1, "review": ["a: 1\nb: 2"]},
        {"question_id": 1, "review": ["a: 1\nb: 2"]},
        {"question_id": "3", "review": []},
    ])
    assert [(p.line, p.field) for p in raises_input("faireval", [ids]).problems] == [
        (2, "question_id"), (3, "question_id")]
    reviews = jsonl(tmp_path / "reviews.jsonl", [
        {"question_id": 4, "review": "not a list"},
        {"question_id": 5, "review": [3]},
        {"question_id": 6},
    ])
    assert [(p.line, p.field) for p in raises_input("faireval", [reviews]).problems] == [
        (1, "review"), (2, "review.0"), (3, "review")]


# --------------------------------------------------------------------------- llmbar

@pytest.mark.shared_data
@pytest.mark.parametrize("judge,changes", [("ChatGPT", 0.818), ("GPT-4", 0.303)])
def test_llmbar_position_consistency(shared_data: Path, judge: str, changes: float) -> None:
    path = LLMBAR / judge / "Vanilla_NoRules" / "result.json"
    rows = json.loads(path.read_text())
    changed = sum(r["results"][-1]["swap = False"]["winner"] != r["results"][-1]["swap = True"]["winner"]
                  for r in rows)
    assert round(changed / len(rows), 3) == changes
    verdicts = import_verdicts("llmbar", [str(path)])
    assert len(verdicts) == len(rows) == 66
    assert sum(v.consistent is False for v in verdicts) == changed
    assert verdicts[0].judge.model == judge and verdicts[0].judge.profile == "llmbar-Vanilla_NoRules"
    assert [v.human_label for v in verdicts] == [{1: "A", 2: "B"}[r["label"]] for r in rows]
    for v, r in zip(verdicts, rows, strict=True):
        ab, ba = v.calls
        assert (ab.order, ba.order) == ("AB", "BA")
        assert ab.choice == {"1": "A", "2": "B"}[r["results"][-1]["swap = False"]["winner"]]
        assert ba.raw == r["results"][-1]["swap = True"]["completion"][0]


@pytest.mark.shared_data
def test_llmbar_every_evaluator_imports(shared_data: Path) -> None:
    paths = sorted(LLMBAR.glob("*/*/result.json"))
    assert len(paths) == 8
    verdicts = import_verdicts("llmbar", [str(p) for p in paths])
    assert len(verdicts) == 8 * 66
    # PaLM2 once recorded no winner (empty completion): that call is kept with its error.
    failed = [c for v in verdicts for c in v.calls if c.error]
    assert len(failed) == 1 and failed[0].raw == ""


def test_llmbar_fixture_and_errors(tmp_path: Path) -> None:
    both = {"swap = False": {"completion": ["Output (b)", "stop"], "winner": "2"},
            "swap = True": {"completion": ["Output (a)", "stop"], "winner": "2"}}
    items = [{"input": "q", "output_1": "aaa", "output_2": "b", "label": 2, "results": [["m"], both]},
             {"input": "q", "output_1": "a", "output_2": "b", "label": 1,
              "results": [{"swap = False": {"completion": ["", ""], "winner": None}}]}]
    folder = tmp_path / "Mine" / "evaluators" / "Judge" / "Proto"
    folder.mkdir(parents=True)
    path = write(folder / "result.json", json.dumps(items))
    v = import_verdicts("llmbar", [path])
    assert [x.id for x in v] == ["Mine-0", "Mine-1"]
    assert (v[0].winner, v[0].consistent, v[0].p_a, v[0].len_a) == ("B", True, 0.25, 3)
    assert v[1].winner is None and v[1].consistent is False and v[1].error
    assert (v[0].judge.model, v[0].judge.profile) == ("Judge", "llmbar-Proto")
    bad = write(tmp_path / "bad.json", json.dumps([{"results": []}, {"results": [both], "label": 3}]))
    assert [p.field for p in raises_input("llmbar", [bad]).problems] == ["[0].results", "[1].label"]
    assert "expected a JSON list" in str(raises_input("llmbar", [write(tmp_path / "o.json", "{}")]))


# --------------------------------------------------------------------------- trust-or-escalate

@pytest.mark.shared_data
@pytest.mark.parametrize("model,agreement", [
    ("mistral-7b-instruct", 0.750), ("gpt-3.5-turbo", 0.756), ("gpt-4-turbo", 0.784)])
def test_trust_or_escalate_agreement(shared_data: Path, model: str, agreement: float) -> None:
    path = TOE / f"{model}.calibration.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    verdicts = import_verdicts("trust-or-escalate", [str(path)])
    assert len(verdicts) == 500 and verdicts[0].judge.model == model
    assert [v.id for v in verdicts] == [f"toe-{line}" for line in range(1, 501)]  # the judges' files join
    assert sum(v.winner == v.human_label for v in verdicts) / 500 == agreement
    for v, r in zip(verdicts, rows, strict=True):
        p0, p1 = r["probs"]
        assert v.p_a == round(p0 / (p0 + p1), 9)
        assert v.human_label == ("A" if r["preferences"]["human"] == 1 else "B")
        # The vote formula itself gives p_a back (no need for the importer's exact override).
        assert aggregate(v.calls, mode="choice", swapped=False).p_a == v.p_a
        assert v.calls[0].order is None and v.abstained is False


def test_trust_or_escalate_fixture(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "judge.calibration.jsonl", [
        {"instruction": "i", "outputs": ["aa", "b"], "preferences": {"human": 2}, "probs": [0.3, 0.6]},
        {"instruction": "i", "outputs": ["a", "b"], "preferences": {"human": 1}, "probs": [0.5, 0.5]},
    ])
    v = import_verdicts("trust-or-escalate", [path])
    # toe-<line>, not the file's stem: every judge's file gives an item the same id (SPEC 5).
    assert [x.id for x in v] == ["toe-1", "toe-2"]
    assert (v[0].winner, v[0].p_a, v[0].certainty, v[0].human_label) == ("B", 0.333333333, 0.333333334, "B")
    assert (v[1].winner, v[1].p_a, v[1].certainty) == ("tie", 0.5, 0.0)
    assert v[0].judge.model == "judge" and (v[0].len_a, v[0].len_b) == (2, 1)
    bad = jsonl(tmp_path / "bad.calibration.jsonl", [
        {"probs": [0.1]}, {"probs": [0, 0]}, {"probs": [0.4, 0.6], "preferences": {"human": 3}}])
    assert [(p.line, p.field) for p in raises_input("trust-or-escalate", [bad]).problems] == [
        (1, "probs"), (2, "probs"), (3, "preferences.human")]


# --------------------------------------------------------------------------- fastchat

@pytest.mark.shared_data
def test_fastchat_gpt4_reviews_against_faireval_labels(shared_data: Path) -> None:
    rows = [json.loads(line) for line in FASTCHAT_GPT35.read_text().splitlines() if line.strip()]
    verdicts = import_verdicts("fastchat", [str(FASTCHAT_GPT35)], str(FAIREVAL_LABELS))
    assert len(verdicts) == 80
    # Independent check: the winners agree with FastChat's own stored scores for this file.
    stored = {str(r["question_id"]): "A" if r["score"][0] > r["score"][1] else
              "B" if r["score"][0] < r["score"][1] else "tie" for r in rows}
    assert {v.id: v.winner for v in verdicts} == stored
    winners = [str(v.winner) for v in sorted(verdicts, key=lambda v: int(v.id))]
    labels = human_words(FAIREVAL_LABELS)
    assert sum(w == h for w, h in zip(winners, labels, strict=True)) / 80 == 0.525
    assert round(cohen_kappa(winners, labels), 3) == 0.228
    assert verdicts[0].judge.model == "gpt-4-0328" and verdicts[0].consistent is None


def test_fastchat_fixture(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "review.jsonl", [
        {"question_id": 1, "text": "8 9\nB is better.", "score": [1, 1], "reviewer_id": "gpt-4-0328-math"},
        {"question_id": 2, "text": "Working...\nAssistant 1: 7\nAssistant 2: 4\nDone."},
        {"question_id": 3, "text": "I cannot decide."},
    ])
    v = import_verdicts("fastchat", [path], write(tmp_path / "l.txt", "VICUNA13B\nCHATGPT\nTIE\n"))
    assert [(x.winner, x.human_label) for x in v] == [("B", "B"), ("A", "A"), (None, "tie")]
    assert v[0].calls[0].scores == [8.0, 9.0]  # re-parsed, the stored score is ignored
    assert v[2].calls[0].error and v[2].error
    assert v[0].judge.model == "gpt-4-0328" and v[1].judge.model == "unknown"
    assert raises_input("fastchat", [jsonl(tmp_path / "t.jsonl", [{"question_id": 1}])]).problems[0].field == "text"


# --------------------------------------------------------------------------- registry and CLI

def test_registry_and_argument_errors(tmp_path: Path) -> None:
    assert set(FORMATS) == {"personalized-judge", "faireval", "llmbar", "trust-or-escalate", "fastchat"}
    assert "unknown format" in str(raises_input("nope", [str(tmp_path / "x")]))
    labels = write(tmp_path / "l.txt", "TIE\n")
    assert "--labels" in str(raises_input("personalized-judge", [str(tmp_path / "x")], labels))
    missing = raises_input("llmbar", [str(tmp_path / "missing.json")])
    assert "cannot read" in str(missing)


def test_cli_import_json_summary(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "prism_x_gpt-4o.jsonl", [_pj_row(), _pj_row(answer="N"), _pj_row(ground_truth=None)])
    out = tmp_path / "v.jsonl"
    result = CliRunner().invoke(main, ["import", "personalized-judge", path, "-o", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary | {"files": None} == {"format": "personalized-judge", "files": None, "output": str(out),
                                         "verdicts": 3, "labelled": 2, "decided": 1, "unparsed": 1}
    assert summary["files"] == [path]
    assert [v.id for v in read_verdicts(out)] == ["prism_x_gpt-4o-1", "prism_x_gpt-4o-2", "prism_x_gpt-4o-3"]


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    good = jsonl(tmp_path / "prism_a_gpt-4o.jsonl", [_pj_row()])
    bad = jsonl(tmp_path / "prism_b_gpt-4o.jsonl", [_pj_row(), _pj_row(ground_truth="Z")])
    out = tmp_path / "v.jsonl"
    result = CliRunner().invoke(main, ["import", "personalized-judge", good, bad, "-o", str(out)])
    assert result.exit_code == 2
    assert "line 2" in result.output and "ground_truth" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.shared_data
def test_cli_end_to_end_on_faireval(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "v.jsonl"
    run = str(FAIREVAL_RUNS[0])
    result = CliRunner().invoke(main, ["import", "faireval", run, "--labels", str(FAIREVAL_LABELS),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "imported 80 verdicts" in result.output
    assert len(read_verdicts(out)) == 80
