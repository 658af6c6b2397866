"""Parsers from a judge's raw text to a choice (+ certainty) or a pair of scores.

Each parser returns a `Parsed` in the labels of the prompt as shown (first/second answer); the
runner un-swaps them into the item's own A/B labels. Parsers are registered by name and a
template names its parser.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from judge.records import Choice

Shown = Literal["first", "second", "tie"]


@dataclass(frozen=True)
class Parsed:
    choice: Shown | None = None
    certainty: float | None = None  # in [0, 1]
    scores: tuple[float, float] | None = None  # (first shown, second shown)
    error: str | None = None
    note: str | None = None  # something repaired, e.g. an out-of-range certainty dropped

    @property
    def ok(self) -> bool:
        return self.error is None


def _fail(message: str) -> Parsed:
    return Parsed(error=message)


_LABELS: dict[str, Shown] = {"A": "first", "1": "first", "B": "second", "2": "second", "C": "tie", "TIE": "tie"}
_BRACKETED = re.compile(r"\[\[\s*([^\[\]\n]{1,40}?)\s*\]\]")
_LABEL_TOKEN = re.compile(
    r"^(?:(?:assistant|response|answer|option|model|output)\s*)?\(?([ABC]|1|2|tie)\)?\.?$", re.IGNORECASE
)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_DECISION = re.compile(
    r"(?:final\s+(?:answer|verdict|choice)|choice|answer|verdict|winner|prefer(?:red|s)?(?:\s+response)?|"
    r"selection|i\s+(?:choose|select|pick))\s*(?:is|would\s+be|:|=|-)?\s*[:\-]?\s*"
    r"(?:assistant|response|answer|option)?\s*\(?\[?([ABC])\b",
    re.IGNORECASE,
)
_LABEL_IS_BETTER = re.compile(
    r"\b(?:assistant|response|answer|option)\s+\(?([AB])\)?\s+(?:is|was|would\s+be|seems)\s+(?:clearly\s+|slightly\s+|much\s+)?"
    r"(?:the\s+)?(?:better|more\s+suitable|more\s+appropriate|preferred|preferable|superior)",
    re.IGNORECASE,
)
_LONE_LABEL_LINE = re.compile(r"^\s*\(?\[?(?:assistant|response|answer)?\s*([ABC])\]?\)?\s*[.:]?\s*$", re.IGNORECASE)
_CERTAINTY_PHRASE = re.compile(
    r"(?:certainty|confidence)(?:\s+level)?(?:\s+score)?\s*(?:is|of|:|=|-)?\s*:?\s*\[*\s*([+-]?\d+(?:\.\d+)?)",
    re.IGNORECASE,
)
_CONTINUED = re.compile(r"^\s*([ABC])\s*\]\]")
_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


def _strip_markup(text: str) -> str:
    # Bold/italic markers and code fences around the answer are decoration, not content.
    return text.replace("**", "").replace("__", "").replace("`", "")


def certainty_from_number(value: float) -> tuple[float | None, str | None]:
    """Map a verbal certainty on the 1-100 scale to [0, 1]; out of range gives None and a note."""
    if not math.isfinite(value):
        return None, f"certainty {value} is not a number"
    if 0 <= value <= 100:
        return round(value / 100.0, 9), None
    return None, f"certainty {value:g} is outside 1-100 and was ignored"


def _label_of(token: str) -> Shown | None:
    match = _LABEL_TOKEN.match(token.strip())
    if not match:
        return None
    return _LABELS.get(match.group(1).upper())


def _from_json(text: str) -> tuple[Shown | None, float | None, str | None] | None:
    for candidate in _JSON_OBJECT.findall(text):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        lowered = {str(k).lower(): v for k, v in data.items()}
        raw_choice = next((lowered[k] for k in ("choice", "winner", "answer", "preference", "verdict")
                           if k in lowered), None)
        if raw_choice is None:
            continue
        choice = _label_of(str(raw_choice))
        if choice is None:
            continue
        certainty, note = None, None
        raw_cert = next((lowered[k] for k in ("certainty", "confidence") if k in lowered), None)
        if raw_cert is not None:
            try:
                certainty, note = certainty_from_number(float(raw_cert))
            except (TypeError, ValueError):
                note = f"certainty {raw_cert!r} is not a number"
        return choice, certainty, note
    return None


def _parse_choice(text: str, allow_tie: bool, want_certainty: bool) -> Parsed:
    if not text or not text.strip():
        return _fail("empty answer")
    clean = _strip_markup(text)
    choice: Shown | None = None
    certainty: float | None = None
    note: str | None = None
    choice_end = 0

    tokens = list(_BRACKETED.finditer(clean))
    continued = _CONTINUED.match(clean)
    if continued:  # the answer continues a prompt that ended in "[[" (Dong et al.'s completion style)
        choice, choice_end = _LABELS[continued.group(1).upper()], continued.end()
    for token in ([] if choice else tokens):
        label = _label_of(token.group(1))
        if label is not None and not token.group(1).strip().isdigit():
            choice, choice_end = label, token.end()
            break
    if choice is None:
        from_json = _from_json(clean)
        if from_json is not None:
            choice, certainty, note = from_json
            choice_end = len(clean)
    if choice is None:
        decisions = list(_DECISION.finditer(clean))
        if decisions:
            choice, choice_end = _LABELS[decisions[-1].group(1).upper()], decisions[-1].end()
    if choice is None:
        better = {m.group(1).upper() for m in _LABEL_IS_BETTER.finditer(clean)}
        if len(better) == 1:
            choice, choice_end = _LABELS[better.pop()], 0
    if choice is None:
        for line_match in re.finditer(r"[^\n]+", clean):
            lone = _LONE_LABEL_LINE.match(line_match.group(0))
            if lone:
                choice, choice_end = _LABELS[lone.group(1).upper()], line_match.end()
                break
    if choice is None:
        return _fail("no choice found (expected [[A]] or [[B]])")
    if choice == "tie" and not allow_tie:
        return _fail("a tie ([[C]]) is not an allowed answer for this template")

    if want_certainty and certainty is None and note is None:
        numbers = [t for t in tokens if _NUMBER.match(t.group(1).strip())]
        after = [t for t in numbers if t.start() >= choice_end] or numbers
        if after:
            certainty, note = certainty_from_number(float(after[0].group(1)))
        else:
            phrase = _CERTAINTY_PHRASE.search(clean)
            if phrase:
                certainty, note = certainty_from_number(float(phrase.group(1)))
    if not want_certainty:
        certainty, note = None, None
    return Parsed(choice=choice, certainty=certainty, note=note)


def parse_choice_certainty(text: str) -> Parsed:
    """Dong et al. 2024 format: `[[A]]` or `[[B]]`, then a certainty `[[X]]` on 1-100."""
    return _parse_choice(text, allow_tie=True, want_certainty=True)


def parse_choice_tie(text: str) -> Parsed:
    """`[[A]]`, `[[B]]` or `[[C]]` (tie); no certainty."""
    return _parse_choice(text, allow_tie=True, want_certainty=False)


_SCORE_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")
_LABELLED_SCORE = re.compile(
    r"(?:score\s+(?:of|for)\s+)?(?:the\s+)?assistant\s*([12])\s*(?:'s\s+score)?\s*[:：=][ \t]*([+-]?\d+(?:\.\d+)?)",
    re.IGNORECASE,
)


def _valid_scores(first: float, second: float) -> Parsed:
    # FairEval's and FastChat's prompts ask for "a scale of 1 to 10"; a 0 would also put p_a = 0.5 + (CS_A - CS_B)/18
    # and the certainty |CS_A - CS_B|/9 (SPEC 3.2) outside [0, 1].
    for value in (first, second):
        if not (math.isfinite(value) and 1 <= value <= 10):
            return _fail(f"score {value:g} is outside 1-10")
    return Parsed(scores=(first, second))


def parse_scores(text: str) -> Parsed:
    """Wang et al. 2023 (SPEC 3.2): the number after the last ':' of each of the last two
    non-blank lines; otherwise the labelled `Assistant 1: x` / `Assistant 2: y` lines."""
    if not text or not text.strip():
        return _fail("empty answer")
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) >= 2:
        tail = [line.split(":")[-1].strip() for line in lines[-2:]]
        if all(_SCORE_NUMBER.match(value) for value in tail):
            return _valid_scores(float(tail[0]), float(tail[1]))
    found: dict[str, float] = {}
    for match in _LABELLED_SCORE.finditer(_strip_markup(text)):
        found[match.group(1)] = float(match.group(2))  # the last mention of each wins
    if "1" in found and "2" in found:
        return _valid_scores(found["1"], found["2"])
    return _fail("no scores found (expected 'Score of the Assistant 1: <s>' and '... 2: <s>' lines)")


def parse_fastchat_scores(text: str) -> Parsed:
    """FastChat's vanilla review: two scores on the first line ("9 8.5"), else labelled lines."""
    if not text or not text.strip():
        return _fail("empty answer")
    first_line = text.strip().split("\n")[0].replace(",", " ")
    parts = first_line.split()
    if len(parts) == 2 and all(_SCORE_NUMBER.match(p) for p in parts):
        return _valid_scores(float(parts[0]), float(parts[1]))
    found: dict[str, float] = {}
    for match in _LABELLED_SCORE.finditer(_strip_markup(text)):
        found.setdefault(match.group(1), float(match.group(2)))
    if "1" in found and "2" in found:
        return _valid_scores(found["1"], found["2"])
    return _fail("no scores found on the first line or in 'Assistant 1: x' lines")


def to_item_labels(parsed: Parsed, order: str | None) -> tuple[Choice | None, list[float] | None]:
    """A parsed answer, given in shown positions, in the item's own A/B labels: order "AB" shows A
    first, "BA" shows B first; no order (a recorded call without one) reads as "AB"."""
    first: Choice
    second: Choice
    first, second = ("B", "A") if order == "BA" else ("A", "B")
    labels: dict[str, Choice] = {"first": first, "second": second, "tie": "tie"}
    choice = labels.get(parsed.choice or "")
    scores = None
    if parsed.scores is not None:
        scores = [parsed.scores[1], parsed.scores[0]] if order == "BA" else list(parsed.scores)
    return choice, scores


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "choice-certainty": parse_choice_certainty,
    "choice-tie": parse_choice_tie,
    "scores": parse_scores,
    "fastchat-scores": parse_fastchat_scores,
}


def get_parser(name: str) -> Callable[[str], Parsed]:
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown parser '{name}' (known: {', '.join(PARSERS)})") from None
