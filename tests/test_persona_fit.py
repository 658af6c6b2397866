"""Judge-based persona fit (SPEC 6, last bullet): pair expansion, the statistics on hand-computed
verdicts, and the acceptance case end to end through `pjudge personalization --judge` and llm-sim."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calibration.persona_fit import (
    KIND,
    expand_pairs,
    pair_id,
    parse_pair_id,
    persona_fit,
    persona_fit_job_items,
    plan_pairs,
)
from calibration.personalization_io import ResponseSet, attach_descriptions, validate_responses
from calibration.personalization_render import render_html
from judge.jsonl import InputError
from judge.records import JudgeInfo, Verdict
from tests.support.cli import invoke_pjudge, run_pjudge

# ------------------------------------------------------------------ helpers


def line(prompt_id: str, persona_id: str | None, system: str, response: str, reference: str | None = None,
         **extra: Any) -> dict[str, Any]:
    """One responses.jsonl line; `extra` adds fields such as persona and prompt."""
    row: dict[str, Any] = {"prompt_id": prompt_id, "persona_id": persona_id, "system": system,
                           "response": response}
    if reference is not None:
        row["reference"] = reference
    row.update(extra)
    return row


def response_set(lines: list[dict[str, Any]]) -> ResponseSet:
    return validate_responses(enumerate(lines, start=1), "responses.jsonl")


def problems_of(lines: list[dict[str, Any]]) -> list[Any]:
    with pytest.raises(InputError) as caught:
        response_set(lines)
    return caught.value.problems


def verdict(system: str, prompt: str, p: str, q: str, p_a: float | None) -> Verdict:
    return Verdict(
        id=pair_id(system, prompt, p, q), winner=None if p_a is None else ("A" if p_a > 0.5 else "B"), p_a=p_a,
        certainty=None if p_a is None else abs(2 * p_a - 1), consistent=True, abstained=False, bpde=0.0,
        judge=JudgeInfo(profile="t", provider="replay", model="m"),
        metadata={"kind": KIND, "system": system, "prompt_id": prompt, "persona_p": p, "persona_q": q},
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ------------------------------------------------------------------ expand_pairs


def three_personas() -> list[dict[str, Any]]:
    rows = []
    texts = {"a": "about chess", "b": "about baking", "c": "about sailing"}
    for system in ("S", "T"):
        for persona, text in texts.items():
            rows.append(line("p1", persona, system, f"{system} {text}", persona=f"Persona {persona}.",
                             prompt="What should I do?"))
        for persona in ("a", "b"):
            rows.append(line("p2", persona, system, f"{system} two {texts[persona]}", prompt="Second prompt?"))
    return rows


def test_expand_pairs_makes_every_ordered_pair_per_system_and_prompt() -> None:
    responses = response_set(three_personas())
    items = expand_pairs(responses, responses.persona_descriptions, responses.prompt_texts)
    assert len(items) == 2 * (3 * 2 + 2 * 1)  # systems x (ordered pairs of p1 + of p2)
    assert len({item.id for item in items}) == len(items)
    by_key = {parse_pair_id(item.id): item for item in items}
    item = by_key[("T", "p1", "b", "c")]
    assert item.persona == "Persona b." and item.prompt == "What should I do?"
    assert (item.response_a, item.response_b) == ("T about baking", "T about sailing")
    assert item.metadata == {"kind": KIND, "system": "T", "prompt_id": "p1", "persona_p": "b", "persona_q": "c"}
    reverse = by_key[("T", "p1", "c", "b")]
    assert (reverse.persona, reverse.response_a) == ("Persona c.", "T about sailing")
    assert {k for k in by_key if k[0] == "S" and k[1] == "p2"} == {("S", "p2", "a", "b"), ("S", "p2", "b", "a")}


def test_expand_pairs_restricted_to_systems() -> None:
    responses = response_set(three_personas())
    items = expand_pairs(responses, responses.persona_descriptions, responses.prompt_texts, systems=["T"])
    assert len(items) == 8 and {item.metadata["system"] for item in items} == {"T"}
    with pytest.raises(InputError, match="'U'"):
        expand_pairs(responses, responses.persona_descriptions, responses.prompt_texts, systems=["U"])


def test_pair_ids_are_unambiguous_with_separators_in_ids() -> None:
    awkward = ("sys:1", "p%3A:2", "a:b", "")
    assert parse_pair_id(pair_id(*awkward)) == awkward
    assert pair_id("a:b", "c", "d", "e") != pair_id("a", "b:c", "d", "e")
    assert parse_pair_id("prism-0007") is None


def test_blank_responses_are_not_judged_but_counted() -> None:
    rows = [line("p", "a", "S", "about chess", persona="A"), line("p", "b", "S", "  ", persona="B"),
            line("p", "c", "S", "about sailing", persona="C")]
    plan = plan_pairs(response_set(rows), {"a": "A", "b": "B", "c": "C"}, {"p": "Question?"})
    assert [parse_pair_id(item.id)[2:] for item in plan.items] == [("a", "c"), ("c", "a")]
    assert plan.unjudgeable == {"S": 4}


def test_missing_persona_description_names_the_persona_and_its_line() -> None:
    rows = three_personas()
    for row in rows:
        if row["persona_id"] == "c":
            del row["persona"]
    responses = response_set(rows)
    with pytest.raises(InputError) as caught:
        expand_pairs(responses, responses.persona_descriptions, responses.prompt_texts)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (3, "persona")
    assert "persona 'c' has no description" in problem.message


def test_missing_prompt_text_names_the_prompt_and_its_line() -> None:
    rows = [line("p", "a", "S", "x", persona="A"), line("q", "a", "S", "y", persona="A", prompt="Q?"),
            line("p", "b", "S", "z", persona="B"), line("q", "b", "S", "w", persona="B")]
    responses = response_set(rows)
    with pytest.raises(InputError) as caught:
        expand_pairs(responses, responses.persona_descriptions, responses.prompt_texts)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (1, "prompt") and "prompt 'p'" in problem.message


def test_descriptions_must_agree_across_lines_and_be_usable() -> None:
    problems = problems_of([line("p", "a", "S", "x", persona="A likes chess"),
                            line("q", "a", "S", "y", persona="A likes golf")])
    assert (problems[0].line, problems[0].field) == (2, "persona") and "line 1" in problems[0].message
    problems = problems_of([line("p", "a", "S", "x", prompt="One?"), line("p", "b", "S", "y", prompt="Two?")])
    assert (problems[0].line, problems[0].field) == (2, "prompt")
    problems = problems_of([line("p", "a", "S", "x", persona=""), line("p", "b", "S", "y", persona=["x"]),
                            line("p", None, "S", "z", persona="agnostic"), line("p", "c", "S", "w", prompt=3)])
    assert [(p.line, p.field) for p in problems] == [(1, "persona"), (2, "persona"), (3, "persona"), (4, "prompt")]


def test_attribute_objects_are_descriptions() -> None:
    rows = [line("p", "a", "S", "x", persona={"age": "30-40", "hobby": "chess"}, prompt="Q?"),
            line("p", "b", "S", "y", persona={"age": "60-70"})]
    items = persona_fit_job_items(rows)
    assert items[0].persona == {"age": "30-40", "hobby": "chess"}
    assert items[0].metadata["persona_p"] == "a"


def test_side_files_fill_descriptions_and_conflicts_are_errors(tmp_path: Path) -> None:
    responses = response_set([line("p", "a", "S", "x", persona="A"), line("p", "b", "S", "y")])
    personas = write_jsonl(tmp_path / "personas.jsonl", [{"persona_id": "a", "persona": "A"},
                                                          {"persona_id": "b", "persona": "B"},
                                                          {"persona_id": "zz", "persona": "unused"}])
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt_id": "p", "prompt": "Q?"}])
    attached = attach_descriptions(responses, personas, prompts)
    assert attached.persona_descriptions == {"a": "A", "b": "B", "zz": "unused"}
    assert attached.prompt_texts == {"p": "Q?"}
    assert len(persona_fit_job_items(responses, personas=personas, prompts=prompts)) == 2

    conflicting = write_jsonl(tmp_path / "conflict.jsonl", [{"persona_id": "b", "persona": "B"},
                                                            {"persona_id": "a", "persona": "not A"}])
    with pytest.raises(InputError) as caught:
        attach_descriptions(responses, conflicting)
    assert caught.value.source.endswith("conflict.jsonl") and caught.value.problems[0].line == 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"persona_id": "a", "persona": "A", "age": 3},
                                               {"persona_id": "a", "persona": "A"}, {"persona": "B"}])
    with pytest.raises(InputError) as caught:
        attach_descriptions(responses, bad)
    assert [(p.line, p.field) for p in caught.value.problems] == [(1, "age"), (2, "persona_id"), (3, "persona_id")]


# ------------------------------------------------------------------ persona_fit on hand-computed verdicts


def hand_verdicts() -> list[Verdict]:
    return [
        verdict("S", "p1", "a", "b", 0.8), verdict("S", "p1", "b", "a", 0.6),
        verdict("S", "p2", "a", "b", 0.9), verdict("S", "p2", "b", "a", None),
        verdict("S", "p2", "a", "c", 0.3), verdict("S", "p2", "c", "a", 0.5),
        verdict("T", "p1", "a", "b", 0.2), verdict("T", "p1", "b", "a", 0.4),
    ]


def test_persona_fit_on_hand_computed_verdicts() -> None:
    fit = persona_fit(hand_verdicts())
    s = fit["S"]
    assert s["persona_fit_win_rate"] == pytest.approx((0.8 + 0.6 + 0.9 + 0.3 + 0.5) / 5)
    # {a,b} of p2 has one direction only; {a,b} of p1 gives 0.4, {a,c} of p2 gives -0.2.
    assert s["pairwise_difference"] == pytest.approx((0.4 - 0.2) / 2)
    assert (s["n_pairs"], s["n_missing"], s["n_pair_differences"], s["n_persona_fit_prompts"]) == (5, 1, 2, 2)
    # Two prompts: a resample holds p1 twice, p2 twice or both (probability 1/4, 1/4, 1/2), so the
    # 2.5th and 97.5th percentiles are the two one-prompt values; p2 alone pools its three pairs.
    assert s["persona_fit_ci95"] == pytest.approx([(0.9 + 0.3 + 0.5) / 3, 0.7])
    assert s["pairwise_difference_ci95"] == pytest.approx([-0.2, 0.4])
    t = fit["T"]
    assert t["persona_fit_win_rate"] == pytest.approx(0.3) and t["pairwise_difference"] == pytest.approx(-0.4)
    assert t["persona_fit_ci95"] is None  # one prompt: nothing to resample


def test_a_system_whose_verdicts_all_failed_has_no_estimate() -> None:
    fit = persona_fit([verdict("S", "p", "a", "b", None), verdict("S", "p", "b", "a", None)])["S"]
    assert fit["persona_fit_win_rate"] is None and fit["pairwise_difference"] is None
    assert fit["persona_fit_ci95"] is None and (fit["n_pairs"], fit["n_missing"]) == (0, 2)


def test_persona_fit_reads_the_id_when_metadata_is_lost() -> None:
    stripped = [v.model_copy(update={"metadata": {}}) for v in hand_verdicts()]
    assert persona_fit(stripped) == persona_fit(hand_verdicts())


def test_persona_fit_rejects_foreign_and_duplicate_verdicts() -> None:
    foreign = hand_verdicts()[0].model_copy(update={"id": "prism-1", "metadata": {}})
    with pytest.raises(ValueError, match="prism-1"):
        persona_fit([foreign])
    with pytest.raises(ValueError, match="two verdicts"):
        persona_fit([*hand_verdicts(), hand_verdicts()[0]])


def random_verdicts(seed: int, n_prompts: int = 40, personas: int = 4) -> list[Verdict]:
    rng = np.random.default_rng(seed)
    names = [f"u{i}" for i in range(personas)]
    return [verdict("S", f"p{k}", p, q, float(rng.uniform(0.3, 0.9)))
            for k in range(n_prompts) for p in names for q in names if p != q]


def test_bootstrap_is_seeded_and_contains_the_estimate() -> None:
    verdicts = random_verdicts(1)
    first, again = persona_fit(verdicts, seed=7)["S"], persona_fit(verdicts, seed=7)["S"]
    other = persona_fit(verdicts, seed=8)["S"]
    assert first == again
    assert first["persona_fit_ci95"] != other["persona_fit_ci95"]
    for stat in ("persona_fit", "pairwise_difference"):
        point = first["persona_fit_win_rate" if stat == "persona_fit" else stat]
        low, high = first[f"{stat}_ci95"]
        assert low < point < high
        assert high - low < 0.2  # 40 prompts of 12 pairs: a narrow interval
    assert persona_fit(verdicts, resamples=0)["S"]["persona_fit_ci95"] is None


def test_bootstrap_interval_has_roughly_its_coverage_width() -> None:
    """Against the textbook standard error of a mean of independent prompt means (equal pair counts):
    the percentile interval's half-width is about 1.96 standard errors."""
    verdicts = random_verdicts(2, n_prompts=200)
    fits = np.array([v.p_a for v in verdicts]).reshape(200, 12)
    standard_error = fits.mean(axis=1).std(ddof=1) / np.sqrt(200)
    low, high = persona_fit(verdicts, resamples=4000)["S"]["persona_fit_ci95"]
    assert (high - low) / 2 == pytest.approx(1.96 * standard_error, rel=0.1)


