"""Two judges (or two profiles of one judge) side by side: `pjudge report A.jsonl --compare B.jsonl`.

Two views, because they answer different questions:
- `differences`: each report's headline statistics and b - a. The two files may hold different
  items, so these compare the judges as each was run.
- `paired`: only the items both files judged (same id), so a difference in accuracy there is a
  difference between the judges and not between item sets; McNemar's exact test says whether the
  items one judge got right and the other wrong lean one way more than chance would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

from calibration.table import ratio
from judge.records import Verdict

# (key in `differences`, path into a report). Counts come first so a reader sees the sizes.
COMPARED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("items", ("counts", "items")),
    ("labelled", ("counts", "labelled")),
    ("decided", ("counts", "decided")),
    ("accuracy", ("accuracy",)),
    ("accuracy_no_tie", ("accuracy_no_tie",)),
    ("cohen_kappa", ("cohen_kappa", "value")),
    ("krippendorff_alpha", ("krippendorff_alpha", "value")),
    ("high_certainty_n", ("high_certainty", "n")),
    ("high_certainty_accuracy", ("high_certainty", "accuracy")),
    ("low_certainty_accuracy", ("low_certainty", "accuracy")),
    ("coverage_auc", ("coverage_auc",)),
    ("ece", ("ece",)),
    ("brier", ("brier",)),
    ("position_consistency", ("position_consistency",)),
    ("first_position_rate", ("first_position_rate",)),
    ("prefers_longer", ("prefers_longer",)),
    ("hitl_accuracy", ("hitl", "accuracy")),
    ("hitl_cohen_kappa", ("hitl", "cohen_kappa", "value")),
    ("risk_control_threshold", ("risk_control", "threshold")),
    ("risk_control_coverage", ("risk_control", "coverage")),
    ("risk_control_accuracy", ("risk_control", "accuracy")),
)

# Statistics where a smaller value is the better one; the Markdown and HTML say so next to them.
LOWER_IS_BETTER = frozenset({"ece", "brier"})


@dataclass(frozen=True)
class Side:
    """One of the two compared verdict files and its report."""

    name: str
    path: str
    verdicts: Sequence[Verdict]
    report: dict[str, Any]


def lookup(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    """report[path[0]][path[1]]..., or None where any step is missing or null."""
    value: Any = report
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _difference(a: object, b: object) -> float | int | None:
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return b - a
    return None


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{statistic: {"a", "b", "difference" (b - a, null where either is null)}} over COMPARED,
    leaving out statistics neither report has (e.g. risk_control when not asked for)."""
    out: dict[str, dict[str, Any]] = {}
    for name, path in COMPARED:
        va, vb = lookup(a, path), lookup(b, path)
        if va is None and vb is None and path[0] not in a and path[0] not in b:
            continue
        out[name] = {"a": va, "b": vb, "difference": _difference(va, vb)}
    return out


def _unique_by_id(verdicts: Sequence[Verdict]) -> dict[str, Verdict]:
    # Imports of several runs repeat ids; such an id cannot be paired unambiguously, so it is skipped.
    seen = Counter(v.id for v in verdicts)
    return {v.id: v for v in verdicts if seen[v.id] == 1}


def mcnemar_exact(only_a: int, only_b: int) -> float | None:
    """Two-sided exact McNemar p-value (binomial test of the discordant pairs); None without any."""
    discordant = only_a + only_b
    if discordant == 0:
        return None
    return float(binomtest(only_a, discordant, 0.5).pvalue)


