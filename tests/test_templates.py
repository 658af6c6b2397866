"""Templates are data files; personas as text or attributes; user templates by folder or path."""

from __future__ import annotations

from pathlib import Path

import pytest

from judge.profiles import ProfileError, load_profile
from judge.records import PairItem
from judge.templates import TemplateError, available_templates, get_template, render_persona

ITEM = PairItem(id="x", prompt="How do I save money?", response_a="Cook at home.", response_b="Buy bonds.",
                persona="The person is a student in Lyon.")


def test_builtins_exist() -> None:
    assert {"persona-certainty", "faireval-scores", "persona-tie"} <= set(available_templates())


def test_both_orders_swap_the_answers() -> None:
    template = get_template("persona-certainty")
    ab = template.render(ITEM, "AB")[-1]["content"]
    ba = template.render(ITEM, "BA")[-1]["content"]
    assert ab.index("Cook at home.") < ab.index("Buy bonds.")
    assert ba.index("Buy bonds.") < ba.index("Cook at home.")
    assert "[User Profile]\nThe person is a student in Lyon." in ab
    assert "[[X]]" in ab and "1 to 100" in ab


def test_no_persona_drops_the_profile_block() -> None:
    template = get_template("persona-certainty")
    item = ITEM.model_copy(update={"persona": None})
    assert "[User Profile]" not in template.render(item, "AB")[-1]["content"]
    scores = get_template("faireval-scores").render(item, "AB")
    assert scores[0]["role"] == "system"
    assert "[User Profile]" not in scores[1]["content"]
    assert "for the user described" not in scores[1]["content"]
    assert "Score of the Assistant 1: <score>" in scores[1]["content"]


def test_persona_attributes_become_sentences() -> None:
    text = render_persona({"age": "55-64", "religion": "Buddhist", "hobbies": ["chess", "hiking"], "empty": ""})
    assert text == "The person's age is 55-64. The person's religion is Buddhist. The person's hobbies is chess, hiking."


def test_response_text_is_never_expanded_as_a_placeholder() -> None:
    item = ITEM.model_copy(update={"response_a": "Literally {answer_2} and {persona}"})
    content = get_template("persona-certainty").render(item, "AB")[-1]["content"]
    assert "Literally {answer_2} and {persona}" in content


def test_user_template_from_folder_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "terse.toml").write_text(
        'name = "terse"\nversion = "2"\nparser = "choice-tie"\n'
        'user = "Q: {question}\\n1: {answer_1}\\n2: {answer_2}\\nReply [[A]], [[B]] or [[C]]."\n'
    )
    monkeypatch.setenv("PJUDGE_TEMPLATES", str(folder))
    template = get_template("terse")
    assert template.version == "2" and template.parser == "choice-tie"
    assert template.render(ITEM, "BA")[-1]["content"].startswith("Q: How do I save money?\n1: Buy bonds.")
    assert get_template(str(folder / "terse.toml")).key == template.key
    profile = load_profile("persona-tie", template=str(folder / "terse.toml"))
    assert profile.answer_kind == "choice"


def test_template_key_changes_with_its_text(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('name = "t"\nparser = "scores"\nuser = "{question} {answer_1} {answer_2}"\n')
    first = get_template(str(path)).key
    path.write_text('name = "t"\nparser = "scores"\nuser = "Now: {question} {answer_1} {answer_2}"\n')
    from judge.templates import load_template_file

    assert load_template_file(path).key != first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('name = "bad"\nparser = "scores"\nuser = "{question} {answer_1}"\n', "{answer_2}"),
        ('name = "bad"\nparser = "guess"\nuser = "{question} {answer_1} {answer_2}"\n', "parser"),
        ('name = "bad"\nparser = "scores"\nuser = "{question} {answer_1} {answer_2}"\ncolour = 1\n', "colour"),
        ("not toml [", "bad.toml"),
    ],
)
def test_bad_templates_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        get_template(str(path))


def test_unknown_template_and_profile() -> None:
    with pytest.raises(TemplateError, match="unknown template 'nope'"):
        get_template("nope")
    with pytest.raises(ProfileError, match="unknown profile 'nope'"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="samples"):
        load_profile("persona-certainty", samples=0)
    with pytest.raises(ProfileError, match="api_key_env"):
        load_profile({"api_key_env": "sk-live-0123456789"})


def test_profile_objects_override_a_base() -> None:
    profile = load_profile({"template": "faireval-scores", "model": "m", "provider": "anthropic"})
    assert profile.name == "faireval-scores" and profile.samples == 3 and profile.answer_kind == "scores"
    assert profile.model == "m" and profile.provider == "anthropic"
    assert load_profile({"profile": "persona-tie", "samples": 2}).samples == 2
