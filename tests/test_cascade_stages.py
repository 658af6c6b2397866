"""The per-stage report of a cascade's verdicts (issue 14, point 5; calibration.stages): numbers
computed by hand on a nine-item, three-stage file (tests.support.verdicts.small_cascade), the
Clopper–Pearson interval against scipy, and the section in the JSON, Markdown and HTML reports and
`pjudge report`; a single judge's report has no such section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scipy.stats import beta, binomtest

from calibration.from_counts import clopper_pearson_interval
from calibration.html import render_html
from calibration.markdown import render_markdown
from calibration.report import build_report
from calibration.stages import awaits_label, stage_report
from judge.jsonl import dump_record
from pjudge.cli import main
from tests.support.verdicts import cascade_verdict, small_cascade, synthetic

C0, C1, C2 = 0.001, 0.01, 0.1


def test_per_stage_numbers_by_hand() -> None:
    r = stage_report(small_cascade())
    assert r is not None
    assert r["items"] == 9 and r["then"] == "human"
    rows = [{k: s[k] for k in ("stage", "profile", "model", "reached", "accepted", "labelled", "correct", "accuracy")}
            for s in r["stages"]]
    assert rows == [
        # stage 0 judged all nine; accepted i0 (A, right) and i1 (B, label A: wrong)
        {"stage": 0, "profile": "stage-0", "model": "gpt-mini", "reached": 9, "accepted": 2, "labelled": 2,
         "correct": 1, "accuracy": 0.5},
        # stage 1 judged i2..i8; accepted i2 (right) and i3 (unlabelled)
        {"stage": 1, "profile": "stage-1", "model": "gpt-mid", "reached": 7, "accepted": 2, "labelled": 1,
         "correct": 1, "accuracy": 1.0},
        # stage 2 judged i4..i8; accepted i4 (right)
        {"stage": 2, "profile": "stage-2", "model": "gpt-big", "reached": 5, "accepted": 1, "labelled": 1,
         "correct": 1, "accuracy": 1.0},
    ]
    assert [s["cost_usd"] for s in r["stages"]] == [0.009, 0.07, 0.5]  # sums rounded to 9 decimals
    assert [s["cost_per_item"] for s in r["stages"]] == pytest.approx([C0, C1, C2])
    assert (r["accepted"], r["coverage"]) == (5, pytest.approx(5 / 9))
    assert (r["labelled"], r["correct"], r["accuracy"]) == (4, 3, 0.75)
    # i5..i8 escalated: i6 labelled, i5, i7, i8 wait.
    assert r["escalated"] == {"items": 4, "labelled": 1, "awaiting_label": 3}
    total = 9 * C0 + 7 * C1 + 5 * C2
    assert r["cost"]["total_usd"] == pytest.approx(total)
    assert r["cost"]["per_item"] == pytest.approx(total / 9)
    alone = r["cost"]["last_stage_alone"]
    assert alone["estimate"] is True and alone["per_item"] == pytest.approx(C2)
    assert alone["total_usd"] == pytest.approx(9 * C2)
    assert r["cost"]["saving_per_item"] == pytest.approx(C2 - total / 9)
    # The queue: a null BPDE (i7) first, then 0.69 by input order (i5 before i8).
    assert r["queue"]["waiting"] == 3
    assert [e["id"] for e in r["queue"]["top"]] == ["i7", "i5", "i8"]
    assert r["queue"]["top"][1] == {"id": "i5", "bpde": 0.693147181, "winner": "A", "p_a": 0.55, "certainty": 0.1,
                                    "stage": None}
    shorter = stage_report(small_cascade(), top=2)
    assert shorter is not None and [e["id"] for e in shorter["queue"]["top"]] == ["i7", "i5"]


def test_the_intervals_are_clopper_pearson_as_scipy_computes_them() -> None:
    r = stage_report(small_cascade())
    assert r is not None
    # Stage 0: 1 correct of 2; stage 1: 1 of 1; overall 3 of 4.
    for (x, n), ci in (((1, 2), r["stages"][0]["ci95"]), ((1, 1), r["stages"][1]["ci95"]), ((3, 4), r["ci95"])):
        exact = binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
        assert ci == pytest.approx([exact.low, exact.high], abs=1e-12)
    assert r["stages"][0]["ci95"] == pytest.approx([beta.ppf(0.025, 1, 2), beta.ppf(0.975, 2, 1)])
    for x, n in ((0, 5), (5, 5), (17, 40), (0, 1)):
        exact = binomtest(x, n).proportion_ci(confidence_level=0.95, method="exact")
        assert clopper_pearson_interval(x, n) == pytest.approx((exact.low, exact.high), abs=1e-12)
    assert clopper_pearson_interval(0, 0) == (None, None)


def test_no_labelled_accepted_item_has_no_accuracy_and_then_abstain_queues_nothing() -> None:
    verdicts = [cascade_verdict("a", [("A", 0.6, 0.0), ("B", 0.2, 0.0)], 1, None),
                cascade_verdict("b", [("A", 0.6, 0.0), ("B", 0.4, 0.0)], None, None)]
    r = stage_report(verdicts, then="abstain")
    assert r is not None
    assert r["stages"][1]["accuracy"] is None and r["stages"][1]["ci95"] is None
    assert r["escalated"] == {"items": 1, "labelled": 0, "awaiting_label": 0}
    assert r["queue"] == {"waiting": 0, "top": []}
    assert not awaits_label(verdicts[1], "abstain") and awaits_label(verdicts[1], "human")
    assert r["cost"]["per_item"] == 0.0 and r["cost"]["last_stage_alone"]["per_item"] == 0.0


def test_single_judge_verdicts_have_no_stage_section() -> None:
    assert stage_report(synthetic(50)) is None
    assert "cascade_stages" not in build_report(synthetic(50), bootstrap_resamples=0)


def test_the_reports_carry_the_section() -> None:
    verdicts = small_cascade()
    report = build_report(verdicts, bootstrap_resamples=0)
    assert report["cascade_stages"] == stage_report(verdicts)
    json.dumps(report, allow_nan=False)
    md = render_markdown(report)
    assert "## Cascade stages" in md and "### Human queue" in md
    assert "| 1 | stage-1 | gpt-mid | 7 | 2 | 1.000 | 1/1 |" in md
    assert "Escalated (no stage accepted): 4 items, 1 labelled, 3 await a label." in md
    assert "3 item(s) wait for a human label; the first 3 by BPDE" in md
    assert "| 1 | i7 | — |" in md
    assert "estimated 0.100000 USD for the last stage alone" in md
    page = render_html(report, verdicts, name="cascade")
    assert "<h2>Cascade stages (cascade)</h2>" in page and "<h3>Human queue</h3>" in page
    assert "<td>stage-2</td><td>gpt-big</td>" in page and "<td>i7</td>" in page


def test_pjudge_report_shows_the_stages_and_the_queue(tmp_path: Path) -> None:
    path = tmp_path / "cascade.jsonl"
    path.write_text("".join(dump_record(v) + "\n" for v in small_cascade()), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["report", str(path), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    section = json.loads(result.output)["cascade_stages"]
    assert section["queue"]["waiting"] == 3 and [s["reached"] for s in section["stages"]] == [9, 7, 5]
    result = runner.invoke(main, ["report", str(path), "--bootstrap", "0", "--format", "md"])
    assert result.exit_code == 0 and "## Cascade stages" in result.output and "| 2 | i5 |" in result.output
    out = tmp_path / "report.html"
    result = runner.invoke(main, ["report", str(path), "--bootstrap", "0", "--format", "html", "-o", str(out)])
    assert result.exit_code == 0 and "Cascade stages" in out.read_text(encoding="utf-8")
