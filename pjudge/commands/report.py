"""`pjudge report`: the statistics of SPEC section 4 for a verdicts file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from judge.jsonl import InputError, InputProblem, iter_json_lines, read_verdicts
from judge.records import Verdict
from pjudge.common import echo_json, handle_errors

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
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


@click.command("report")
@click.argument("verdicts_path", metavar="VERDICTS.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "md", "html"]),
    default="json",
    show_default=True,
    help="json: one JSON document (SPEC 4 keys); md: Markdown tables.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=0.8,
    show_default=True,
    help="Certainty split for high_certainty / low_certainty (inclusive on the high side).",
)
@click.option(
    "--hitl",
    "hitl",
    type=click.FloatRange(0, 1),
    default=0.2,
    show_default=True,
    help="Share of labelled items sent to humans by highest BPDE.",
)
@click.option("--group-by", metavar="KEY", help="Also report every statistic per value of metadata KEY.")
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Add risk_control: the confidence threshold guaranteeing this accuracy.",
)
@click.option(
    "--delta",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Risk level for --target-accuracy (guarantee holds with probability 1 - delta). [default: 0.1]",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL of {id, human_label} joined onto the verdicts (overrides their labels).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the 95% intervals (0: no intervals).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
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
    bootstrap: int,
    seed: int,
) -> None:
    """Agreement, calibration and bias statistics of VERDICTS.jsonl (SPEC section 4)."""
    if fmt == "html":
        raise click.ClickException("--format html is not available yet; use --format json or --format md")
    if delta is not None and target_accuracy is None:
        raise click.UsageError("--delta needs --target-accuracy")
    from calibration.report import build_report  # numpy/scipy only when the verb runs

    verdicts = load_verdicts(verdicts_path, labels_path)
    report: dict[str, Any] = build_report(
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
        click.echo("warning: these verdicts come from a simulated judge (sim- model)", err=True)
    if fmt == "md":
        from calibration.markdown import render_markdown

        _write(render_markdown(report), output)
    elif output is None:
        echo_json(report)
    else:
        _write(json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False), output)