# ------------------------------------------------------------------ acceptance: end to end with llm-sim

INTERESTS = {
    "u1": ("gardening", "chess", "cycling", "tulips", "compost", "orchards"),
    "u2": ("baking", "astronomy", "painting", "telescopes", "croissants", "watercolours"),
    "u3": ("fishing", "violin", "hiking", "canoes", "trout", "mountains"),
    "u4": ("poetry", "football", "knitting", "sonnets", "stadiums", "wool"),
}
PROMPTS = [
    ("How should I spend my weekend?", "This weekend, make time for"),
    ("What gift would make me happy?", "A thoughtful gift could involve"),
    ("Plan a short holiday for me.", "Pick a destination known for"),
    ("Suggest a club to join.", "Look for a local club about"),
    ("What should I read next?", "Try a book about"),
    ("How can I relax after work?", "Unwind with some"),
]


def interests_text(persona: str) -> str:
    *first, last = INTERESTS[persona]
    return f"{', '.join(first)} and {last}"


def acceptance_lines() -> list[dict[str, Any]]:
    """A faithful system answers each persona with that persona's interests; a shuffled one gives each
    persona another persona's answer (a derangement, different per prompt). Every answer of a prompt is
    the same short opener around six words no other persona has, so all answers of a prompt are equally
    far apart: a permutation leaves every σ(s_j, s_k), hence DEGRESS, unchanged. A persona's reference
    names its interests, so the faithful answers are close to their references and the shuffled ones far."""
    personas = list(INTERESTS)
    rows = []
    for index, (question, opener) in enumerate(PROMPTS):
        answers = {persona: f"{opener} {interests_text(persona)}." for persona in personas}
        shift = index % 3 + 1
        for position, persona in enumerate(personas):
            common = {"persona": f"The person enjoys {interests_text(persona)}.", "prompt": question}
            reference = f"I like {interests_text(persona)}."
            rows.append(line(f"q{index}", persona, "faithful", answers[persona], reference, **common))
            impostor = personas[(position + shift) % len(personas)]
            rows.append(line(f"q{index}", persona, "shuffled", answers[impostor], reference, **common))
    return rows


