"""SPEC 4 `cascade` (calibration.cascade) and `pjudge calibrate` (SPEC 7): the rule pinned against
hand-computed thresholds, the one-stage equivalence with `risk_control`, the join by id and its
errors, the planner's Pareto front, the CLI's exit codes and messages, the cascade profile's TOML."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from calibration.cascade import (
    StageVerdicts,
    apply,
    calibrate,
    dominated,
    join_stages,
    plan,
    sub_cascades,
)
from calibration.risk import risk_control
from judge.jsonl import InputError, write_jsonl
from judge.records import Verdict
from pjudge.cli import main
from tests.support.verdicts import call, synthetic, verdict


def judged(item_id: str, winner: str | None, label: str | None, confidence: float, **fields: Any) -> Verdict:
    """A verdict of confidence max(p_a, 1 - p_a) = `confidence` for its winner."""
    p_a = None if winner is None else confidence if winner == "A" else round(1 - confidence, 9)
    return verdict(winner, label, p_a=p_a, id=item_id, **fields)


def other(label: str) -> str:
    return "B" if label == "A" else "A"


def hand_stages() -> tuple[list[Verdict], list[Verdict]]:
    """Stage 1: h0..h29 right at confidence 0.95; m0..m39 at 0.6, half of them wrong; u0..u4
    unlabelled. Stage 2 (only labelled items): m0..m31 right at 0.9, m32..m39 at 0.7 with four wrong,
    and every h wrong at 0.99, which must not matter: stage 1 accepts them all."""
    first = [judged(f"h{i}", "A", "A", 0.95) for i in range(30)]
    first += [judged(f"m{i}", "A", "A" if i < 20 else "B", 0.6) for i in range(40)]
    first += [judged(f"u{i}", "A", None, 0.99) for i in range(5)]
    second = [judged(f"h{i}", "B", "A", 0.99) for i in range(30)]
    labels = {v.id: v.human_label for v in first}
    for i in range(40):
        label = labels[f"m{i}"]
        assert label is not None
        if i < 32:
            second.append(judged(f"m{i}", label, label, 0.9))
        else:
            second.append(judged(f"m{i}", other(label) if i < 36 else label, label, 0.7))
    return first, second


def stages_of(*verdict_lists: list[Verdict]) -> Any:
    return join_stages([StageVerdicts(f"s{k + 1}", f"s{k + 1}.jsonl", vs) for k, vs in enumerate(verdict_lists)])


# ---------------------------------------------------------------------------- the rule


def test_two_stages_match_the_thresholds_computed_by_hand() -> None:
    """Level delta/K = 0.2/2 = 0.1, target 0.9 (error bound at most 0.1), candidates i/4999.

    Stage 1 (70 labelled items reach it): the highest lambda accepting 30 is 4749/4999 (just under
    0.95); with 0 errors in 30 the Clopper-Pearson bound is 1 - 0.1^(1/30) = 0.0739, and it stays so
    down to 3000/4999, the first candidate above 0.6; below it 70 items with 20 errors fail. Stage 2
    (the 40 m items): 32 right at 0.9 pass with bound 1 - 0.1^(1/32) = 0.0694 down to 3500/4999, the
    first candidate above 0.7; with the 8 items at 0.7 (4 wrong) the bound is 0.190 and fails."""
    result = calibrate(stages_of(*hand_stages()), target=0.9, delta=0.2)
    s1, s2 = result.stages
    assert (s1.name, s1.threshold, s1.reached, s1.accepted, s1.errors, s1.accuracy) == (
        "s1", 3000 / 4999, 70, 30, 0, 1.0)
    assert s1.bound == pytest.approx(1 - 0.1 ** (1 / 30), abs=1e-12)
    assert (s2.name, s2.threshold, s2.reached, s2.accepted, s2.errors, s2.accuracy) == (
        "s2", 3500 / 4999, 40, 32, 0, 1.0)
    assert s2.bound == pytest.approx(1 - 0.1 ** (1 / 32), abs=1e-12)
    assert result.as_dict() == {
        "target": 0.9, "delta": 0.2, "stages": [s1.as_dict(), s2.as_dict()],
        "accepted": 62, "errors": 0, "accuracy": 1.0, "coverage": 62 / 70, "escalated": 8,
    }
    assert list(s1.as_dict()) == ["name", "threshold", "reached", "accepted", "errors", "bound", "accuracy"]


def test_each_stage_is_tested_at_delta_over_k() -> None:
    """30 right answers at 0.95: the bound is 1 - 0.1^(1/30) = 0.0739 at delta 0.1 alone, but
    1 - 0.05^(1/30) = 0.0950 as one of two stages: target 0.92 (0.08) passes alone, fails in pairs."""
    items = [judged(f"h{i}", "A", "A", 0.95) for i in range(30)]
    alone = calibrate(stages_of(items), target=0.92, delta=0.1)
    assert alone.stages[0].threshold == 0.0 and alone.coverage == 1.0  # the walk reaches the lowest lambda
    pair = calibrate(stages_of(items, items), target=0.92, delta=0.1)
    assert [s.threshold for s in pair.stages] == [None, None]
    assert pair.stages[0].bound == pytest.approx(1 - 0.05 ** (1 / 30), abs=1e-12)
    assert pair.stages[0].reason == "the bound fails already at the starting threshold"
    assert (pair.accepted, pair.accuracy, pair.coverage, pair.escalated) == (0, None, 0.0, 30)


def test_undecided_verdicts_are_never_accepted_and_go_on() -> None:
    """A tie or a null winner at stage 1 reaches stage 2 whatever its confidence; fewer than 30
    labelled decided items there gives a null threshold without a bound."""
    first = [judged(f"h{i}", "A", "A", 0.95) for i in range(30)]
    first += [verdict("tie", "A", p_a=0.5, id="t"), verdict(None, "B", p_a=None, id="n")]
    second = [judged(v.id, "A", "A", 0.99) for v in first[:30]] + [judged("t", "A", "A", 0.99),
                                                                   judged("n", "B", "B", 0.99)]
    result = calibrate(stages_of(first, second), target=0.8, delta=0.1)
    assert [s.reached for s in result.stages] == [32, 2]
    assert result.stages[1].threshold is None and result.stages[1].bound is None
    assert result.stages[1].reason == "fewer than 30 labelled decided items"
    assert result.escalated == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_stage_equals_risk_control_with_coverage_over_labelled(seed: int) -> None:
    verdicts = synthetic(400, seed=seed)
    # Some unlabelled (not items of the cascade) and some without a winner (never accepted).
    verdicts = [v.model_copy(update={"human_label": None}) if i % 9 == 0 else v for i, v in enumerate(verdicts)]
    verdicts = [v.model_copy(update={"winner": None, "p_a": None, "certainty": None}) if i % 13 == 0 else v
                for i, v in enumerate(verdicts)]
    labelled = sum(v.human_label is not None for v in verdicts)
    for target in (0.7, 0.8, 0.9):
        for delta in (0.05, 0.1, 0.3):
            rc = risk_control(verdicts, target, delta)
            result = calibrate(stages_of(verdicts), target, delta)
            stage = result.stages[0]
            assert (stage.threshold, stage.accepted, stage.errors, stage.bound, stage.accuracy) == (
                rc["threshold"], rc["accepted"], rc["errors"], rc["bound"], rc["accuracy"])
            assert stage.reached == labelled and result.accuracy == rc["accuracy"]
            assert result.coverage == rc["accepted"] / labelled
            assert result.escalated == labelled - rc["accepted"]


def test_apply_accepts_what_calibration_counted_and_rows_select_items() -> None:
    stages = stages_of(*hand_stages())
    result = calibrate(stages, target=0.9, delta=0.2)
    outcome = apply(stages, result.thresholds)
    assert (outcome.reached, outcome.accepted, outcome.errors) == ((70, 40), (30, 32), (0, 0))
    assert outcome.coverage == result.coverage and outcome.accuracy == 1.0
    assert outcome.cost_per_item([1.0, 10.0]) == pytest.approx(1.0 + 40 / 70 * 10.0)
    # Only the m items: stage 1 accepts none of them.
    m_rows = [i for i, item_id in enumerate(stages.ids) if item_id.startswith("m")]
    assert apply(stages, result.thresholds, rows=m_rows).accepted == (0, 32)
    assert apply(stages, [None, None]).accepted == (0, 0)


# ---------------------------------------------------------------------------- joining


def test_stages_join_by_id_on_the_labelled_items_of_the_first() -> None:
    first, second = hand_stages()
    stages = stages_of(first, list(reversed(second)))  # order of the later files does not matter
    assert stages.ids == tuple(v.id for v in first if v.human_label is not None)
    assert calibrate(stages, 0.9, 0.2).as_dict() == calibrate(stages_of(first, second), 0.9, 0.2).as_dict()


def test_join_errors_name_the_file_and_the_first_missing_id() -> None:
    first, second = hand_stages()
    with pytest.raises(InputError) as missing:
        stages_of(first, [v for v in second if v.id not in ("m3", "m5")])
    assert missing.value.source == "s2.jsonl" and "'m3'" in str(missing.value) and "'m5'" not in str(missing.value)
    with pytest.raises(InputError, match="more than one verdict") as twice:
        stages_of(first, second + second[:1])
    assert twice.value.source == "s2.jsonl"
    relabelled = [v.model_copy(update={"human_label": other(v.human_label or "A")}) if v.id == "h0" else v
                  for v in second]
    with pytest.raises(InputError, match="'h0' is labelled B here but A in s1.jsonl"):
        stages_of(first, relabelled)
    with pytest.raises(InputError, match="no labelled items"):
        stages_of([v.model_copy(update={"human_label": None}) for v in first])
    with pytest.raises(InputError, match="no stages"):
        join_stages([])
    # An unlabelled later verdict is fine: the first file's labels are the truth.
    unlabelled = [v.model_copy(update={"human_label": None}) for v in second]
    assert calibrate(stages_of(first, unlabelled), 0.9, 0.2).accepted == 62


# ---------------------------------------------------------------------------- the planner


def test_sub_cascades_keep_the_order() -> None:
    assert sub_cascades(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]


def test_dominated_needs_one_strict_improvement() -> None:
    assert dominated(2.0, 0.5, [(1.0, 0.5)]) and dominated(1.0, 0.4, [(1.0, 0.5)])
    assert not dominated(1.0, 0.5, [(1.0, 0.5)])  # equal on both: both stay
    assert not dominated(1.0, 0.5, [(0.5, 0.4), (2.0, 0.9)])


def test_plan_marks_the_pareto_front() -> None:
    first, second = hand_stages()
    p = plan(stages_of(first, second), target=0.9, delta=0.2, stage_costs={"s1": 1.0, "s2": 10.0})
    by = {e.stages: e for e in p.entries}
    assert set(by) == {("s1",), ("s2",), ("s1", "s2")}
    # s1 alone (level 0.2): the same threshold region, 30 of 70 accepted, cost 1.
    assert by[("s1",)].result.coverage == 30 / 70 and by[("s1",)].cost_per_item == 1.0
    # s1 -> s2 at level 0.1 each: 62 of 70, cost 1 + 40/70 * 10.
    assert by[("s1", "s2")].result.coverage == 62 / 70
    assert by[("s1", "s2")].cost_per_item == pytest.approx(1 + 40 / 70 * 10, abs=1e-11)
    # s2 alone judges everything at cost 10 and accepts its 32 right m items (the h ones are wrong at
    # 0.99, so no threshold above 0.7 passes with them and the walk fails at once): dominated.
    assert by[("s2",)].cost_per_item == 10.0 and not by[("s2",)].pareto
    assert [e.stages for e in p.front] == [("s1",), ("s1", "s2")]
    # The cheapest sub-cascade, if it accepts nothing, is still beaten by judging nothing.
    cheap = plan(stages_of(first, second), target=0.9, delta=0.2, stage_costs={"s1": 1.0, "s2": 0.5})
    assert [e.stages for e in cheap.front] == [("s1",), ("s1", "s2")]
    document = p.as_dict()
    assert document["target"] == 0.9 and document["delta"] == 0.2 and len(document["all"]) == 3
    assert document["stage_costs"] == {"s1": {"cost_per_item": 1.0, "source": "calls"},
                                       "s2": {"cost_per_item": 10.0, "source": "calls"}}


# ---------------------------------------------------------------------------- the CLI


def write_stages(tmp_path: Path, *verdict_lists: list[Verdict], names: tuple[str, ...] = ("cheap", "strong")) -> list[str]:
    paths = []
    for name, verdicts in zip(names, verdict_lists, strict=False):
        path = tmp_path / f"{name}.jsonl"
        write_jsonl(path, verdicts)
        paths.append(str(path))
    return paths


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["calibrate", *args])


def test_cli_prints_the_cascade_as_spec_4_json_and_markdown(tmp_path: Path) -> None:
    paths = write_stages(tmp_path, *hand_stages())
    result = run(*paths, "--target-accuracy", "0.9", "--delta", "0.2")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document) == ["cascade"]
    cascade = document["cascade"]
    assert list(cascade) == ["target", "delta", "stages", "accepted", "errors", "accuracy", "coverage", "escalated"]
    assert [(s["name"], s["threshold"], s["reached"], s["accepted"]) for s in cascade["stages"]] == [
        ("cheap", 3000 / 4999, 70, 30), ("strong", 3500 / 4999, 40, 32)]
    md = run(*paths, "--target-accuracy", "0.9", "--delta", "0.2", "--format", "md")
    assert md.exit_code == 0 and "| cheap | 0.6001 | 70 | 30 | 0 |" in md.stdout and "escalated 8" in md.stdout


@pytest.mark.parametrize("args,message", [
    (["--target-accuracy", "0.8"], "no verdict files given"),
    (["{a}", "--target-accuracy", "1.5"], "Invalid value for '--target-accuracy'"),
    (["{a}", "--target-accuracy", "0"], "Invalid value for '--target-accuracy'"),
    (["{a}", "--target-accuracy", "0.8", "--delta", "1"], "Invalid value for '--delta'"),
    (["{a}", "{missing}", "--target-accuracy", "0.8"], "{missing}: cannot read file"),
    (["{a}", "{bad}", "--target-accuracy", "0.8"], "{bad}, line 2: invalid JSON"),
    (["{a}", "{short}", "--target-accuracy", "0.8"], "{short}, field 'id': no verdict for item 'm39'"),
    (["{a}", "{a}", "--target-accuracy", "0.8"], "same stem 'cheap'"),
    (["{a}", "--target-accuracy", "0.8", "--price", "cheap=1"], "--price is for --plan"),
    (["{a}", "--target-accuracy", "0.8", "--plan"], "{a}, field 'calls[].cost_usd': no call has a cost; "
                                                    "give --price cheap=USD_PER_ITEM"),
    (["{a}", "--target-accuracy", "0.8", "--plan", "--price", "dear=1"], "'dear' is not a stage"),
    (["{a}", "--target-accuracy", "0.8", "--plan", "--price", "cheap=-1"], "must be a finite number >= 0"),
    (["{a}", "--target-accuracy", "0.8", "--plan", "--save-profile", "{toml}"], "does not go with --plan"),
    (["{a}", "--target-accuracy", "0.8", "--save-profile", "{a}"], "give a path ending in .toml"),
])
def test_cli_bad_input_exits_2_naming_the_problem(tmp_path: Path, args: list[str], message: str) -> None:
    first, second = hand_stages()
    a, _ = write_stages(tmp_path, first, second)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(second[0].model_dump_json() + "\n{not json\n", encoding="utf-8")
    short = tmp_path / "short.jsonl"
    write_jsonl(short, [v for v in second if v.id != "m39"])
    paths = {"a": a, "missing": str(tmp_path / "missing.jsonl"), "bad": str(bad), "short": str(short),
             "toml": str(tmp_path / "c.toml")}
    result = run(*(arg.format(**paths) for arg in args))
    assert result.exit_code == 2, result.output
    assert message.format(**paths) in result.output
    assert not (tmp_path / "c.toml").exists()


def test_cli_plan_uses_call_costs_or_prices(tmp_path: Path) -> None:
    first, second = hand_stages()
    priced = [v.model_copy(update={"calls": [call(cost_usd=4.0), call(order="BA", cost_usd=6.0)]}) for v in second]
    paths = write_stages(tmp_path, first, priced)
    result = run(*paths, "--target-accuracy", "0.9", "--delta", "0.2", "--plan", "--price", "cheap=1")
    assert result.exit_code == 0, result.output
    p = json.loads(result.stdout)["plan"]
    assert p["stage_costs"] == {"cheap": {"cost_per_item": 1.0, "source": "price"},
                                "strong": {"cost_per_item": 10.0, "source": "calls"}}
    assert [e["stages"] for e in p["front"]] == [["cheap"], ["cheap", "strong"]]
    assert p["front"][1]["thresholds"] == [3000 / 4999, 3500 / 4999]
    assert p["front"][1]["cost_per_item"] == pytest.approx(1 + 40 / 70 * 10, abs=1e-11)
    md = run(*paths, "--target-accuracy", "0.9", "--delta", "0.2", "--plan", "--price", "cheap=1", "--format", "md")
    assert md.exit_code == 0 and "| cheap → strong | 0.6001, 0.7001 | 0.8857 |" in md.stdout


def test_save_profile_writes_a_spec_2_1_cascade_profile(tmp_path: Path) -> None:
    first, second = hand_stages()
    # Stage 1: the built-in persona-certainty as it is; stage 2: a judge this machine has no profile for.
    known = [v.model_copy(update={"judge": v.judge.model_copy(update={"model": "gpt-4o-2024-08-06"})})
             for v in first]
    imported = [v.model_copy(update={"judge": v.judge.model_copy(update={
        "profile": "trust-or-escalate", "provider": "replay", "model": "gpt-4-turbo"})}) for v in second]
    target = tmp_path / "profiles" / "my-cascade.toml"
    result = run(*write_stages(tmp_path, known, imported), "--target-accuracy", "0.9", "--delta", "0.2",
                 "--save-profile", str(target))
    assert result.exit_code == 0, result.output
    assert f"wrote {target}: thresholds 0.600120024, 0.700140028" in result.stderr
    data = tomllib.loads(target.read_text(encoding="utf-8"))
    assert data == {
        "name": "my-cascade", "then": "human",
        "cascade": [{"profile": "persona-certainty", "threshold": 0.600120024},
                    {"profile": {"provider": "replay", "model": "gpt-4-turbo"}, "threshold": 0.700140028}],
    }
    # The same profile name with another model: an object naming it as the base.
    relabelled = [v.model_copy(update={"judge": v.judge.model_copy(update={"model": "gpt-test"})}) for v in known]
    again = run(*write_stages(tmp_path, relabelled, imported), "--target-accuracy", "0.9", "--delta", "0.2",
                "--save-profile", str(target))
    assert again.exit_code == 0, again.output
    assert tomllib.loads(target.read_text(encoding="utf-8"))["cascade"][0]["profile"] == {
        "profile": "persona-certainty", "provider": "openai", "model": "gpt-test"}


def test_save_profile_omits_a_null_threshold_and_raises_low_ones_to_half(tmp_path: Path) -> None:
    items = [judged(f"h{i}", "A", "A", 0.95) for i in range(30)]
    target = tmp_path / "c.toml"
    # Alone: threshold 0.0 (the walk reaches the lowest candidate), written as 0.5 (SPEC 2.1: [0.5, 1]).
    assert run(*write_stages(tmp_path, items, names=("one",)), "--target-accuracy", "0.92",
               "--save-profile", str(target)).exit_code == 0
    assert tomllib.loads(target.read_text(encoding="utf-8"))["cascade"] == [
        {"profile": {"profile": "persona-certainty", "provider": "openai", "model": "gpt-test"}, "threshold": 0.5}]
    # In pairs every stage fails: no threshold key (TOML has no null), a comment says why.
    result = run(*write_stages(tmp_path, items, items), "--target-accuracy", "0.92", "--save-profile", str(target))
    assert result.exit_code == 0, result.output
    assert "sends every item to humans" in result.stderr
    text = target.read_text(encoding="utf-8")
    assert [set(table) for table in tomllib.loads(text)["cascade"]] == [{"profile"}, {"profile"}]
    assert "# threshold: null (the bound fails already at the starting threshold)" in text


def test_save_profile_refuses_a_stage_of_several_judges(tmp_path: Path) -> None:
    first, second = hand_stages()
    mixed = [v.model_copy(update={"judge": v.judge.model_copy(update={"model": f"m{i % 2}"})})
             for i, v in enumerate(second)]
    target = tmp_path / "c.toml"
    result = run(*write_stages(tmp_path, first, mixed), "--target-accuracy", "0.9", "--save-profile", str(target))
    assert result.exit_code == 2 and "field 'judge': verdicts of several judges" in result.output
    assert not target.exists()


def test_save_profile_turns_a_batch_mode_judge_into_an_interactive_stage(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Judging a calibration set in batch mode (half price) is natural; a cascade's stages run one call
    at a time, so the saved cascade, which no loader would take with a batch stage, asks interactively."""
    from judge.profiles import CascadeProfile, load_judging
    from judge.settings import reset_settings

    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "overnight.toml").write_text('name = "overnight"\nmodel = "gpt-4o-2024-08-06"\nmode = "batch"\n',
                                           encoding="utf-8")
    monkeypatch.setenv("PJUDGE_PROFILES", str(folder))
    reset_settings()
    first, second = hand_stages()
    batch = [v.model_copy(update={"judge": v.judge.model_copy(update={"profile": "overnight",
                                                                      "model": "gpt-4o-2024-08-06"})}) for v in first]
    target = tmp_path / "c.toml"
    result = run(*write_stages(tmp_path, batch, second), "--target-accuracy", "0.9", "--delta", "0.2",
                 "--save-profile", str(target))
    assert result.exit_code == 0, result.output
    assert tomllib.loads(target.read_text(encoding="utf-8"))["cascade"][0]["profile"] == {
        "profile": "overnight", "mode": "interactive"}
    cascade = load_judging(str(target))
    assert isinstance(cascade, CascadeProfile) and cascade.judges[0].mode == "interactive"
    assert cascade.judges[0].model == "gpt-4o-2024-08-06"
    reset_settings()
