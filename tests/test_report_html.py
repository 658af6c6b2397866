"""`pjudge report`: the HTML page, `--compare` (json, md, html) and `--save-profile`.

The last test opens the page in headless Chromium and checks that the plots decoded and show; it is
skipped, saying why, when no Chromium binary is found (CI installs the Debian package `chromium`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import tomllib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.stats import binomtest

from calibration.compare import Side
from calibration.hitl import hitl_selection
from calibration.html import SIDE_COLORS, bpde_queue, render_html
from calibration.report import build_report
from judge.aggregation import aggregate
from judge.jsonl import dump_record, read_verdicts
from judge.profiles import load_profile
from judge.records import Call, JudgeInfo, Verdict
from pjudge.cli import main
from pjudge.commands.report import certainty_threshold_for, profile_toml
from tests.support.cli import run_pjudge

BLUE, RED = (tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in SIDE_COLORS)
HOSTILE_ID = '<script>alert("id")</script>'
HOSTILE_GROUP = "<img src=x onerror=alert(1)>"
HOSTILE_MODEL = "<b>m&m</b>"


# ----------------------------------------------------------------------------- fixtures


def make_verdicts(n: int = 300, seed: int = 1, model: str = "judge-x", unlabelled: int = 0,
                  skill_shift: float = 0.0) -> list[Verdict]:
    """Judged in both orders; certainty tracks how likely each call is right, so the judge is roughly
    calibrated and risk control at 0.8 finds a threshold. The first `unlabelled` items have no label."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        truth = rng.choice("AB")
        other = "B" if truth == "A" else "A"
        skill = min(1.0, max(0.0, rng.random() + skill_shift))
        calls = []
        for order in ("AB", "BA"):
            choice = truth if rng.random() < 0.55 + 0.44 * skill else other
            certainty = round(min(0.99, max(0.01, skill + rng.gauss(0, 0.05))), 2)
            calls.append(Call(order=order, raw=f"[[{choice}]] [[{int(certainty * 100)}]]", choice=choice,
                              certainty=certainty))
        agg = aggregate(calls, "choice", True)
        out.append(Verdict(
            id=f"item-{i}", winner=agg.winner, p_a=agg.p_a, certainty=agg.certainty, consistent=agg.consistent,
            abstained=agg.abstained, bpde=agg.bpde, human_label=None if i < unlabelled else truth,
            judge=JudgeInfo(profile="persona-certainty", provider="openai", model=model), calls=calls,
            len_a=rng.randint(50, 400), len_b=rng.randint(50, 400), metadata={"group": f"g{i % 3}"},
        ))
    return out


def write(path: Path, verdicts: Sequence[Verdict]) -> Path:
    path.write_text("".join(dump_record(v) + "\n" for v in verdicts), encoding="utf-8")
    return path


def report_cli(*args: str) -> object:
    return CliRunner().invoke(main, ["report", *args])


def images(page: str) -> list[Image.Image]:
    uris = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB") for u in uris]


def pixels_near(image: Image.Image, color: Sequence[int], tolerance: int = 12) -> int:
    """How many pixels are within `tolerance` of `color` on every channel."""
    diff = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(color, dtype=np.int16))
    return int((diff <= tolerance).all(axis=-1).sum())


# ----------------------------------------------------------------------------- the page


@pytest.mark.slow  # renders every plot of a full page
def test_page_is_self_contained_has_every_section_and_escapes_text() -> None:
    vs = make_verdicts(300, model=HOSTILE_MODEL)
    vs[0] = vs[0].model_copy(update={"id": HOSTILE_ID, "bpde": 2.0})  # top of the BPDE queue
    vs[1] = vs[1].model_copy(update={"metadata": {"group": HOSTILE_GROUP}})
    report = build_report(vs, group_by="group", target_accuracy=0.8, bootstrap_resamples=50)
    page = render_html(report, vs, name="run-1")

    assert page.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # Nothing is fetched: every src is an embedded PNG, no URL anywhere (":" is not base64).
    assert re.findall(r'\s(?:src|href)="([^"]{0,22})', page) == ["data:image/png;base64,"] * 3
    assert "http:" not in page and "https:" not in page and "url(" not in page
    # Escaped: the only script and the only images are the page's own.
    assert page.count("<script") == 1 and page.count("<img") == 3 and "<b>m&m" not in page
    assert "&lt;script&gt;alert(&quot;id&quot;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;b&gt;m&amp;m&lt;/b&gt;" in page
    for heading in ("Summary", "Plots", "Risk control", "Judge × human", "By group", "BPDE queue"):
        assert heading in page
    assert f"<td class=\"num\">{report['accuracy']:.3f}</td>" in page
    assert f"{report['risk_control']['threshold']:.4f}" in page

    plots = images(page)
    assert [p.size for p in plots] == [(640, 400)] * 3
    for plot in plots:
        assert len(np.unique(np.asarray(plot).reshape(-1, 3), axis=0)) > 50  # drawn, not a blank canvas
        assert pixels_near(plot, BLUE) > 200  # the judge's own series is there


