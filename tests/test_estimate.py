"""`pjudge estimate` and judge.estimate: calls, tokens and cost before anything runs, counted by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from judge.estimate import CHARS_ESTIMATE, chars_estimate, estimate, estimate_profile
from judge.profiles import CascadeProfile, JudgeProfile, Price
from judge.records import PairItem
from tests.support.cli import invoke_pjudge

# A template whose rendered text is easy to count: "Q:<question> 1:<first> 2:<second>" plus the
# persona block "|P:<persona>" when there is one; a system message of 10 characters.
TEMPLATE = '''name = "tiny"
version = "1"
parser = "choice-certainty"
system = "0123456789"
persona_block = "|P:{persona}"
user = "Q:{question} 1:{answer_1} 2:{answer_2}{persona_block}"
'''
ITEMS = [
    # user text "Q:abcd 1:xy 2:xyz12" is 19 characters, both orders; + system 10 = 29 -> ceil(29/4) = 8
    PairItem(id="1", prompt="abcd", response_a="xy", response_b="xyz12"),
    # "Q:q 1:a 2:b|P:old" is 17 characters (+ 10 = 27 -> 7) in both orders
    PairItem(id="2", prompt="q", response_a="a", response_b="b", persona="old"),
]


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(TEMPLATE)
    return str(path)


def profile(template: str, **fields: object) -> JudgeProfile:
    base: dict[str, object] = {"provider": "anthropic", "model": "claude-x", "template": template, "max_tokens": 50,
                               "price": Price(input_per_mtok=3.0, output_per_mtok=15.0)}
    return JudgeProfile.model_validate({**base, **fields})


def test_chars_over_four_counts_every_message_and_rounds_up() -> None:
    assert chars_estimate([{"role": "system", "content": "0123456789"}, {"role": "user", "content": "abc"}]) == 4
    assert chars_estimate([{"role": "user", "content": "abcd"}]) == 1


def test_estimate_by_hand_both_orders_one_sample(tiny: str) -> None:
    result = estimate_profile(profile(tiny), ITEMS)
    # 2 items x 2 orders x 1 sample; input (8 + 8) + (7 + 7) = 30; output 4 x 50 = 200
    assert (result.calls, result.input_tokens, result.output_tokens) == (4, 30, 200)
    assert result.cost_usd == pytest.approx((30 * 3.0 + 200 * 15.0) / 1e6)
    assert result.counted_by == f"input: {CHARS_ESTIMATE}; output: max_tokens (upper bound)"
    assert any("re-asks are not counted" in note for note in result.notes)


def test_estimate_multiplies_by_samples_and_orders(tiny: str) -> None:
    result = estimate_profile(profile(tiny, samples=3, swap=False), ITEMS)
    # 2 items x 1 order x 3 samples; input 3 x (8 + 7) = 45; output 6 x 50 = 300
    assert (result.calls, result.input_tokens, result.output_tokens) == (6, 45, 300)


def test_a_cascade_is_estimated_as_every_stage_on_every_item(tiny: str) -> None:
    cascade = CascadeProfile.model_validate({"name": "c", "cascade": [
        {"profile": "cheap", "threshold": 0.9}, {"profile": "strong"}]})
    cascade.judges = [profile(tiny, max_tokens=10), profile(tiny, max_tokens=20, samples=2)]
    result = estimate(cascade, ITEMS)
    assert [s.calls for s in result.stages] == [4, 8]
    assert (result.calls, result.input_tokens, result.output_tokens) == (12, 30 + 60, 4 * 10 + 8 * 20)
    document = result.document()
    assert len(document["stages"]) == 2 and any("worst case" in n for n in document["notes"])


def test_openai_uses_tiktoken_where_it_can_load_its_encoding(tiny: str) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    try:
        encoding = tiktoken.encoding_for_model("gpt-4o")
    except Exception:  # noqa: BLE001 - installed, but its encoding file cannot be fetched offline
        pytest.skip("tiktoken cannot load its encoding here (offline)")
    result = estimate_profile(profile(tiny, provider="openai", model="gpt-4o"), ITEMS[:1])
    assert result.counted_by.startswith(f"input: tiktoken:{encoding.name}")
    tokens = 3 + (3 + len(encoding.encode("0123456789"))) + (3 + len(encoding.encode("Q:abcd 1:xy 2:xyz12")))
    assert result.input_tokens == 2 * tokens


def test_openai_without_tiktoken_says_it_estimated(tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import judge.estimate

    monkeypatch.setattr(judge.estimate, "_tiktoken_encoding", lambda model: None)
    result = estimate_profile(profile(tiny, provider="openai", model="gpt-4o"), ITEMS)
    assert result.input_tokens == 30 and CHARS_ESTIMATE in result.counted_by


def test_cli_prints_the_estimate_as_json(tiny: str, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(item.model_dump_json(exclude_none=True) + "\n" for item in ITEMS))
    profile_file = tmp_path / "p.toml"
    profile_file.write_text(f'provider = "anthropic"\nmodel = "claude-x"\ntemplate = "{tiny}"\nmax_tokens = 50\n'
                            "[price]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n")
    result = invoke_pjudge("estimate", str(items), "--profile", str(profile_file), "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert {k: document[k] for k in ("calls", "input_tokens", "output_tokens")} == {
        "calls": 4, "input_tokens": 30, "output_tokens": 200}
    assert document["cost_usd"] == pytest.approx(0.00309)
    assert document["counted_by"].startswith("input: estimate:chars/4")
    bad = invoke_pjudge("estimate", str(tmp_path / "missing.jsonl"), "--profile", str(profile_file))
    assert bad.returncode == 2