def paired(a: Sequence[Verdict], b: Sequence[Verdict]) -> dict[str, Any]:
    """The two judges on the items both judged: ids present once in each file (`duplicate_ids` counts
    ids repeated within a file, which are not paired).

    `same_winner`: share of shared items where the winners are equal (null winners included).
    Agreement with humans counts items labelled in both files with the same label (`label_conflicts`
    counts those whose labels differ, left out); correct = winner equals label, as SPEC 4 `accuracy`.
    """
    left, right = _unique_by_id(a), _unique_by_id(b)
    ids_a, ids_b = {v.id for v in a}, {v.id for v in b}
    shared = [item_id for item_id in left if item_id in right]
    same = sum(left[i].winner == right[i].winner for i in shared)
    cells: Counter[tuple[bool, bool]] = Counter()
    conflicts = 0
    for item_id in shared:
        va, vb = left[item_id], right[item_id]
        if va.human_label is None or vb.human_label is None:
            continue
        if va.human_label != vb.human_label:
            conflicts += 1
            continue
        cells[(va.winner == va.human_label, vb.winner == vb.human_label)] += 1
    labelled = sum(cells.values())
    only_a, only_b = cells[(True, False)], cells[(False, True)]
    acc_a = ratio(cells[(True, True)] + only_a, labelled)
    acc_b = ratio(cells[(True, True)] + only_b, labelled)
    return {
        "shared": len(shared),
        "only_in_a": len(ids_a - ids_b),
        "only_in_b": len(ids_b - ids_a),
        "duplicate_ids": len((ids_a - left.keys()) | (ids_b - right.keys())),
        "same_winner": ratio(same, len(shared)),
        "labelled": labelled,
        "label_conflicts": conflicts,
        "both_correct": cells[(True, True)],
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "neither_correct": cells[(False, False)],
        "accuracy_a": acc_a,
        "accuracy_b": acc_b,
        "difference": None if acc_a is None or acc_b is None else acc_b - acc_a,
        "mcnemar_p": mcnemar_exact(only_a, only_b),
    }


def _describe(side: Side) -> dict[str, Any]:
    return {"name": side.name, "path": side.path, "models": side.report.get("models", []), "report": side.report}


def compare(a: Side, b: Side) -> dict[str, Any]:
    """The `--compare` document: both reports whole, their differences, and the paired view."""
    return {
        "a": _describe(a),
        "b": _describe(b),
        "differences": differences(a.report, b.report),
        "paired": paired(a.verdicts, b.verdicts),
    }


def side_names(path_a: str, path_b: str) -> tuple[str, str]:
    """Display names of the two files: their stems, or their full paths when the stems are equal
    (two runs named verdicts.jsonl in different folders must still be told apart)."""
    stem_a, stem_b = Path(path_a).stem, Path(path_b).stem
    return (stem_a, stem_b) if stem_a != stem_b else (path_a, path_b)


# ----------------------------------------------------------------------------- Markdown


def _md_cell(value: object) -> str:
    from calibration.markdown import fmt

    return fmt(value).replace("|", "\\|")


def _signed(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:+d}"
    return f"{value:+.3f}"


def render_compare_markdown(comparison: dict[str, Any], title: str = "persona-judge comparison") -> str:
    """The comparison as Markdown: who is compared, the differences table, the paired view."""
    from calibration.markdown import SIMULATED_WARNING, fmt, table

    a, b = comparison["a"], comparison["b"]
    lines = [f"# {title}", ""]
    if a["report"].get("simulated") or b["report"].get("simulated"):
        lines += [SIMULATED_WARNING, ""]
    for key, side in (("a", a), ("b", b)):
        models = ", ".join(f"`{m}`" for m in side["models"]) or "—"
        lines.append(f"- **{key}**: `{side['name']}` (judge: {models})")
    lines += ["", "## Side by side", ""]
    rows = []
    for name, cell in comparison["differences"].items():
        label = name + (" (lower is better)" if name in LOWER_IS_BETTER else "")
        rows.append([label, _md_cell(cell["a"]), _md_cell(cell["b"]), _signed(cell["difference"])])
    lines += table(["statistic", "a", "b", "b − a"], rows)
    p = comparison["paired"]
    lines += ["## Paired (items judged in both files)", ""]
    rows = [
        ["shared items", fmt(p["shared"])],
        ["only in a / only in b", f"{p['only_in_a']} / {p['only_in_b']}"],
        ["ids repeated within a file (not paired)", fmt(p["duplicate_ids"])],
        ["same winner", fmt(p["same_winner"])],
        ["labelled (same label in both)", fmt(p["labelled"])],
        ["labelled in both, labels differ (left out)", fmt(p["label_conflicts"])],
        ["both correct / only a / only b / neither",
         f"{p['both_correct']} / {p['only_a_correct']} / {p['only_b_correct']} / {p['neither_correct']}"],
        ["accuracy a → b", f"{fmt(p['accuracy_a'])} → {fmt(p['accuracy_b'])} ({_signed(p['difference'])})"],
        ["McNemar exact p", fmt(p["mcnemar_p"], 4)],
    ]
    lines += table(["paired", "value"], rows)
    return "\n".join(lines).rstrip() + "\n"