def judged(path: Path, sim_url: str, *extra: str, run: Callable[..., Any] = run_pjudge) -> Any:
    return run("personalization", str(path), "--judge", "persona-certainty", "--provider",
               "openai-compatible", "--model", "sim-judge", "--base-url", sim_url, *extra)


def test_shuffled_responses_keep_degress_but_lose_perseval_and_persona_fit(tmp_path: Path, start_sim) -> None:
    sim = start_sim("--noise", "0.0", "--first-bias", "0.2", "--seed", "3")
    path = write_jsonl(tmp_path / "responses.jsonl", acceptance_lines())
    verdicts_out = tmp_path / "pairs.jsonl"
    result = judged(path, sim.openai_base_url, "--format", "json", "--verdicts-out", str(verdicts_out))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    faithful, shuffled = document["systems"]["faithful"], document["systems"]["shuffled"]

    # The text measures: DEGRESS cannot see whose answer a persona got; PerSEval's accuracy term can.
    assert shuffled["degress"] == pytest.approx(faithful["degress"], abs=1e-9)
    assert faithful["perseval"] > 0.5
    assert shuffled["perseval"] < 0.1 * faithful["perseval"]

    # The judge sees it too: each persona's own answer wins for the faithful system only.
    assert faithful["persona_fit_win_rate"] > 0.75 and faithful["persona_fit_ci95"][0] > 0.5
    assert shuffled["persona_fit_win_rate"] < 0.5 and shuffled["persona_fit_ci95"][1] < 0.5
    assert faithful["pairwise_difference"] > 0.4 and shuffled["pairwise_difference"] < 0
    for scores in (faithful, shuffled):
        assert (scores["n_pairs"], scores["n_missing"], scores["n_persona_fit_prompts"]) == (6 * 12, 0, 6)
        assert scores["n_pair_differences"] == 6 * 6 and scores["judge_cost_usd"] > 0
        low, high = scores["persona_fit_ci95"]
        assert low <= scores["persona_fit_win_rate"] <= high
    judge = document["judge"]
    assert judge["items"] == 2 * 6 * 12 and judge["calls"] == 2 * judge["items"]
    assert judge["simulated"] is True and judge["failed_calls"] == 0
    # Shuffled pairs whose B answer is persona p's own answer show the judge exactly what a faithful
    # pair does (in the other order), so the cache may answer some of them within the first run.
    assert sim.stats()["completions"] == judge["calls"] - judge["cached_calls"]
    pairs = [json.loads(row) for row in verdicts_out.read_text().splitlines()]
    assert len(pairs) == judge["items"] and all(len(v["calls"]) == 2 for v in pairs)

    # A rerun is answered from the call cache: no request reaches the judge, same numbers.
    before = sim.stats()["requests"]
    rerun = judged(path, sim.openai_base_url, "--format", "json")
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads(rerun.stdout)
    assert sim.stats()["requests"] == before
    assert again["judge"]["cached_calls"] == judge["calls"]
    for system in ("faithful", "shuffled"):
        assert again["systems"][system]["persona_fit_win_rate"] == document["systems"][system]["persona_fit_win_rate"]
        assert again["systems"][system]["judge_cost_usd"] == 0

    page = judged(path, sim.openai_base_url, "--format", "html")
    assert page.returncode == 0, page.stderr
    assert page.stdout.startswith("<!DOCTYPE html>") and "<td>shuffled</td>" in page.stdout
    assert f"{faithful['persona_fit_win_rate']:.4f}" in page.stdout and "simulated judge" in page.stdout
    markdown = judged(path, sim.openai_base_url)
    assert markdown.returncode == 0 and "## Persona fit" in markdown.stdout
    assert sim.stats()["requests"] == before


