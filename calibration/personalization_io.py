"""Reading and validating responses.jsonl for the degree-of-personalization measures (SPEC 1.3).

One line per (prompt, persona, system): {"prompt_id", "persona_id", "system", "response", "reference"}.
`reference` (the persona's own preferred text) is optional; a line whose persona_id is null is the
system's persona-agnostic response to the prompt (the anchor candidate). The file is validated whole
and every problem names its line; one bad line rejects the file (judge.jsonl.InputError, exit code 2).

Two optional fields serve the judge-based persona fit (calibration.persona_fit), which needs what a
judge is shown and SPEC 1.3 lines do not carry: `persona` (the persona's description, a string or an
object of attributes as in SPEC 1.1; the same on every line of that persona_id) and `prompt` (the
prompt's text; the same on every line of that prompt_id). They may also come from side files
({persona_id, persona} and {prompt_id, prompt} lines), merged by `attach_descriptions`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from judge.jsonl import InputError, InputProblem, iter_json_lines
from judge.templates import render_persona

FIELDS = ("prompt_id", "persona_id", "system", "response", "reference", "persona", "prompt")
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


PersonaDescription = str | dict[str, Any]


@dataclass
class ResponseSet:
    source: str
    prompts: list[PromptResponses]
    systems: list[str]  # systems that answer at least one persona, in order of first appearance
    # What a judge is shown (optional: only the judge-based persona fit needs them).
    persona_descriptions: dict[str, PersonaDescription] = field(default_factory=dict)
    prompt_texts: dict[str, str] = field(default_factory=dict)
    persona_lines: dict[str, int | None] = field(default_factory=dict)  # first line naming each persona

    def anchor_systems(self) -> list[str]:
        """Systems with at least one persona-agnostic response."""
        seen: dict[str, None] = {}
        for prompt in self.prompts:
            seen.update(dict.fromkeys(prompt.anchors))
        return list(seen)


def _identifier(value: object) -> str | None:
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
    problems.extend(_check_descriptions(line, row, values))
    reference = row.get("reference")
    values["reference"] = reference
    if reference is not None:
        if not isinstance(reference, str):
            problems.append(InputProblem(line, "reference", f"must be text or null, not {_json_type(reference)}"))
        elif "persona_id" in row and row["persona_id"] is None:
            problems.append(InputProblem(line, "reference",
                                         "a persona-agnostic line (persona_id null) has no reference"))
    return problems, values


def _check_descriptions(line: int | None, row: dict[str, Any], values: dict[str, Any]) -> list[InputProblem]:
    """The optional `persona` (description) and `prompt` (text) fields; fills values, returns problems."""
    problems = []
    persona = values["persona"] = row.get("persona")
    if persona is not None:
        problem = persona_description_problem(persona)
        if problem is not None:
            problems.append(InputProblem(line, "persona", problem))
        elif "persona_id" in row and row["persona_id"] is None:
            problems.append(InputProblem(line, "persona",
                                         "a persona-agnostic line (persona_id null) has no persona description"))
    text = values["prompt"] = row.get("prompt")
    if text is not None and not (isinstance(text, str) and text.strip()):
        problems.append(InputProblem(line, "prompt", f"must be non-empty text or null, not {_describe(text)}"))
    return problems


def persona_description_problem(value: object) -> str | None:
    """Why `value` cannot describe a persona to a judge, or None when it can.

    A string or an object of attributes (SPEC 1.1) that renders to some text: an empty description
    would silently turn a persona-conditioned judgment into the no-persona baseline.
    """
    if not isinstance(value, str | dict):
        return f"must be a string or an object of attributes, not {_json_type(value)}"
    if not render_persona(value):
        return "must not be empty (omit the field, or use null, when there is no description)"
    return None


def _describe(value: object) -> str:
    return "an empty string" if isinstance(value, str) else _json_type(value)


def _same_json(first: object, second: object) -> bool:
    """Identical as written: key order matters, since attributes render in the order given."""
    return json.dumps(first, ensure_ascii=False) == json.dumps(second, ensure_ascii=False)


class _Descriptions:
    """Collects persona descriptions and prompt texts, each required to be the same on every line."""

    def __init__(self) -> None:
        self.personas: dict[str, PersonaDescription] = {}
        self.persona_from: dict[str, int | None] = {}
        self.prompts: dict[str, str] = {}
        self.prompt_from: dict[str, int | None] = {}

    def add_persona(self, line: int | None, persona_id: str, value: Any) -> InputProblem | None:
        if value is None:
            return None
        if persona_id not in self.personas:
            self.personas[persona_id], self.persona_from[persona_id] = value, line
            return None
        if _same_json(self.personas[persona_id], value):
            return None
        return InputProblem(line, "persona", f"persona '{persona_id}': description differs from the one "
                            f"given{_on_line(self.persona_from[persona_id])} (a persona has one description)")

    def add_prompt(self, line: int | None, prompt_id: str, value: Any) -> InputProblem | None:
        if value is None:
            return None
        if prompt_id not in self.prompts:
            self.prompts[prompt_id], self.prompt_from[prompt_id] = value, line
            return None
        if self.prompts[prompt_id] == value:
            return None
        return InputProblem(line, "prompt", f"prompt '{prompt_id}': text differs from the one "
                            f"given{_on_line(self.prompt_from[prompt_id])} (a prompt has one text)")


def _on_line(line: int | None) -> str:
    return f" on line {line}" if line is not None else " earlier"


def _json_type(value: object) -> str:
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
    descriptions = _Descriptions()
    persona_lines: dict[str, int | None] = {}
    for line, row in rows:
        row_problems, values = _check_row(line, row)
        if row_problems:
            problems.extend(row_problems)
            continue
        prompt_id, persona, system = values["prompt_id"], values["persona_id"], values["system"]
        described = [descriptions.add_prompt(line, prompt_id, values["prompt"])]
        if persona is not None:
            persona_lines.setdefault(persona, line)
            described.append(descriptions.add_persona(line, persona, values["persona"]))
        problems.extend(problem for problem in described if problem is not None)
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
    return ResponseSet(source=source, prompts=list(prompts.values()), systems=list(systems),
                       persona_descriptions=descriptions.personas, prompt_texts=descriptions.prompts,
                       persona_lines=persona_lines)


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


# ------------------------------------------------------------------------------ description side files


def _read_side_file(path: str | Path, id_field: str, value_field: str,
                    check: Callable[[Any], str | None]) -> dict[str, tuple[Any, int | None]]:
    """{id: (value, line)} from JSON Lines of {id_field, value_field}; validated whole like the responses."""
    source = str(path)
    found: dict[str, tuple[Any, int | None]] = {}
    problems: list[InputProblem] = []
    for line, row in iter_json_lines(path):
        if not isinstance(row, dict):
            problems.append(InputProblem(line, None, "expected a JSON object"))
            continue
        problems.extend(InputProblem(line, name, "unknown field") for name in row if name not in (id_field, value_field))
        for name in (id_field, value_field):
            if name not in row:
                problems.append(InputProblem(line, name, "required field is missing"))
        key = _identifier(row.get(id_field))
        if id_field in row and key is None:
            problems.append(InputProblem(line, id_field, "must be a non-empty string"))
        problem = check(row[value_field]) if value_field in row else None
        if problem is not None:
            problems.append(InputProblem(line, value_field, problem))
        if key is None or value_field not in row or problem is not None:
            continue
        if key in found:
            problems.append(InputProblem(line, id_field, f"duplicate {id_field} '{key}'{_on_line(found[key][1])}"))
            continue
        found[key] = (row[value_field], line)
    if problems:
        raise InputError(source, problems)
    return found


def _prompt_text_problem(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return None
    return f"must be non-empty text, not {_describe(value)}"


def _merge(inline: dict[str, Any], side: dict[str, tuple[Any, int | None]], kind: str, field_name: str,
           source: str) -> tuple[dict[str, Any], list[InputProblem]]:
    """Side-file values fill what the responses lines leave out; a value given in both must agree."""
    merged = dict(inline)
    problems = []
    for key, (value, line) in side.items():
        if key not in inline:
            merged[key] = value
        elif not _same_json(inline[key], value):
            problems.append(InputProblem(line, field_name, f"{kind} '{key}': differs from the one given in {source}"))
    return merged, problems


def attach_descriptions(responses: ResponseSet, personas_path: str | Path | None = None,
                        prompts_path: str | Path | None = None) -> ResponseSet:
    """The response set with persona descriptions and prompt texts from side files added.

    `personas_path`: JSON Lines of {"persona_id", "persona"}; `prompts_path`: of {"prompt_id", "prompt"}.
    Ids the responses do not use are ignored (one personas file may serve many responses files).
    """
    personas, prompts = responses.persona_descriptions, responses.prompt_texts
    if personas_path is not None:
        side = _read_side_file(personas_path, "persona_id", "persona", persona_description_problem)
        personas, problems = _merge(personas, side, "persona", "persona", responses.source)
        if problems:
            raise InputError(str(personas_path), problems)
    if prompts_path is not None:
        side = _read_side_file(prompts_path, "prompt_id", "prompt", _prompt_text_problem)
        prompts, problems = _merge(prompts, side, "prompt", "prompt", responses.source)
        if problems:
            raise InputError(str(prompts_path), problems)
    return replace(responses, persona_descriptions=personas, prompt_texts=prompts)
