"""`pjudge calibrate STAGE1.jsonl ... STAGEK.jsonl --target-accuracy T`: thresholds for a judge cascade
with a guarantee on the whole cascade (SPEC 4 `cascade`, SPEC 7), a cascade profile (SPEC 2.1) with
`--save-profile`, and with `--plan` the sub-cascades no other beats on both cost and coverage.

The statistics are calibration.cascade's; this module reads the files, checks the options and writes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from judge.jsonl import InputError, InputProblem, read_verdicts, write_text_atomic
from judge.records import Verdict
from pjudge.common import FloatRange, echo_json, handle_errors, refuse_overwriting_inputs

if TYPE_CHECKING:  # numpy and scipy are imported only when the verb runs
    from calibration.cascade import CascadeResult, Stages, StageVerdicts

PRICE_SOURCE, CALLS_SOURCE = "price", "calls"


def read_stage(path: Path) -> StageVerdicts:
    from calibration.cascade import StageVerdicts

    verdicts = read_verdicts(path)
    if not verdicts:
        raise InputError(str(path), [InputProblem(None, None, "no verdicts in file")])
    return StageVerdicts(name=path.stem, source=str(path), verdicts=verdicts)


def read_stages(paths: Sequence[Path]) -> Stages:
    from calibration.cascade import join_stages

    if not paths:
        raise click.UsageError("no verdict files given: pass one STAGE.jsonl per stage, cheapest judge first")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise InputError(str(path), [InputProblem(None, None, f"same stem '{path.stem}' as {seen[path.stem]}: "
                                                                  "stages are named by their file's stem")])
        seen[path.stem] = path
    return join_stages([read_stage(path) for path in paths])


def parse_prices(values: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for value in values:
        name, sep, usd = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"'{value}': expected NAME=USD_PER_ITEM", param_hint="'--price'")
        if name not in names:
            raise click.BadParameter(f"'{name}' is not a stage (stages: {', '.join(names)})", param_hint="'--price'")
        try:
            price = float(usd)
        except ValueError:
            raise click.BadParameter(f"'{value}': the price must be a number of USD per item",
                                     param_hint="'--price'") from None
        if not math.isfinite(price) or price < 0:
            raise click.BadParameter(f"'{value}': the price must be a finite number >= 0", param_hint="'--price'")
        prices[name] = price
    return prices


def stage_costs(stages: Stages, prices: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """Each stage's cost per item: --price where given, else the mean of its verdicts' summed calls'
    cost_usd; a stage with neither is bad input naming its file."""
    costs: dict[str, float] = {}
    sources: dict[str, str] = {}
    for k, (name, source) in enumerate(zip(stages.names, stages.sources, strict=True)):
        if name in prices:
            costs[name], sources[name] = prices[name], PRICE_SOURCE
            continue
        mean = stages.mean_cost(k)
        if mean is None:
            raise InputError(source, [InputProblem(None, "calls[].cost_usd", f"no call has a cost; give --price "
                                                                             f"{name}=USD_PER_ITEM")])
        costs[name], sources[name] = mean, CALLS_SOURCE
    return costs, sources


# ----------------------------------------------------------------------------- --save-profile


def stage_profile(verdicts: Sequence[Verdict], source: str) -> str | dict[str, str]:
    """The `profile` of a stage in a cascade profile (SPEC 2.1): the name the verdicts' judge gives
    when that profile is known here with the same provider and model; if it is known with another
    provider or model, an object naming it as the base with the verdicts' provider and model; if it
    is not known (imported verdicts, a profile from another machine), an object of what the verdicts
    tell: {provider, model}, the other fields being the default profile's (edit them as needed)."""
    from judge.profiles import ProfileError, load_profile

    judges = sorted({(v.judge.profile, v.judge.provider, v.judge.model) for v in verdicts})
    if len(judges) != 1:
        shown = ", ".join(f"{p} ({prov}/{m})" for p, prov, m in judges[:3])
        raise InputError(source, [InputProblem(None, "judge", f"verdicts of several judges ({shown}); a stage of "
                                                              "a saved cascade is one judge")])
    name, provider, model = judges[0]
    try:
        known = load_profile(name)
    except ProfileError:
        return {"provider": provider, "model": model}
    # A cascade's stages run interactively (judge.profiles.BATCH_STAGE): a judge calibrated in batch
    # mode keeps its profile, asked one call at a time.
    interactive = {"mode": "interactive"} if known.mode == "batch" else {}
    if (known.provider, known.model) == (provider, model):
        return {"profile": name, **interactive} if interactive else name
    return {"profile": name, "provider": provider, "model": model, **interactive}