def test_judged_run_without_a_persona_description_is_bad_input(tmp_path: Path) -> None:
    rows = acceptance_lines()
    for row in rows:
        if row["persona_id"] == "u3":
            del row["persona"]
    path = write_jsonl(tmp_path / "responses.jsonl", rows)
    # Nothing listens on port 9: the error must come before any call.
    result = judged(path, "http://127.0.0.1:9/v1", "--format", "json", run=invoke_pjudge)
    assert result.returncode == 2, result.stderr
    assert "line 5" in result.stderr and "persona 'u3' has no description" in result.stderr
    assert result.stdout == ""

    # Without --judge the same file is fine: descriptions are only needed by the judge.
    plain = invoke_pjudge("personalization", str(path), "--format", "json")
    assert plain.returncode == 0, plain.stderr
    assert "persona_fit_win_rate" not in json.loads(plain.stdout)["systems"]["faithful"]


def test_html_page_escapes_names() -> None:
    scores = {"n_prompts": 1, "n_skipped": 0, "degress": 0.5, "egises": 0.5, "edp": 1.0, "perseval": 0.5,
              "distance_to_reference": 0.1, "persona_fit_win_rate": 0.75, "persona_fit_ci95": [0.6, 0.9]}
    page = render_html({"distance": "jsd", "variant": "simplified", "anchor_system": None,
                        "systems": {"<b>sys</b>": scores},
                        "judge": {"profile": "p", "provider": "replay", "model": "m", "calls": 4, "cached_calls": 0,
                                  "failed_calls": 0, "cost_usd": 0.0, "simulated": False}})
    assert "<b>sys" not in page and "&lt;b&gt;sys&lt;/b&gt;" in page
    assert "<td>0.7500</td><td>[0.600, 0.900]</td>" in page


def test_judge_options_need_judge(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "responses.jsonl", acceptance_lines())
    result = invoke_pjudge("personalization", str(path), "--provider", "openai-compatible")
    assert result.returncode == 2 and "--provider" in result.stderr and "--judge" in result.stderr
    result = invoke_pjudge("personalization", str(path), "--judge", "persona-certainty", "--no-swap")
    assert result.returncode == 2 and "both orders" in result.stderr
