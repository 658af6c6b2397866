"""The type check's rules that mypy itself does not enforce: every `# type: ignore` names its
error codes and says why on its own line, and every package ships its py.typed marker.
(mypy runs in scripts/typecheck, which scripts/test runs before pytest.)"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "calibration", "judge", "llm_sim", "pjudge", "store", "worker")
IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")
CODES = re.compile(r"\[[a-z][a-z-]*(,\s*[a-z][a-z-]*)*\]")
# The reason: a further comment on the line with some words in it (a lone noqa directive is none).
REASON = re.compile(r"#\s*(?!noqa\b)\S+(\s+\S+){2,}")


def type_ignores_without_a_code_or_a_reason(text: str) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = IGNORE.search(line)
        if match is None:
            continue
        codes, rest = match["codes"], match["rest"]
        if codes is None or not CODES.fullmatch(codes) or not REASON.search(rest):
            found.append((number, line.strip()))
    return found


def test_the_check_tells_a_bare_ignore_from_one_with_a_code_and_a_reason() -> None:
    assert type_ignores_without_a_code_or_a_reason("x = f()  # type: ignore") != []
    assert type_ignores_without_a_code_or_a_reason("x = f()  # type: ignore[arg-type]") != []
    assert type_ignores_without_a_code_or_a_reason("x = f()  # type: ignore[arg-type]  # noqa: B001") != []
    assert type_ignores_without_a_code_or_a_reason("x = f()  # type:ignore  # the SDK's class") != []
    assert type_ignores_without_a_code_or_a_reason(
        "x = f()  # type: ignore[misc, valid-type]  # a base class found at run time") == []


def test_every_type_ignore_in_the_product_names_its_codes_and_a_reason() -> None:
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in type_ignores_without_a_code_or_a_reason(path.read_text())
    ]
    assert offenders == []


def test_every_package_ships_a_py_typed_marker() -> None:
    assert [package for package in PACKAGES if not (REPO / package / "py.typed").is_file()] == []