def test_bpde_queue_is_spec_3_3_when_all_labelled_and_unlabelled_items_otherwise() -> None:
    labelled = make_verdicts(50)
    pool, size, rows = bpde_queue(labelled, 0.2)
    assert (pool, size) == ("labelled", 50)
    assert rows.tolist() == hitl_selection(labelled, 0.2).tolist()

    bpdes = [0.1, None, 0.5, 0.5, 0.0, 0.7, 0.2, 0.5, 0.3, 0.1]
    vs = [v.model_copy(update={"bpde": b, "human_label": None if i < 7 else v.human_label})
          for i, (v, b) in enumerate(zip(make_verdicts(10), bpdes, strict=True))]
    pool, size, rows = bpde_queue(vs, 0.5)
    # Unlabelled items 0-6; floor(0.5 * 7 + 0.5) = 4: null first, then 0.7, then the 0.5s in input order.
    assert (pool, size) == ("unlabelled", 7)
    assert rows.tolist() == [1, 5, 2, 3]
    page = render_html(build_report(vs, hitl=0.5, bootstrap_resamples=0), vs)
    assert "the 4 of 7 unlabelled items" in page
    assert re.findall(r"<tr><td class=\"num\">\d+</td><td>([^<]+)</td>", page) == ["item-1", "item-5", "item-2", "item-3"]


