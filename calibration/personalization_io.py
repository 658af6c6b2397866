"""Reading and validating responses.jsonl for the degree-of-personalization measures (SPEC 1.3).

One line per (prompt, persona, system): {"prompt_id", "persona_id", "system", "response", "reference"}.
`reference` (the persona's own preferred text) is optional; a line whose persona_id is null is the
system's persona-agnostic response to the prompt (the anchor candidate). The file is validated whole
and every problem names its line; one bad line rejects the file (judge.jsonl.InputError, exit code 2).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from judge.jsonl import InputError, InputProblem, iter_json_lines

FIELDS = ("prompt_id", "persona_id", "system", "response", "reference")
REQUIRED = ("prompt_id", "persona_id", "system", "response")


@dataclass
class PromptResponses:
    """Everything known about one prompt, personas and systems in order of first appearance."""

    prompt_id: str
    first_line: int | None
    personas: list[str] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)  # persona -> reference (when given)
    responses: dict[str, dict[str, str]] = field(default_factory=dict)  # system -> persona -> text
    anchors: dict[str, str] = field(default_factory=dict)  # system -> persona-agnostic text
    # line numbers, so that cross-line problems can name a line
    persona_lines: dict[str, int | None] = field(default_factory=dict)
    anchor_lines: dict[str, int | None] = field(default_factory=dict)
    response_lines: dict[tuple[str, str], int | None] = field(default_factory=dict)  # (system, persona)


@dataclass
class ResponseSet:
    source: str
    prompts: list[PromptResponses]
    systems: list[str]  # systems that answer at least one persona, in order of first appearance

    def anchor_systems(self) -> list[str]:
        """Systems with at least one persona-agnostic response."""
        seen: dict[str, None] = {}
        for prompt in self.prompts:
            seen.update(dict.fromkeys(prompt.anchors))
        return list(seen)


def _identifier(value: Any) -> str | None:
    """Ids may be strings or integers (data sets often number their users); both become strings."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _check_row(line: int | None, row: Any) -> tuple[list[InputProblem], dict[str, Any]]:
    """Field-level checks of one decoded line; returns problems and the normalised fields."""
    if not isinstance(row, dict):
        return [InputProblem(line, None, "expected a JSON object")], {}
    problems: list[InputProblem] = []
    for name in REQUIRED:
        if name not in row:
            hint = " (use null for the persona-agnostic response)" if name == "persona_id" else ""
            problems.append(InputProblem(line, name, f"required field is missing{hint}"))
    for name in row:
        if name not in FIELDS:
            problems.append(InputProblem(line, name, "unknown field"))
    values: dict[str, Any] = {}
    for name in ("prompt_id", "system"):
        if name in row:
            values[name] = _identifier(row[name])
            if values[name] is None:
                problems.append(InputProblem(line, name, "must be a non-empty string"))
    if "persona_id" in row:
        values["persona_id"] = None if row["persona_id"] is None else _identifier(row["persona_id"])
        if row["persona_id"] is not None and values["persona_id"] is None:
            problems.append(InputProblem(line, "persona_id", "must be a non-empty string or null"))
    if "response" in row:
        values["response"] = row["response"]
        if not isinstance(row["response"], str):
            problems.append(InputProblem(line, "response", f"must be text, not {_json_type(row['response'])}"))
    reference = row.get("reference")
    values["reference"] = reference
    if reference is not None:
        if not isinstance(reference, str):
            problems.append(InputProblem(line, "reference", f"must be text or null, not {_json_type(reference)}"))
        elif "persona_id" in row and row["persona_id"] is None:
            problems.append(InputProblem(line, "reference",
                                         "a persona-agnostic line (persona_id null) has no reference"))
    return problems, values


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def validate_responses(rows: Iterable[tuple[int | None, Any]], source: str) -> ResponseSet:
    """Validate decoded lines as SPEC 1.3 responses; all problems are collected, then raised together."""
    problems: list[InputProblem] = []
    prompts: dict[str, PromptResponses] = {}
    systems: dict[str, None] = {}
    for line, row in rows:
        row_problems, values = _check_row(line, row)
        if row_problems:
            problems.extend(row_problems)
            continue
        prompt_id, persona, system = values["prompt_id"], values["persona_id"], values["system"]
        prompt = prompts.get(prompt_id)
        if prompt is None:
            prompt = prompts[prompt_id] = PromptResponses(prompt_id, line)
        if persona is None:
            if system in prompt.anchors:
                problems.append(_duplicate(line, prompt_id, None, system, prompt.anchor_lines[system]))
                continue
            prompt.anchors[system] = values["response"]
            prompt.anchor_lines[system] = line
            continue
        by_persona = prompt.responses.setdefault(system, {})
        if persona in by_persona:
            problems.append(_duplicate(line, prompt_id, persona, system, prompt.response_lines.get((system, persona))))
            continue
        by_persona[persona] = values["response"]
        systems.setdefault(system)
        if persona not in prompt.persona_lines:
            prompt.personas.append(persona)
            prompt.persona_lines[persona] = line
        prompt.response_lines[(system, persona)] = line
        reference = values["reference"]
        if reference is not None:
            known = prompt.references.get(persona)
            if known is None:
                prompt.references[persona] = reference
            elif known != reference:
                problems.append(InputProblem(
                    line, "reference",
                    f"prompt '{prompt_id}', persona '{persona}': reference differs from the one given on an "
                    "earlier line (a persona's reference is the same for every system)"))
    for prompt in prompts.values():
        problems.extend(_missing_systems(prompt))
    if problems:
        raise InputError(source, sorted(problems, key=lambda p: (p.line is None, p.line or 0)))
    return ResponseSet(source=source, prompts=list(prompts.values()), systems=list(systems))


def _duplicate(line: int | None, prompt_id: str, persona: str | None, system: str,
               first: int | None) -> InputProblem:
    who = f"persona '{persona}'" if persona is not None else "the persona-agnostic response"
    where = f" (first seen on line {first})" if first is not None else ""
    return InputProblem(line, "persona_id" if persona is not None else "system",
                        f"duplicate line for prompt '{prompt_id}', {who}, system '{system}'{where}")


def _missing_systems(prompt: PromptResponses) -> list[InputProblem]:
    """Every persona of a prompt needs a response from every system that answers any persona of it:
    otherwise the systems would be compared on different persona sets."""
    problems = []
    for persona in prompt.personas:
        missing = [system for system, answers in prompt.responses.items() if persona not in answers]
        if missing:
            problems.append(InputProblem(
                prompt.persona_lines[persona], "system",
                f"prompt '{prompt.prompt_id}', persona '{persona}': no response from system(s) "
                f"{', '.join(repr(s) for s in missing)} (every persona of a prompt needs a response from "
                "every system that answers the prompt)"))
    return problems


def read_responses(path: str | Path) -> ResponseSet:
    """Read and validate a responses.jsonl file (SPEC 1.3); InputError names file, line and field."""
    responses = validate_responses(iter_json_lines(path), str(path))
    if not responses.systems:
        raise InputError(str(path), [InputProblem(None, None, "no persona responses in file")])
    return responses