def profile_threshold(threshold: float) -> float:
    """A calibrated confidence threshold as a cascade stage's (SPEC 2.1: in [0.5, 1]). Confidences are
    at least 0.5, so a lower threshold accepts the same verdicts as 0.5; rounding to 9 decimals keeps
    the accepted set, confidences being compared rounded (SPEC 3.1)."""
    return round(max(0.5, threshold), 9)


def _comment(text: str) -> list[str]:
    # TOML comments may not hold control characters; a file name could.
    return [("# " + "".join(c if c.isprintable() else "?" for c in line)).rstrip() for line in text.splitlines()]


def _inline_table(fields: dict[str, str]) -> str:
    from pjudge.commands.report import _toml_value  # the one TOML value writer of pjudge

    return "{ " + ", ".join(f"{key} = {_toml_value(value)}" for key, value in fields.items()) + " }"


def cascade_toml(name: str, stages: Stages, result: CascadeResult, sources: Sequence[str]) -> str:
    """SPEC 2.1 cascade profile: `name`, `then = "human"`, one [[cascade]] table per stage with
    `profile` and `threshold`. TOML has no null: a null threshold is written as no `threshold` key
    (with a comment saying so), which a loader reads as null (the stage accepts nothing)."""
    from pjudge.commands.report import _toml_value

    r = result
    lines = _comment(
        f"Cascade profile written by `pjudge calibrate` (SPEC 2.1; SPEC 4 cascade).\n"
        f"Guarantee on the calibration items: accuracy on accepted items >= {r.target} with probability\n"
        f">= {1 - r.delta:.6g} (each stage at delta/K = {r.delta / len(r.stages):.6g}; fixed-sequence testing,\n"
        f"Clopper-Pearson). Calibrated on {r.items} labelled items: coverage {r.coverage:.4f}, accepted\n"
        f"{r.accepted}, errors {r.errors}, escalated {r.escalated}. Thresholds are on the confidence\n"
        f"max(p_a, 1 - p_a). A [[cascade]] table without `threshold` means threshold null: that stage\n"
        f"accepts nothing."
    )
    lines += ["", f"name = {_toml_value(name)}", 'then = "human"']
    for k, stage in enumerate(r.stages):
        profile = stage_profile(stages.judges[k], sources[k])
        lines += [""] + _comment(f"stage {k + 1}: {stage.name} ({sources[k]}): reached {stage.reached}, accepted "
                                 f"{stage.accepted}, errors {stage.errors}")
        lines += ["[[cascade]]",
                  f"profile = {_toml_value(profile) if isinstance(profile, str) else _inline_table(profile)}"]
        if stage.threshold is None:
            lines += _comment(f"threshold: null ({stage.reason or 'no threshold passed'})")
        else:
            lines.append(f"threshold = {_toml_value(profile_threshold(stage.threshold))}")
    return "\n".join(lines) + "\n"


def check_cascade_toml(text: str, result: CascadeResult) -> None:
    """The written file, read back: every stage and threshold as calibrated, loadable as a cascade."""
    import tomllib

    from judge.profiles import load_judging

    data = tomllib.loads(text)
    written = [table.get("threshold") for table in data["cascade"]]
    expected = [None if s.threshold is None else profile_threshold(s.threshold) for s in result.stages]
    if written != expected or data["then"] != "human":
        raise click.ClickException(f"the cascade profile did not survive a round trip: {written} != {expected}")
    load_judging(data)