def test_page_without_labels_or_decisions_still_has_three_plots() -> None:
    vs = [v.model_copy(update={"human_label": None, "p_a": None, "winner": None, "calls": []})
          for v in make_verdicts(20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no empty legend warned about on stderr
        page = render_html(build_report(vs, bootstrap_resamples=0), vs)
    assert "No human labels" in page
    assert [p.size for p in images(page)] == [(640, 400)] * 3


def test_cli_html(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", make_verdicts(200))
    out = tmp_path / "report.html"
    result = report_cli(str(path), "--format", "html", "-o", str(out), "--group-by", "group",
                        "--target-accuracy", "0.8", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert len(images(page)) == 3 and "By group" in page and "<strong>run</strong>" in page


# ----------------------------------------------------------------------------- --compare


def flipped(verdicts: list[Verdict], fix: int, spoil: int) -> list[Verdict]:
    """A second judge: the first `fix` wrong items made right, the first `spoil` right ones made wrong."""
    out, fixed, spoiled = [], 0, 0
    for v in verdicts:
        wrong = v.winner != v.human_label
        if wrong and fixed < fix:
            v = v.model_copy(update={"winner": v.human_label})
            fixed += 1
        elif not wrong and spoiled < spoil:
            v = v.model_copy(update={"winner": "B" if v.winner == "A" else "A"})
            spoiled += 1
        out.append(v.model_copy(update={"judge": JudgeInfo(profile="p", provider="openai", model="judge-y")}))
    return out


def test_compare_json_has_both_reports_their_differences_and_the_paired_view(tmp_path: Path) -> None:
    a = make_verdicts(200)
    # b: a second judge on a's first 190 items (15 more right, 5 more wrong) and on 5 items of its own.
    b = flipped(a, fix=15, spoil=5)[:190]
    b += [v.model_copy(update={"id": f"new-{i}"}) for i, v in enumerate(make_verdicts(5, seed=9, model="judge-y"))]
    pa, pb = write(tmp_path / "a.jsonl", a), write(tmp_path / "b.jsonl", b)
    result = report_cli(str(pa), "--compare", str(pb), "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"a", "b", "differences", "paired"}
    assert (doc["a"]["name"], doc["b"]["name"], doc["b"]["models"]) == ("a", "b", ["judge-y"])
    ra, rb = build_report(a, bootstrap_resamples=0), build_report(b, bootstrap_resamples=0)
    assert doc["a"]["report"] == ra and doc["b"]["report"] == rb
    acc = doc["differences"]["accuracy"]
    assert (acc["a"], acc["b"]) == (ra["accuracy"], rb["accuracy"])
    assert acc["difference"] == pytest.approx(rb["accuracy"] - ra["accuracy"])
    assert doc["differences"]["items"] == {"a": 200, "b": 195, "difference": -5}
    assert "risk_control_threshold" not in doc["differences"]  # not asked for

    p = doc["paired"]
    assert (p["shared"], p["only_in_a"], p["only_in_b"], p["labelled"]) == (190, 10, 5, 190)
    # The 15 fixed and 5 spoiled items all lie among the first 190 (wrong items are common enough).
    assert (p["only_b_correct"], p["only_a_correct"]) == (15, 5)
    assert p["same_winner"] == pytest.approx(170 / 190)
    assert p["difference"] == pytest.approx(10 / 190)
    assert p["mcnemar_p"] == pytest.approx(binomtest(5, 20, 0.5).pvalue)


def test_compare_markdown_html_and_labels_on_both(tmp_path: Path) -> None:
    a = make_verdicts(120)
    b = flipped(a, fix=10, spoil=0)
    pa, pb = write(tmp_path / "a.jsonl", a), write(tmp_path / "b.jsonl", b)
    md = report_cli(str(pa), "--compare", str(pb), "--format", "md", "--bootstrap", "0")
    assert md.exit_code == 0, md.output
    ra, rb = build_report(a, bootstrap_resamples=0), build_report(b, bootstrap_resamples=0)
    assert f"| accuracy | {ra['accuracy']:.3f} | {rb['accuracy']:.3f} | +{rb['accuracy'] - ra['accuracy']:.3f} |" in md.stdout
    assert "| both correct / only a / only b / neither |" in md.stdout and "McNemar" in md.stdout

    # --labels joins onto both files: every label "A" makes accuracy the share of A winners.
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": v.id, "human_label": "A"}) + "\n" for v in a))
    doc = json.loads(report_cli(str(pa), "--compare", str(pb), "--labels", str(labels), "--bootstrap", "0").stdout)
    assert doc["differences"]["accuracy"]["a"] == pytest.approx(sum(v.winner == "A" for v in a) / 120)
    assert doc["differences"]["accuracy"]["b"] == pytest.approx(sum(v.winner == "A" for v in b) / 120)

    out = tmp_path / "c.html"
    html = report_cli(str(pa), "--compare", str(pb), "--format", "html", "-o", str(out), "--bootstrap", "0")
    assert html.exit_code == 0, html.output
    page = out.read_text()
    assert "Side by side" in page and "Paired: items judged in both files" in page
    plots = images(page)
    assert len(plots) == 3
    assert all(pixels_near(p, BLUE) > 100 for p in plots[:2]) and all(pixels_near(p, RED) > 100 for p in plots[:2])


def test_render_html_compare_names_both_sides() -> None:
    a, b = make_verdicts(60), make_verdicts(60, seed=2, model="judge-y")
    other = Side("second <run>", "b.jsonl", b, build_report(b, bootstrap_resamples=0))
    page = render_html(build_report(a, bootstrap_resamples=0), a, name="first", other=other)
    assert "a: first" in page and "b: second &lt;run&gt;" in page and "second <run>" not in page


# ----------------------------------------------------------------------------- --save-profile


def test_certainty_threshold_is_two_lambda_minus_one() -> None:
    assert certainty_threshold_for(0.75) == 0.5
    assert certainty_threshold_for(0.9) == 0.8
    assert certainty_threshold_for(0.5) == 0.0 and certainty_threshold_for(0.2) == 0.0
    lam = 4561 / 4999  # a linspace(0, 1, 5000) candidate
    assert certainty_threshold_for(lam) == round(2 * round(lam, 9) - 1, 9)


def test_profile_toml_round_trips_awkward_strings() -> None:
    fields = {"name": 'q"u\\o\nte\x7f\t—', "samples": 3, "swap": False, "temperature": 0.25,
              "certainty_threshold": 1e-05, "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0}}
    text = profile_toml(fields, "line one\nline\x00two")
    assert tomllib.loads(text) == fields
    assert text.startswith("# line one\n# line?two\n")


def test_save_profile_stores_the_threshold_and_judging_with_it_abstains_exactly_there(tmp_path: Path) -> None:
    vs = make_verdicts(400)
    path = write(tmp_path / "calibration.jsonl", vs)
    saved = tmp_path / "profiles" / "calibrated.toml"
    result = report_cli(str(path), "--target-accuracy", "0.85", "--delta", "0.1", "--save-profile", str(saved),
                        "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    rc = json.loads(result.stdout)["risk_control"]
    assert rc["threshold"] is not None and 0 < rc["coverage"] < 1

    profile = load_profile(str(saved))  # as `pjudge judge --profile PATH` loads it
    base = load_profile("persona-certainty")  # the profile the verdicts name
    assert profile.certainty_threshold == pytest.approx(2 * rc["threshold"] - 1, abs=1e-9)
    assert profile.name == "calibrated"
    assert profile.model_dump(exclude={"name", "certainty_threshold"}) == base.model_dump(
        exclude={"name", "certainty_threshold"})
    assert f"confidence\n# max(p_a, 1 - p_a) >= {rc['threshold']!r}" in saved.read_text()

    # The judge's own aggregation with that threshold keeps exactly the items risk control accepted.
    kept = [v for v in vs if not aggregate(v.calls, "choice", True, profile.certainty_threshold).abstained]
    assert len([v for v in kept if v.decided and v.human_label]) == rc["accepted"]
    assert sum(v.winner != v.human_label for v in kept) == rc["errors"]


def test_save_profile_refusals(tmp_path: Path) -> None:
    path = write(tmp_path / "v.jsonl", make_verdicts(100))
    target = tmp_path / "p.toml"
    assert report_cli(str(path), "--save-profile", str(target)).exit_code == 2  # needs --target-accuracy
    assert report_cli(str(path), "--profile", "persona-certainty").exit_code == 2  # needs --save-profile
    bad_suffix = report_cli(str(path), "--target-accuracy", "0.8", "--save-profile", str(tmp_path / "p.json"))
    assert bad_suffix.exit_code == 2
    unreachable = report_cli(str(path), "--target-accuracy", "0.99", "--save-profile", str(target), "--bootstrap", "0")
    assert unreachable.exit_code == 1 and "profile not written" in unreachable.output
    unknown = write(tmp_path / "imported.jsonl", [v.model_copy(update={"judge": JudgeInfo(
        profile="personalized-judge", provider="replay", model="m")}) for v in make_verdicts(100)])
    no_base = report_cli(str(unknown), "--target-accuracy", "0.7", "--save-profile", str(target), "--bootstrap", "0")
    assert no_base.exit_code == 2 and "--profile" in no_base.output
    assert not target.exists() and not list(tmp_path.glob(".*partial*"))
    named = report_cli(str(unknown), "--target-accuracy", "0.7", "--save-profile", str(target),
                       "--profile", "persona-tie", "--bootstrap", "0")
    assert named.exit_code == 0, named.output
    assert load_profile(str(target)).template == "persona-tie"
    assert "calibrated on verdicts of m" in named.stderr


def persona_items(path: Path, n: int, seed: int = 7) -> Path:
    """Items whose better-fitting answer shares 1 to 3 of the persona's interests (the other none).

    The simulated judge is more certain the more words are shared; the humans here agree with that
    answer less often when it shares only one (55%, 85%, 100%), so certainty predicts agreement and a
    risk-controlled threshold has something to cut."""
    rng = random.Random(seed)
    interests = ["gardening", "chess", "cycling", "baking", "astronomy", "painting", "fishing", "violin",
                 "hiking", "poetry", "football", "knitting", "photography", "sailing", "climbing", "pottery"]
    rows = []
    for i in range(n):
        likes = rng.sample(interests, 3)
        others = [w for w in interests if w not in likes]
        shared = rng.randint(1, 3)
        fitting = "Try " + ", ".join(likes[:shared] + rng.sample(others, 3 - shared)) + " this month."
        plain = "Try " + ", ".join(rng.sample(others, 3)) + " this month."
        a_fits = rng.random() < 0.5
        humans_agree = rng.random() < {1: 0.55, 2: 0.85, 3: 1.0}[shared]
        label = "A" if a_fits == humans_agree else "B"
        a, b = (fitting, plain) if a_fits else (plain, fitting)
        rows.append({"id": f"p{i}", "persona": f"The person enjoys {', '.join(likes)}.",
                     "prompt": "What should I do this month?", "response_a": a, "response_b": b,
                     "human_label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_judging_with_the_saved_profile_abstains_below_the_threshold(tmp_path: Path, start_sim) -> None:
    """End to end through the CLI and the simulated LLM: judge, calibrate, save, judge again."""
    sim = start_sim("--noise", "0.1", "--seed", "3")
    items = persona_items(tmp_path / "items.jsonl", 240)
    connection = ["--provider", "openai-compatible", "--model", "sim-judge", "--base-url", sim.openai_base_url]
    first = run_pjudge("judge", str(items), "-o", str(tmp_path / "v1.jsonl"), *connection)
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "calibrated.toml"
    calibrate = run_pjudge("report", str(tmp_path / "v1.jsonl"), "--target-accuracy", "0.85", "--save-profile",
                           str(saved), "--bootstrap", "0")
    assert calibrate.returncode == 0, calibrate.stderr
    rc = json.loads(calibrate.stdout)["risk_control"]
    assert rc["threshold"] is not None and 30 <= rc["accepted"] < 200

    second = run_pjudge("judge", str(items), "-o", str(tmp_path / "v2.jsonl"), "--profile", str(saved), *connection)
    assert second.returncode == 0, second.stderr
    verdicts = read_verdicts(tmp_path / "v2.jsonl")
    threshold = load_profile(str(saved)).certainty_threshold
    assert any(v.abstained for v in verdicts) and not all(v.abstained for v in verdicts)
    assert all(v.abstained == (v.certainty is None or v.certainty < threshold) for v in verdicts)
    assert sum(not v.abstained and v.decided for v in verdicts) == rc["accepted"]
    kept = [v for v in verdicts if not v.abstained and v.decided]
    assert sum(v.winner == v.human_label for v in kept) / len(kept) == pytest.approx(rc["accuracy"])


# ----------------------------------------------------------------------------- headless Chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def chromium_binary() -> str | None:
    explicit = os.environ.get("PJUDGE_CHROMIUM")
    if explicit:
        return explicit
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def run_chromium(binary: str, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", "--window-size=1200,3000",
             "--virtual-time-budget=5000", *args, page.as_uri()],
            capture_output=True, text=True, timeout=120,
        )


@pytest.mark.browser
def test_page_opens_in_headless_chromium_and_shows_its_plots(tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary found (install the Debian package `chromium`, or set PJUDGE_CHROMIUM)")
    a = make_verdicts(300, unlabelled=40)
    b = make_verdicts(300, seed=5, model="judge-y", unlabelled=40, skill_shift=-0.2)
    options = {"group_by": "group", "target_accuracy": 0.8, "bootstrap_resamples": 50}
    other = Side("judge-y", "b.jsonl", b, build_report(b, **options))
    page = tmp_path / "report.html"
    page.write_text(render_html(build_report(a, **options), a, name="judge-x", other=other), encoding="utf-8")

    dom = run_chromium(binary, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Console messages (script errors, blocked loads) are logged as CONSOLE lines; the page has none.
    assert [line for line in dom.stderr.splitlines() if "CONSOLE" in line] == []
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None
    assert 'data-images="3"' in body.group(1) and 'data-images-rendered="3"' in body.group(1)
    assert "data-errors" not in body.group(1)
    sizes = re.findall(r'<img [^>]*data-natural-width="(\d+)" data-natural-height="(\d+)"', dom.stdout)
    assert sizes == [("640", "400")] * 3

    shot = tmp_path / "shot.png"
    screenshot = run_chromium(binary, page, f"--screenshot={shot}")
    assert screenshot.returncode == 0 and shot.is_file(), screenshot.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    assert image.getextrema() != ((255, 255), (255, 255), (255, 255))  # not blank
    # The plot series' colours are used nowhere else on the page, so these pixels are the plots.
    assert pixels_near(image, BLUE) > 3000 and pixels_near(image, RED) > 3000
