"""`pjudge report`: the statistics of SPEC section 4 for a verdicts file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from judge.jsonl import InputError, InputProblem, iter_json_lines, read_verdicts, write_text_atomic
from judge.records import Verdict
from pjudge.common import FloatRange, handle_errors, probe_output, refuse_overwriting_inputs, same_file

if TYPE_CHECKING:  # imported at run time only when the verb needs them (numpy, matplotlib)
    from judge.profiles import JudgeProfile

# Resamples of the 95% intervals: enough for any precision wanted, and memory that numpy can give.
MAX_BOOTSTRAP = 100_000

LABELS = ("A", "B", "tie")


def read_labels(path: Path) -> dict[str, str]:
    """{id: human_label} from a JSONL file of {id, human_label}.

    Other fields are ignored, so an items file (SPEC 1.1) works as a labels file too; a row whose
    human_label is absent or null labels nothing. A duplicate id or a label other than A/B/tie is bad
    input, as is a file without any label.
    """
    source = str(path)
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    problems: list[InputProblem] = []
    for line, row in iter_json_lines(path):
        if not isinstance(row, dict):
            problems.append(InputProblem(line, None, "expected a JSON object"))
            continue
        item_id = row.get("id")
        if not isinstance(item_id, str) or not item_id:
            problems.append(InputProblem(line, "id", "required, a non-empty string"))
            continue
        if item_id in first_line:
            problems.append(InputProblem(line, "id", f"duplicate id '{item_id}' (first on line {first_line[item_id]})"))
            continue
        first_line[item_id] = line
        label = row.get("human_label")
        if label is None:
            continue
        if label not in LABELS:
            problems.append(InputProblem(line, "human_label", f"must be one of A, B, tie, not {label!r}"))
            continue
        labels[item_id] = label
    if problems:
        raise InputError(source, problems)
    if not labels:
        raise InputError(source, [InputProblem(None, "human_label", "no human labels in file")])
    return labels


def join_labels(verdicts: list[Verdict], labels: dict[str, str]) -> tuple[list[Verdict], int]:
    """Verdicts with their label replaced where the labels name their id; also how many labels
    matched no verdict."""
    ids = {v.id for v in verdicts}
    unmatched = sum(1 for item_id in labels if item_id not in ids)
    joined = [
        v.model_copy(update={"human_label": labels[v.id]}) if v.id in labels else v for v in verdicts
    ]
    return joined, unmatched


def load_verdicts(path: Path, labels_path: Path | None) -> list[Verdict]:
    verdicts = read_verdicts(path)
    if not verdicts:
        raise InputError(str(path), [InputProblem(None, None, "no verdicts in file")])
    if labels_path is not None:
        verdicts, unmatched = join_labels(verdicts, read_labels(labels_path))
        if unmatched:
            click.echo(f"warning: {unmatched} label(s) in {labels_path} match no verdict id", err=True)
    return verdicts


def _write(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    write_text_atomic(output, text if text.endswith("\n") else text + "\n")
    click.echo(f"wrote {output}", err=True)


# ----------------------------------------------------------------------------- --save-profile


def certainty_threshold_for(confidence: float) -> float:
    """A risk-control threshold on confidence as a profile's `certainty_threshold`.

    Risk control (SPEC 4) thresholds the confidence max(p_a, 1 - p_a); a verdict's certainty (SPEC 1.2,
    what `certainty_threshold` is compared with) is |2 p_a - 1| = 2 confidence - 1. So confidence >= lambda
    exactly when certainty >= 2 lambda - 1. Both sides are compared after rounding to 9 decimals (SPEC
    3.1), which is why lambda is rounded first, as calibration.risk does; a lambda at or below 0.5 keeps
    everything, i.e. certainty threshold 0.
    """
    return max(0.0, round(2.0 * round(confidence, 9) - 1.0, 9))


def _toml_string(text: str) -> str:
    # TOML basic string: escape the quote, the backslash and every control character (DEL included).
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    raise TypeError(f"cannot write {type(value).__name__} to a profile")


def profile_toml(fields: dict[str, Any], comment: str) -> str:
    """A profile as TOML: top-level keys first, then one [table] per nested object (the price)."""
    # TOML comments may not hold control characters; a file name could.
    printable = ["".join(c if c.isprintable() else "?" for c in line) for line in comment.splitlines()]
    lines = [f"# {line}" if line else "#" for line in printable]
    tables = {k: v for k, v in fields.items() if isinstance(v, dict)}
    lines += [f"{key} = {_toml_value(v)}" for key, v in fields.items() if key not in tables and v is not None]
    for key, table in tables.items():
        lines += ["", f"[{key}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def base_profile(name: str | None, verdicts: list[Verdict]) -> JudgeProfile:
    """The profile the calibrated threshold is added to: --profile, else the one the verdicts name."""
    from judge.profiles import ProfileError, load_profile

    if name is None:
        names = {v.judge.profile for v in verdicts}
        if len(names) != 1:
            raise click.UsageError("--save-profile needs --profile NAME|FILE: the verdicts name several profiles")
        name = names.pop()
        try:
            return load_profile(name)
        except ProfileError:
            raise click.UsageError(
                f"--save-profile needs --profile NAME|FILE: the verdicts' profile '{name}' is not a known profile"
            ) from None
    return load_profile(name)


def save_profile(path: Path, profile_name: str | None, verdicts: list[Verdict], report: dict[str, Any],
                 source: Path) -> float:
    """Write the base profile with the risk-controlled `certainty_threshold` as TOML; return it."""
    from judge.profiles import load_profile

    rc = report["risk_control"]
    if rc["threshold"] is None:
        raise click.ClickException(
            f"no threshold guarantees accuracy {rc['target']} at delta {rc['delta']} "
            f"({rc.get('reason', 'the bound fails')}); profile not written"
        )
    base = base_profile(profile_name, verdicts)
    threshold = certainty_threshold_for(rc["threshold"])
    fields = base.model_dump(mode="json", exclude_none=True)
    fields.update(name=path.stem, certainty_threshold=threshold)
    comment = (
        f"Profile {base.name} with a risk-controlled certainty_threshold, written by `pjudge report`.\n"
        f"Calibrated on {source.name}: accuracy >= {rc['target']} with probability >= {1 - rc['delta']:.6g}\n"
        f"(fixed-sequence testing, Clopper-Pearson; SPEC section 4 risk_control): confidence\n"
        f"max(p_a, 1 - p_a) >= {rc['threshold']!r}, i.e. certainty |2 p_a - 1| >= {threshold!r}.\n"
        f"On the calibration file: {rc['accepted']} accepted, {rc['errors']} errors, coverage "
        f"{rc['coverage']:.4f}. Use with: pjudge judge ITEMS.jsonl --profile {path}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and read back before it replaces anything: a profile that does not
    # load as itself must never reach `pjudge judge`.
    partial = path.with_name(f".{path.stem}.partial.toml")
    text = profile_toml(fields, comment)
    try:
        partial.write_text(text, encoding="utf-8")
        if load_profile(str(partial)).certainty_threshold != threshold:
            raise click.ClickException(f"{path}: certainty_threshold did not survive a round trip")
    finally:
        partial.unlink(missing_ok=True)
    write_text_atomic(path, text)
    models = {v.judge.model for v in verdicts}
    if models != {base.model}:
        click.echo(f"warning: the threshold was calibrated on verdicts of {', '.join(sorted(models))}; "
                   f"the profile judges with {base.model}", err=True)
    click.echo(f"wrote {path}: certainty_threshold = {threshold!r} (confidence >= {rc['threshold']!r})", err=True)
    return threshold


def _render(fmt: str, report: dict[str, Any], verdicts: list[Verdict], path: Path,
            other: tuple[Path, list[Verdict], dict[str, Any]] | None) -> str:
    """The document of one format; with `other`, the two files side by side."""
    if other is None:
        if fmt == "md":
            from calibration.markdown import render_markdown

            return render_markdown(report)
        if fmt == "html":
            from calibration.html import render_html

            return render_html(report, verdicts, name=path.stem)
        return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)
    from calibration.compare import Side, compare, render_compare_markdown, side_names

    other_path, other_verdicts, other_report = other
    name_a, name_b = side_names(str(path), str(other_path))
    side_a = Side(name_a, str(path), verdicts, report)
    side_b = Side(name_b, str(other_path), other_verdicts, other_report)
    if fmt == "html":
        from calibration.html import render_html

        return render_html(report, verdicts, title="persona-judge comparison", name=name_a, other=side_b)
    comparison = compare(side_a, side_b)
    if fmt == "md":
        return render_compare_markdown(comparison)
    return json.dumps(comparison, indent=2, ensure_ascii=False, allow_nan=False)


@click.command("report")
@click.argument("verdicts_path", metavar="VERDICTS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "md", "html"]),
    default="json",
    show_default=True,
    help="json: one JSON document (SPEC 4 keys); md: Markdown tables; html: one self-contained page "
    "with plots (write it with -o).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@click.option(
    "--threshold",
    type=FloatRange(0, 1),
    default=0.8,
    show_default=True,
    help="Certainty split for high_certainty / low_certainty (inclusive on the high side).",
)
@click.option(
    "--hitl",
    "hitl",
    type=FloatRange(0, 1),
    default=0.2,
    show_default=True,
    help="Share of labelled items sent to humans by highest BPDE.",
)
@click.option("--group-by", metavar="KEY", help="Also report every statistic per value of metadata KEY.")
@click.option(
    "--target-accuracy",
    type=FloatRange(0, 1, min_open=True, max_open=True),
    help="Add risk_control: the confidence threshold guaranteeing this accuracy.",
)
@click.option(
    "--delta",
    type=FloatRange(0, 1, min_open=True, max_open=True),
    help="Risk level for --target-accuracy (guarantee holds with probability 1 - delta). [default: 0.1]",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL of {id, human_label} joined onto the verdicts (overrides their labels; with --compare, "
    "onto both files).",
)
@click.option(
    "--compare",
    "compare_path",
    metavar="OTHER.jsonl",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A second verdicts file (another judge or profile) shown side by side, with the differences "
    "and a paired comparison on the items both judged.",
)
@click.option(
    "--save-profile",
    "save_profile_path",
    metavar="PATH.toml",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --target-accuracy: write a profile whose certainty_threshold is the risk-controlled "
    "threshold (certainty = 2 x confidence - 1), for `pjudge judge --profile PATH.toml`; saved in a "
    "PJUDGE_PROFILES folder it is found by name, by the CLI and the service alike.",
)
@click.option(
    "--profile",
    "profile_name",
    metavar="NAME|FILE",
    help="Base profile for --save-profile [default: the profile named in the verdicts].",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0, MAX_BOOTSTRAP),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the bootstrap.")
@handle_errors
def report_command(
    verdicts_path: Path,
    fmt: str,
    output: Path | None,
    threshold: float,
    hitl: float,
    group_by: str | None,
    target_accuracy: float | None,
    delta: float | None,
    labels_path: Path | None,
    compare_path: Path | None,
    save_profile_path: Path | None,
    profile_name: str | None,
    bootstrap: int,
    seed: int,
) -> None:
    """Agreement, calibration and bias statistics of VERDICTS.jsonl (SPEC section 4)."""
    if delta is not None and target_accuracy is None:
        raise click.UsageError("--delta needs --target-accuracy")
    if save_profile_path is not None:
        if target_accuracy is None:
            raise click.UsageError("--save-profile needs --target-accuracy")
        if save_profile_path.suffix != ".toml":
            raise click.UsageError("--save-profile writes TOML: give a path ending in .toml")
    elif profile_name is not None:
        raise click.UsageError("--profile is the base of --save-profile and needs it")
    refuse_overwriting_inputs({"-o": output, "--save-profile": save_profile_path},
                              [verdicts_path, compare_path, labels_path, profile_name])
    if output is not None and save_profile_path is not None and same_file(output, save_profile_path):
        raise click.BadParameter("the same file as --save-profile", param_hint="'-o'")
    from calibration.report import build_report  # numpy/scipy only when the verb runs

    def report_of(path: Path) -> tuple[list[Verdict], dict[str, Any]]:
        verdicts = load_verdicts(path, labels_path)
        report = build_report(
            verdicts,
            threshold=threshold,
            hitl=hitl,
            group_by=group_by,
            target_accuracy=target_accuracy,
            delta=delta,
            bootstrap_resamples=bootstrap,
            seed=seed,
        )
        if report.get("simulated"):
            click.echo(f"warning: {path} comes from a simulated judge (sim- model)", err=True)
        return verdicts, report

    probe_output(output)
    verdicts, report = report_of(verdicts_path)
    other = None
    if compare_path is not None:
        other_verdicts, other_report = report_of(compare_path)
        other = (compare_path, other_verdicts, other_report)
    if save_profile_path is not None:
        save_profile(save_profile_path, profile_name, verdicts, report, verdicts_path)
    text = _render(fmt, report, verdicts, verdicts_path, other)
    if output is None and fmt == "json":
        click.echo(text)
    else:
        _write(text, output)
