"""Parsers: what real models emit, and the published parse rules."""

from __future__ import annotations

import pytest

from judge.parsers import parse_choice_certainty, parse_choice_tie, parse_fastchat_scores, parse_scores


@pytest.mark.parametrize(
    ("raw", "choice", "certainty"),
    [
        ("[[A]] [[80]]", "first", 0.8),
        ("[[B]]\n[[65]]", "second", 0.65),
        ("B]] [[80]]", "second", 0.8),  # Dong et al.'s completion style: the prompt ended in "[["
        ("After weighing the profile, **[[B]]** with certainty [[91]].", "second", 0.91),
        ("Final answer: [[Assistant A]]\nCertainty: [[70]]", "first", 0.7),
        ('{"choice": "B", "certainty": 65}', "second", 0.65),
        ('Here is my verdict: {"winner": "A", "confidence": "55"}', "first", 0.55),
        ("I choose Assistant A. Certainty: 70", "first", 0.7),
        ("Assistant B is clearly better suited for this user. [[85]]", "second", 0.85),
        ("[[A]]", "first", None),  # missing certainty stays missing (0.5 in the vote)
        ("[[A]] [[1000000000000000]]", "first", None),  # out of range is dropped, not clamped
        ("[[B]] [[0]]", "second", 0.0),
        ("[[C]] [[40]]", "tie", 0.4),
        ("A", "first", None),
        ("`[[B]]` `[[100]]`", "second", 1.0),
    ],
)
def test_choice_certainty_parses_what_models_emit(raw: str, choice: str, certainty: float | None) -> None:
    parsed = parse_choice_certainty(raw)
    assert parsed.ok, parsed.error
    assert parsed.choice == choice
    assert parsed.certainty == certainty


def test_out_of_range_certainty_leaves_a_note() -> None:
    parsed = parse_choice_certainty("[[A]] [[1000000000000000]]")
    assert parsed.note is not None and "outside 1-100" in parsed.note


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "Both responses have merits, and it is hard to say which one this user wants.",
     "Assistant A is better in tone, but Assistant B is better in content.", "[[D]] [[80]]", "[[90]]"],
)
def test_unparseable_answers_are_errors(raw: str) -> None:
    parsed = parse_choice_certainty(raw)
    assert not parsed.ok
    assert parsed.choice is None


def test_certainty_is_the_first_number_after_the_choice() -> None:
    assert parse_choice_certainty("[[12]] then [[B]] and [[77]] or [[20]]").certainty == 0.77


def test_tie_parser_ignores_certainty() -> None:
    assert parse_choice_tie("[[C]]").choice == "tie"
    parsed = parse_choice_tie("[[A]] [[80]]")
    assert parsed.choice == "first" and parsed.certainty is None


def test_scores_last_two_lines() -> None:
    raw = "Evaluation evidence: both fine.\nScore of the Assistant 1: 8\n\nScore of the Assistant 2: 9.5\n\n"
    assert parse_scores(raw).scores == (8.0, 9.5)


def test_scores_fall_back_to_labelled_lines() -> None:
    raw = "Score of the Assistant 1: 7\nScore of the Assistant 2: 4\nOverall, Assistant 1 is better."
    assert parse_scores(raw).scores == (7.0, 4.0)
    raw = "**Assistant 1**: 6\n**Assistant 2**: 9/10"
    assert parse_scores(raw).scores == (6.0, 9.0)


def test_scores_last_lines_win_over_earlier_mentions() -> None:
    raw = "Assistant 1: 3 would be too harsh.\nScore of the Assistant 1: 9\nScore of the Assistant 2: 2"
    assert parse_scores(raw).scores == (9.0, 2.0)


@pytest.mark.parametrize("raw", ["", "No scores here.\nNone at all.", "Score of the Assistant 1: 8\nNothing else",
                                 "Score of the Assistant 1: 80\nScore of the Assistant 2: 90"])
def test_scores_invalid(raw: str) -> None:
    parsed = parse_scores(raw)
    assert not parsed.ok and parsed.scores is None


@pytest.mark.parametrize("raw", ["Score of the Assistant 1: 10\nScore of the Assistant 2: 0",
                                 "Score of the Assistant 1: 0.5\nScore of the Assistant 2: 3"])
def test_a_score_below_the_scale_is_invalid_so_p_a_stays_a_probability(raw: str) -> None:
    """(10, 0) would give p_a = 0.5 + 10/18 > 1 and certainty 10/9 (SPEC 3.2)."""
    parsed = parse_scores(raw)
    assert not parsed.ok and "outside 1-10" in (parsed.error or "")
    assert not parse_fastchat_scores(raw.replace("Score of the ", "")).ok
    assert not parse_fastchat_scores("0 10").ok and parse_fastchat_scores("1 10").scores == (1.0, 10.0)


def test_fastchat_scores() -> None:
    assert parse_fastchat_scores("9 8.5\nBoth assistants...").scores == (9.0, 8.5)
    assert parse_fastchat_scores("8, 6\ntext").scores == (8.0, 6.0)
    assert parse_fastchat_scores("Review.\nAssistant 1: 7\nAssistant 2: 8").scores == (7.0, 8.0)
    assert not parse_fastchat_scores("no numbers").ok
