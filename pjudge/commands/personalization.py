"""`pjudge personalization`: degree of personalization of systems' responses (SPEC section 6).

Text-distance measures (DEGRESS, EGISES, EDP, PerSEval) always; with `--judge`, also the judge-based
persona fit (calibration.persona_fit): every ordered persona pair of every prompt becomes a pair item
judged in-process in both orders, through the call cache, like `pjudge judge`.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pjudge.commands.judging import files_read, open_cache, profile_options, resolve_profile, run_judging
from pjudge.common import echo_json, handle_errors, probe_output, refuse_overwriting_inputs

if TYPE_CHECKING:
    from calibration.personalization_io import ResponseSet
    from judge.profiles import JudgeProfile
    from judge.records import PairItem, Verdict
    from judge.runner import Progress


F = TypeVar("F", bound=Callable[..., Any])


def judge_override_options(func: F) -> F:
    """The provider overrides of `pjudge judge` (--provider, --model, --base-url, ...) without its
    --profile, which is `--judge` here: the profile choice is also what switches judging on."""

    def holder() -> None: ...

    profile_options(holder)
    options: list[click.Parameter] = getattr(holder, "__click_params__", [])
    params = [p for p in options if p.name != "profile_name"]
    vars(func).setdefault("__click_params__", []).extend(params)  # where click's decorators keep them
    return func


@click.command("personalization")
@click.argument("responses", metavar="RESPONSES.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--distance", default="jsd", show_default=True, metavar="NAME",
              help="Registered text distance σ: jsd (unigram Jensen–Shannon), embedding (optional "
                   "sentence-transformers with a local model in PJUDGE_EMBEDDING_MODEL).")
@click.option("--anchor-system", default=None, metavar="SYSTEM",
              help="Weigh pairs against this system's persona-agnostic response (persona_id null) "
                   "to each prompt (the document-anchored DEGRESS); without it, the simplified variant.")
@click.option("--judge", "judge_profile", default=None, metavar="PROFILE",
              help="Also judge persona fit with this profile (built-in or stored name, or a profile file): "
                   "for every prompt and ordered persona pair (p, q), does persona p prefer r_p to r_q? "
                   "n personas make n(n-1) items per prompt and system, each judged in both orders.")
@judge_override_options
@click.option("--personas", "personas_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON Lines of {persona_id, persona}: persona descriptions for the judge (else the "
                   "`persona` field of the responses lines).")
@click.option("--prompts", "prompts_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON Lines of {prompt_id, prompt}: prompt texts for the judge (else the `prompt` field).")
@click.option("--concurrency", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Judge calls in flight at most.")
@click.option("--verdicts-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the persona-pair verdicts here (JSON Lines); otherwise they are not kept.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the call cache.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples (over prompts) for the persona-fit 95% intervals (0: none).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--format", "output_format", type=click.Choice(["json", "md", "html"]), default="md",
              show_default=True)
@handle_errors
def personalization_command(responses: Path, distance: str, anchor_system: str | None, judge_profile: str | None,
                            personas_path: Path | None, prompts_path: Path | None, concurrency: int,
                            verdicts_out: Path | None, no_cache: bool, bootstrap: int, seed: int, quiet: bool,
                            output_format: str, **overrides: Any) -> None:
    """DEGRESS, EGISES, EDP and PerSEval per system for RESPONSES.jsonl (SPEC 1.3); with --judge,
    also the persona-fit win rate and pairwise difference with bootstrap intervals.

    One line per (prompt, persona, system): {"prompt_id", "persona_id", "system", "response",
    "reference"}; personas without a reference are left out of the text measures, prompts with fewer
    than two such personas are skipped and counted. With --judge, every persona needs a description
    (field `persona`, a string or an object of attributes, or --personas) and every prompt its text
    (field `prompt`, or --prompts).
    """
    # Imported here so that `pjudge --help` does not load numpy.
    from calibration.personalization import distance_names, evaluate
    from calibration.personalization_io import attach_descriptions, read_responses

    _check_options(judge_profile, verdicts_out, overrides)
    refuse_overwriting_inputs({"--verdicts-out": verdicts_out},
                              [responses, personas_path, prompts_path, judge_profile, overrides.get("replay_path")])
    if distance not in distance_names():
        raise click.BadParameter(f"unknown distance '{distance}' (known: {', '.join(distance_names())})",
                                 param_hint="'--distance'")
    profile = _judge_profile(judge_profile, overrides) if judge_profile is not None else None
    if profile is not None:
        refuse_overwriting_inputs({"--verdicts-out": verdicts_out}, files_read(profile))
    probe_output(verdicts_out, "--verdicts-out")
    response_set = attach_descriptions(read_responses(responses), personas_path, prompts_path)
    report = evaluate(response_set, distance=distance, anchor_system=anchor_system)
    document = report.to_dict()
    if profile is not None:
        show_progress = not quiet and output_format == "md" and sys.stderr.isatty()
        _add_persona_fit(document, response_set, profile, concurrency=concurrency, verdicts_out=verdicts_out,
                         no_cache=no_cache, resamples=bootstrap, seed=seed, show_progress=show_progress)
    _emit(document, output_format, report.to_markdown)


def _check_options(judge_profile: str | None, verdicts_out: Path | None, overrides: dict[str, Any]) -> None:
    if judge_profile is not None:
        return
    given = [name for name, value in overrides.items() if value is not None]
    if given:
        flag = "--" + given[0].replace("_path", "").replace("_", "-")
        raise click.UsageError(f"{flag} configures the persona-fit judge: it needs --judge PROFILE")
    if verdicts_out is not None:
        raise click.UsageError("--verdicts-out needs --judge PROFILE")


def _judge_profile(name: str, overrides: dict[str, Any]) -> JudgeProfile:
    profile = resolve_profile(name, **overrides)
    if not profile.swap:
        # F_pq is defined as position-debiased: one order would measure the judge's position bias too.
        raise click.UsageError("persona fit judges both orders; the profile (or --no-swap) turns swapping off")
    return profile


def _add_persona_fit(document: dict[str, Any], responses: ResponseSet, profile: JudgeProfile, *,
                     concurrency: int, verdicts_out: Path | None, no_cache: bool, resamples: int, seed: int,
                     show_progress: bool) -> None:
    """Judge every persona pair and merge win rates, intervals and costs into the document."""
    from calibration.persona_fit import plan_pairs
    from calibration.personalization_document import add_persona_fit, judge_section

    # Raises InputError (exit 2) before any call when a persona has no description.
    plan = plan_pairs(responses, responses.persona_descriptions, responses.prompt_texts)
    verdicts, progress = _judge(profile, plan.items, verdicts_out, concurrency, no_cache, show_progress)
    add_persona_fit(document, verdicts, plan.unjudgeable, resamples=resamples, seed=seed)
    document["judge"] = judge_section(profile, len(plan.items), progress, resamples, seed,
                                      None if verdicts_out is None else str(verdicts_out))


def _judge(profile: JudgeProfile, items: list[PairItem], verdicts_out: Path | None, concurrency: int,
           no_cache: bool, show_progress: bool) -> tuple[list[Verdict], Progress]:
    """run_judging always writes its verdicts; without --verdicts-out they go to a scratch file."""
    with tempfile.TemporaryDirectory(prefix="pjudge-persona-fit-") as scratch:
        output = verdicts_out if verdicts_out is not None else Path(scratch) / "verdicts.jsonl"
        verdicts, progress, interrupted = run_judging(profile, items, output, concurrency, open_cache(no_cache),
                                                      show_progress)
    if interrupted:
        kept = f"; {len(verdicts)} verdicts written to {verdicts_out}" if verdicts_out is not None else ""
        click.echo(f"interrupted after {len(verdicts)} of {len(items)} persona pairs{kept} "
                   "(a rerun takes finished calls from the cache)", err=True)
        sys.exit(130)
    return verdicts, progress


def _emit(document: dict[str, Any], output_format: str, text_markdown: Callable[[], str]) -> None:
    from calibration.personalization_render import persona_fit_markdown, render_html

    if output_format == "json":
        echo_json(document)
    elif output_format == "html":
        click.echo(render_html(document), nl=False)
    else:
        fit = persona_fit_markdown(document)
        click.echo(text_markdown() + ("\n" + fit if fit else ""), nl=False)
    if document.get("judge", {}).get("simulated"):
        click.echo("warning: the persona-fit judgments come from a simulated judge (sim- model)", err=True)