def save_cascade_profile(path: Path, stages: Stages, result: CascadeResult) -> None:
    text = cascade_toml(path.stem, stages, result, stages.sources)
    check_cascade_toml(text, result)
    write_text_atomic(path, text)
    if all(s.threshold is None for s in result.stages):
        click.echo(f"warning: no stage has a threshold at accuracy {result.target}, delta {result.delta}: "
                   "the cascade sends every item to humans", err=True)
    shown = ", ".join("null" if s.threshold is None else repr(profile_threshold(s.threshold)) for s in result.stages)
    click.echo(f"wrote {path}: thresholds {shown}", err=True)


# ----------------------------------------------------------------------------- the verb


@click.command("calibrate")
@click.argument("stage_paths", metavar="STAGE1.jsonl ... STAGEK.jsonl", nargs=-1,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target-accuracy", required=True, type=FloatRange(0, 1, min_open=True, max_open=True),
              help="Accuracy on accepted items the cascade guarantees (with probability 1 - delta).")
@click.option("--delta", type=FloatRange(0, 1, min_open=True, max_open=True), default=0.1, show_default=True,
              help="Risk level: the guarantee holds with probability 1 - delta (each stage gets delta/K).")
@click.option("--format", "fmt", type=click.Choice(["json", "md"]), default="json", show_default=True,
              help='json: {"cascade": {...}} (SPEC 4 keys), or {"plan": {...}} with --plan; md: Markdown.')
@click.option("--save-profile", "save_profile_path", metavar="CASCADE.toml",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Write a cascade profile (SPEC 2.1) with the thresholds: name = the file's stem, then = "
                   '"human", [[cascade]] tables {profile, threshold}; no threshold key = null.')
@click.option("--plan", "plan_flag", is_flag=True,
              help="Evaluate every ordered sub-cascade of the stages at the target and print those no other "
                   "beats on both cost per item and coverage (the Pareto front), with their guarantee.")
@click.option("--price", "prices", multiple=True, metavar="NAME=USD_PER_ITEM",
              help="With --plan: a stage's cost per item (NAME = its file's stem), for files whose calls "
                   "carry no cost_usd; given, it replaces the calls' costs. Repeatable.")
@handle_errors
def calibrate_command(stage_paths: tuple[Path, ...], target_accuracy: float, delta: float, fmt: str,
                      save_profile_path: Path | None, plan_flag: bool, prices: tuple[str, ...]) -> None:
    """Thresholds for a judge cascade STAGE1 -> ... -> STAGEK -> humans with a guarantee on the whole
    cascade (SPEC 4 `cascade`): accuracy on the items the judges accept >= the target with probability
    >= 1 - delta.

    Each file holds the verdicts of one judge on the same items (from `pjudge judge`, the service or
    `pjudge import`), cheapest judge first; they join by item id onto the labelled items of the first
    file, whose labels are the truth. Stage k gets SPEC 4's risk_control rule at level 1 - delta/K on
    the items no earlier stage accepted. Bad input exits 2 naming the file, line and field."""
    if save_profile_path is not None:
        if plan_flag:
            raise click.UsageError("--save-profile writes one cascade; it does not go with --plan")
        if save_profile_path.suffix != ".toml":
            raise click.UsageError("--save-profile writes TOML: give a path ending in .toml")
    if prices and not plan_flag:
        raise click.UsageError("--price is for --plan")
    refuse_overwriting_inputs({"--save-profile": save_profile_path}, list(stage_paths))
    stages = read_stages(stage_paths)
    from calibration.cascade import calibrate, cascade_markdown, plan, plan_markdown

    if plan_flag:
        costs, sources = stage_costs(stages, parse_prices(prices, stages.names))
        planned = plan(stages, target_accuracy, delta, costs, sources)
        if fmt == "md":
            click.echo(plan_markdown(planned), nl=False)
        else:
            echo_json({"plan": planned.as_dict()})
        return
    result = calibrate(stages, target_accuracy, delta)
    if save_profile_path is not None:
        save_cascade_profile(save_profile_path, stages, result)
    if fmt == "md":
        click.echo(cascade_markdown(result), nl=False)
    else:
        document: dict[str, Any] = {"cascade": result.as_dict()}
        echo_json(document)
