"""Cascades in-process (SPEC 2.1): each stage a `Judge` around the scripted MockProvider, stage 1
on every item, later stages only on what the earlier ones did not accept, against acceptance
worked out by hand per stage; and the CLI's profile errors (exit 2)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from judge.cache import SqliteCallCache
from judge.cascade import CascadeRun, accepts, judge_cascade
from judge.profiles import (
    CascadeProfile,
    JudgeProfile,
    ProfileError,
    judging_from_stored,
    load_judging,
    stored_judging,
)
from judge.providers.base import CallRequest
from judge.providers.mock import MockProvider
from judge.records import PairItem, Verdict
from judge.runner import Judge
from pjudge.cli import main as cli

# Per stage, per item: the (AB, BA) answers, as the judge wrote them (BA shows B first, so its
# [[A]] means the item's B). max_reasks 0: an unparseable answer stays unparsed.
SCRIPT: dict[int, dict[str, tuple[str, str]]] = {
    0: {
        "i1": ("[[A]] [[90]]", "[[B]] [[90]]"),  # A, A: p_a 0.95, confidence 0.95 >= 0.85: accepted
        "i2": ("[[A]] [[80]]", "[[A]] [[80]]"),  # A, B: p_a 0.5, a tie: on to stage 2
        "i3": ("[[A]] [[70]]", "[[B]] [[70]]"),  # p_a 0.85, exactly the threshold: accepted
        "i4": ("[[A]] [[60]]", "[[B]] [[60]]"),  # p_a 0.8 < 0.85: on
        "i5": ("no idea", "none either"),          # unparsed, winner null: on
    },
    1: {
        "i2": ("[[B]] [[70]]", "[[A]] [[70]]"),  # B, B: p_a 0.15, confidence 0.85 >= 0.8: accepted
        "i4": ("[[A]] [[50]]", "[[B]] [[50]]"),  # p_a 0.75 < 0.8: on
        "i5": ("[[B]] [[90]]", "[[A]] [[90]]"),  # p_a 0.05: accepted
    },
    2: {
        "i4": ("[[A]] [[70]]", "[[B]] [[70]]"),  # p_a 0.85 < 0.9: escalated
    },
}
THRESHOLDS = (0.85, 0.8, 0.9)
PRICES = (1.0, 10.0, 100.0)  # USD per million input tokens; each call reports 1,000 of them
ITEMS = [PairItem(id=f"i{n}", prompt=f"Question {n}?", response_a="Save first.", response_b="Spend less.",
                  persona="The person is 30.", human_label="A" if n % 2 else "B") for n in range(1, 6)]


def stage_profile(stage: int) -> dict[str, Any]:
    return {"profile": "persona-certainty", "name": f"stage-{stage}", "model": f"model-{stage}", "max_reasks": 0,
            "price": {"input_per_mtok": PRICES[stage], "output_per_mtok": 0.0}}


def cascade_profile(thresholds: tuple[float | None, ...] = THRESHOLDS) -> CascadeProfile:
    loaded = load_judging({"name": "three-stage", "cascade": [
        {"profile": stage_profile(stage), "threshold": threshold} for stage, threshold in enumerate(thresholds)]})
    assert isinstance(loaded, CascadeProfile)
    return loaded


def scripted(stage: int) -> MockProvider:
    def answer(request: CallRequest) -> str:
        ab, ba = SCRIPT[stage][request.item_id]
        return ab if request.order == "AB" else ba

    return MockProvider(answer, usage=(1000, 10))


def run(cascade: CascadeProfile, providers: list[MockProvider], cache: Any = None) -> list[Verdict]:
    async def main() -> list[Verdict]:
        judges = [Judge(profile, provider=provider, cache=cache) for profile, provider in zip(
            cascade.judges, providers, strict=True)]
        try:
            return await judge_cascade(cascade, ITEMS, judges)
        finally:
            for judge in judges:
                await judge.aclose()

    return asyncio.run(main())


def test_each_stage_judges_only_what_the_earlier_ones_left_and_the_accepting_stage_decides() -> None:
    cascade = cascade_profile()
    providers = [scripted(stage) for stage in range(3)]
    verdicts = {v.id: v for v in run(cascade, providers)}

    # Who was asked: stage 1 every item, stage 2 the three left, stage 3 the one left; both orders each.
    asked = [sorted({r.item_id for r in p.requests}) for p in providers]
    assert asked == [["i1", "i2", "i3", "i4", "i5"], ["i2", "i4", "i5"], ["i4"]]
    assert [len(p.requests) for p in providers] == [10, 6, 2]

    expected = {  # id: (stage, winner, p_a, abstained, stages that judged it)
        "i1": (0, "A", 0.95, False, 1), "i2": (1, "B", 0.15, False, 2), "i3": (0, "A", 0.85, False, 1),
        "i4": (None, "A", 0.85, True, 3), "i5": (1, "B", 0.05, False, 2),
    }
    for item_id, (stage, winner, p_a, abstained, judged) in expected.items():
        v = verdicts[item_id]
        assert (v.stage, v.winner, v.p_a, v.abstained) == (stage, winner, p_a, abstained), item_id
        assert v.stages is not None and len(v.stages) == judged
        assert [s.model for s in v.stages] == [f"model-{k}" for k in range(judged)]
        # Every call carries its stage; 1,000 input tokens at the stage's price each.
        assert sorted({c.stage for c in v.calls}) == list(range(judged))
        assert [s.cost_usd for s in v.stages] == [round(2 * PRICES[k] * 1000 / 1e6, 9) for k in range(judged)]
        assert v.judge.profile == "three-stage" and v.judge.provider == "cascade"
        assert v.judge.model == "model-0 > model-1 > model-2"
    # The escalated item: the last stage's verdict, and the earlier ones' judgments kept in `stages`.
    i4 = verdicts["i4"]
    assert [s.p_a for s in i4.stages or []] == [0.8, 0.75, 0.85]
    assert i4.certainty == 0.7 and i4.consistent is True
    # The top-level fields are the deciding stage's: i5's stage-1 failure is only in its stages.
    assert verdicts["i5"].error is None and (verdicts["i5"].stages or [])[0].winner is None
    # The output has stage and stages; each call its stage.
    line = json.loads(verdicts["i2"].model_dump_json())
    assert line["stage"] == 1 and [c["stage"] for c in line["calls"]] == [0, 0, 1, 1]


def test_a_stage_without_threshold_accepts_nothing_and_a_rerun_comes_from_the_cache(tmp_path: Path) -> None:
    cascade = cascade_profile((None, 0.8))
    cache = SqliteCallCache(tmp_path / "cache.sqlite")
    providers = [scripted(0), scripted(1)]
    SCRIPT[1].update({"i1": SCRIPT[0]["i1"], "i3": SCRIPT[0]["i3"]})
    try:
        first = run(cascade, providers, cache)
        assert [len(p.requests) for p in providers] == [10, 10]  # stage 1 trusted with nothing
        assert [v.stage for v in first] == [1, 1, 1, None, 1]
        again = [scripted(0), scripted(1)]
        second = run(cascade, again, cache)
    finally:
        del SCRIPT[1]["i1"], SCRIPT[1]["i3"]
    assert [len(p.requests) for p in again] == [0, 0]
    assert all(c.cached for v in second for c in v.calls if c.error is None)  # an unparsed call never says cached
    assert [(v.stage, v.p_a) for v in second] == [(v.stage, v.p_a) for v in first]


def test_acceptance_needs_a_decided_winner_and_the_rounded_confidence() -> None:
    def verdict(winner: str | None, p_a: float | None) -> Verdict:
        return Verdict(id="x", winner=winner, p_a=p_a, certainty=None, consistent=None,  # type: ignore[arg-type]
                       abstained=False, bpde=None, human_label=None,
                       judge={"profile": "p", "provider": "openai", "model": "m"}, calls=[])

    assert accepts(verdict("B", 0.1), 0.9)  # 1 - 0.1 is 0.9 exactly once rounded
    assert not accepts(verdict("A", 0.9), None)
    assert not accepts(verdict("tie", 0.5), 0.5)
    assert not accepts(verdict(None, None), 0.5)
    assert accepts(verdict("A", 0.5000000001), 0.5)


def test_a_run_refuses_a_stage_out_of_turn_or_missing_items() -> None:
    run_ = CascadeRun(cascade_profile(), ITEMS[:2])
    with pytest.raises(ValueError, match="no verdict"):
        run_.record(0, [])
    with pytest.raises(ValueError, match="stage 1 recorded"):
        run_.record(1, [])


def test_the_stored_form_comes_back_whole() -> None:
    cascade = cascade_profile()
    back = judging_from_stored(json.dumps(stored_judging(cascade)))
    assert isinstance(back, CascadeProfile)
    assert back.thresholds == list(THRESHOLDS)
    assert [j.model_dump() for j in back.judges] == [j.model_dump() for j in cascade.judges]
    single = judging_from_stored(JudgeProfile().model_dump_json())
    assert isinstance(single, JudgeProfile)


# ---------------------------------------------------------------- profile errors (CLI: exit 2)

def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("toml", "message"), [
    ('name = "c"\ncascade = []\n', "field 'cascade': List should have at least 1 item"),
    ('name = "c"\n[[cascade]]\nprofile = "persona-certainty"\nthreshold = 1.5\n',
     "field 'cascade.0.threshold': Input should be less than or equal to 1"),
    ('name = "c"\n[[cascade]]\nprofile = "persona-certainty"\nthreshold = 0.4\n',
     "field 'cascade.0.threshold': Input should be greater than or equal to 0.5"),
    ('name = "c"\n[[cascade]]\nprofile = "no-such-profile"\nthreshold = 0.9\n',
     "field 'cascade.0.profile': unknown profile 'no-such-profile'"),
    ('name = "c"\n[[cascade]]\nthreshold = 0.9\n[cascade.profile]\nname = "x"\n[[cascade.profile.cascade]]\n'
     'profile = "persona-certainty"\n', "field 'cascade.0.profile': a stage must be a judge profile, not a cascade"),
    # Stages run one call at a time: a batch-mode stage ran interactively without a word.
    ('name = "c"\n[[cascade]]\nprofile = "persona-certainty"\nthreshold = 0.9\n[[cascade]]\nthreshold = 0.9\n'
     '[cascade.profile]\nmode = "batch"\n', "field 'cascade.1.profile.mode': a cascade's stages run interactively"),
])
def test_the_cli_names_the_field_of_a_bad_cascade(tmp_path: Path, toml: str, message: str) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(ITEMS[0].model_dump_json() + "\n")
    profile = write(tmp_path / "bad.toml", toml)
    result = CliRunner().invoke(cli, ["judge", str(items), "-o", str(tmp_path / "v.jsonl"), "--profile",
                                      str(profile), "--quiet"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_a_stage_naming_a_cascade_and_flags_over_a_cascade_are_errors(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    write(folder / "inner.toml", 'name = "inner"\n[[cascade]]\nprofile = "persona-certainty"\nthreshold = 0.9\n')
    write(folder / "outer.toml", 'name = "outer"\n[[cascade]]\nprofile = "inner"\nthreshold = 0.9\n')
    monkeypatch.setenv("PJUDGE_PROFILES", str(folder))
    from judge.settings import reset_settings

    reset_settings()
    with pytest.raises(ProfileError, match="'inner' is a cascade; a stage must be a judge profile"):
        load_judging("outer")
    items = tmp_path / "items.jsonl"
    items.write_text(ITEMS[0].model_dump_json() + "\n")
    result = CliRunner().invoke(cli, ["judge", str(items), "-o", str(tmp_path / "v.jsonl"), "--profile", "inner",
                                      "--model", "gpt-4o", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "model cannot override a cascade; set them in its stages" in result.output
