"""Judge prompt templates: data files (TOML), looked up by name or path.

A template is found, in order, as a path to a `.toml` file, in the folders listed in
`PJUDGE_TEMPLATES` (os.pathsep-separated), in the user's template folder
(`<user data dir>/templates`), then among the built-ins shipped in `judge/templates/`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from judge.paths import user_data_dir
from judge.records import Order, PairItem
from judge.settings import settings

BUILTIN_DIR = Path(__file__).parent / "templates"
PARSERS = ("choice-certainty", "choice-tie", "scores")
_PLACEHOLDER = re.compile(r"\{(persona_block|persona|question|answer_1|answer_2|[a-z_]+)\}")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    name: str
    version: str
    parser: str
    user: str
    system: str = ""
    persona_block: str = "\n[User Profile]\n{persona}\n"
    persona_extras: dict[str, str] = field(default_factory=dict)
    first_label: str = "A"
    second_label: str = "B"
    fingerprint: str = ""

    @property
    def key(self) -> str:
        """Identifies this exact template text (part of every cache key)."""
        return f"{self.name}@{self.version}#{self.fingerprint}"

    def render(self, item: PairItem, order: Order) -> list[dict[str, str]]:
        """Chat messages for one order: AB shows response A first, BA shows response B first."""
        return self.render_with_prefix(item, order)[0]

    def render_with_prefix(self, item: PairItem, order: Order) -> tuple[list[dict[str, str]], int]:
        """The messages and the length in characters of the user message's shared prefix: its text
        before the first of {question}, {answer_1}, {answer_2}, the same in both orders and for
        every item with the same persona (the rubric and the persona where the template puts them
        first). The provider marks it, with the system prompt before it, for its prompt cache."""
        first, second = (item.response_a, item.response_b) if order == "AB" else (item.response_b, item.response_a)
        persona = render_persona(item.persona)
        values: dict[str, str] = {"question": item.prompt, "answer_1": first, "answer_2": second, "persona": persona}
        if persona:
            values["persona_block"] = _substitute(self.persona_block, values)
            values.update(self.persona_extras)
        else:
            values["persona_block"] = ""
            values.update({key: "" for key in self.persona_extras})
        messages = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        split = self.prefix_end
        head = _substitute(self.user[:split], values)
        messages.append({"role": "user", "content": head + _substitute(self.user[split:], values)})
        return messages, len(head)

    @property
    def prefix_end(self) -> int:
        """Where the item's own text starts in `user`: the first item placeholder."""
        return min(self.user.index(p) for p in ("{question}", "{answer_1}", "{answer_2}"))


def _substitute(text: str, values: dict[str, str]) -> str:
    # One pass, so a response that itself contains "{answer_2}" is never expanded.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def render_persona(persona: str | dict[str, Any] | None) -> str:
    """A persona string is used as is; attributes become one sentence each, in the given order."""
    if persona is None:
        return ""
    if isinstance(persona, str):
        return persona.strip()
    sentences = []
    for key, value in persona.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        attribute = str(key).replace("_", " ").strip()
        sentences.append(f"The person's {attribute} is {value}.")
    return " ".join(sentences)


def load_template_file(path: str | Path) -> Template:
    path = Path(path)
    try:
        content = path.read_bytes()
        data = tomllib.loads(content.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"template {path}: {exc}") from exc
    for required in ("name", "parser", "user"):
        if not isinstance(data.get(required), str) or not data[required]:
            raise TemplateError(f"template {path}: field '{required}' is required")
    if data["parser"] not in PARSERS:
        raise TemplateError(f"template {path}: field 'parser' must be one of {', '.join(PARSERS)}")
    for placeholder in ("{question}", "{answer_1}", "{answer_2}"):
        if placeholder not in data["user"]:
            raise TemplateError(f"template {path}: field 'user' must contain {placeholder}")
    known = {"name", "version", "parser", "user", "system", "persona_block", "persona_extras",
             "first_label", "second_label"}
    unknown = set(data) - known
    if unknown:
        raise TemplateError(f"template {path}: unknown field(s) {', '.join(sorted(unknown))}")
    return Template(
        name=data["name"],
        version=str(data.get("version", "1")),
        parser=data["parser"],
        user=data["user"],
        system=data.get("system", ""),
        persona_block=data.get("persona_block", Template.persona_block),
        persona_extras={str(k): str(v) for k, v in data.get("persona_extras", {}).items()},
        first_label=str(data.get("first_label", "A")),
        second_label=str(data.get("second_label", "B")),
        fingerprint=hashlib.sha256(content).hexdigest()[:16],
    )


def template_dirs() -> list[Path]:
    dirs = [Path(p) for p in settings().templates.split(os.pathsep) if p]
    dirs.append(user_data_dir() / "templates")
    dirs.append(BUILTIN_DIR)
    return dirs


def available_templates() -> list[str]:
    names: set[str] = set()
    for folder in template_dirs():
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.toml"))
    return sorted(names)


def get_template(name_or_path: str) -> Template:
    return _get_template(name_or_path, tuple(str(d) for d in template_dirs()))


@lru_cache(maxsize=64)
def _get_template(name_or_path: str, dirs: tuple[str, ...]) -> Template:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        return load_template_file(candidate)
    for folder in dirs:
        path = Path(folder) / f"{name_or_path}.toml"
        if path.is_file():
            return load_template_file(path)
    raise TemplateError(
        f"unknown template '{name_or_path}' (available: {', '.join(available_templates())}; "
        "or give a path to a .toml file)"
    )
