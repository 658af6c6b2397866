"""/dashboard in Debian's Chromium, driven by Playwright for Python (no browser download), against a
served app holding two weeks of simulated jobs: every chart drawn with data (and equal to the stats
API's), a filter changes the numbers, per-group tables follow the chosen key, a label posted from a
job's queue shows up in its report. Screenshots go to the test's
artifacts folder (tmp_path/artifacts)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store import repo
from store.db import get_engine
from tests.support.api import AUTH_A, KEY_A, KEY_B, ServedApp, cascade_job, new_app, simulated_jobs

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (the test extra)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServedApp, list[str]]]:
    engine = get_engine(f"sqlite:///{tmp_path}/db.sqlite")
    jobs = simulated_jobs(engine, repo.hash_key(KEY_A), seed=3, n=30)
    simulated_jobs(engine, repo.hash_key(KEY_B), seed=4, days=1, n=10, judges=(("tenant-b-profile", "b-model", 0.2),))
    app = new_app(engine, lambda job: None)
    jobs.append(cascade_job(app.test_client(), engine))  # the last job: a cascade's, with its stages
    with ServedApp(app) as served:
        yield served, jobs


def charts_with_data(page: Any) -> dict[str, int]:
    """Each plotly chart of the page and how many of its traces hold a number."""
    result: dict[str, int] = page.evaluate("""() => {
        const out = {};
        for (const node of document.querySelectorAll('.chart')) {
            const plotted = node.classList.contains('js-plotly-plot') ? (node.data || []) : [];
            out[node.id] = plotted.filter(t => (t.y || []).some(v => v !== null && !Number.isNaN(v))).length;
        }
        return out;
    }""")
    return result


def test_the_dashboard_in_chromium(browser: Any, served: tuple[ServedApp, list[str]], tmp_path: Path) -> None:
    app, jobs = served
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text
            else None)

    page.goto(f"{app.url}/dashboard/")
    assert page.url.endswith("/dashboard/login")  # no session: the login form
    page.fill("input[name=key]", KEY_A)
    page.click("#login-form button")
    page.wait_for_selector("#chart-calls.js-plotly-plot")
    assert page.url.endswith("/dashboard/")
    assert "tenant-b" not in page.content()
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)
    charts = charts_with_data(page)
    assert set(charts) == {"chart-accuracy", "chart-kappa", "chart-alpha", "chart-first-position",
                           "chart-consistency", "chart-longer", "chart-cost", "chart-calls", "chart-coverage",
                           "chart-reliability"}
    data = page.evaluate("() => JSON.parse(document.getElementById('overview-data').textContent)")
    judges = [(s["profile"], s["model"]) for s in data["series"]]
    assert {("persona-certainty", "sim-large"), ("persona-certainty", "sim-small"), ("persona-tie", "sim-small")} <= set(judges)

    def with_values(name: str) -> int:  # the lines with a number: a cascade's stages may have none
        return sum(any(p[name] is not None for p in s["points"]) for s in data["series"])

    assert charts["chart-accuracy"] == len(judges) and charts["chart-kappa"] == with_values("cohen_kappa") >= 3, charts
    for chart, name in (("chart-alpha", "krippendorff_alpha"), ("chart-first-position", "first_position_rate"),
                        ("chart-consistency", "position_consistency"), ("chart-longer", "prefers_longer")):
        assert charts[chart] == with_values(name) >= 3, (chart, charts)
    assert charts["chart-cost"] == 1 and charts["chart-calls"] == 1, charts
    assert charts["chart-coverage"] == 1 and charts["chart-reliability"] == 2, charts  # the diagonal and the bins
    # what the charts draw is the stats API's per_day (the query the page names)
    per_day = page.request.get(f"{app.url}/v1/stats/agreement?{data['per_day_query']}", headers=AUTH_A).json()
    drawn = page.evaluate("() => document.getElementById('chart-first-position').data[0].y")
    assert drawn == [day["by_judge"][0]["first_position_rate"] for day in per_day["per_day"]]
    assert f"/v1/stats/agreement?{data['per_day_query']}" in page.inner_text("#per-day-source")
    # live progress: the jobs table polls /dashboard/data/jobs (with the session cookie)
    with page.expect_response(lambda r: r.url.endswith("/dashboard/data/jobs"), timeout=15_000) as polled:
        pass
    assert polled.value.status == 200
    before = page.inner_text('#totals td[data-stat="accuracy"]'), page.inner_text('#totals td[data-stat="items"]')

    # A filter changes the numbers (and they are /v1/stats/agreement's for the same filter).
    page.fill("#filters input[name=profile]", "persona-certainty")
    page.fill("#filters input[name=model]", "sim-large")
    page.fill("#filters input[name=since]", "2026-05-10")
    page.click("#filters button")
    page.wait_for_selector("#chart-calls.js-plotly-plot")
    after = page.inner_text('#totals td[data-stat="accuracy"]'), page.inner_text('#totals td[data-stat="items"]')
    assert after != before
    api = page.request.get(f"{app.url}/v1/stats/agreement?profile=persona-certainty&model=sim-large&since=2026-05-10", headers=AUTH_A).json()
    assert after == (f"{api['accuracy']:.3f}", str(api["counts"]["items"]))
    assert charts_with_data(page)["chart-accuracy"] == 1
    page.screenshot(path=str(artifacts / "overview-filtered.png"), full_page=True)

    # Per-group tables: by a metadata key, then another grouping changes the numbers.
    page.click("#groups-link")
    page.select_option("#filters select[name=group_by]", "day")
    page.click("#filters button")
    page.wait_for_selector("#chart-groups-bias.js-plotly-plot")
    assert charts_with_data(page) == {"chart-groups-accuracy": 2, "chart-groups-bias": 3}
    by_day = page.request.get(f"{app.url}/v1/stats/agreement?profile=persona-certainty&model=sim-large"
                              "&since=2026-05-10T00%3A00%3A00%2B00%3A00&group_by=day", headers=AUTH_A).json()
    rows = page.locator("#groups tr[data-group]")
    assert rows.count() == len(by_day["by_group"]) > 1
    first = rows.first.get_attribute("data-group")
    assert rows.first.locator('td[data-stat="accuracy"]').inner_text() == f"{by_day['by_group'][first]['accuracy']:.3f}"
    page.screenshot(path=str(artifacts / "groups.png"), full_page=True)
    page.fill("#filters input[name=profile]", "")
    page.fill("#filters input[name=model]", "")
    page.select_option("#filters select[name=group_by]", "model")
    page.click("#filters button")
    page.wait_for_selector("#chart-groups-bias.js-plotly-plot")
    shown = page.locator("#groups tr[data-group]").evaluate_all("rows => rows.map(r => r.dataset.group)")
    by_model = page.request.get(f"{app.url}/v1/stats/agreement?since=2026-05-10T00%3A00%3A00%2B00%3A00"
                                "&group_by=model", headers=AUTH_A).json()
    assert shown == list(by_model["by_group"]) and {"sim-large", "sim-small"} <= set(shown)

    # A job's page: its report, a chart, its human queue; a label from the queue reaches the report.
    job_id = jobs[-1]
    page.goto(f"{app.url}/dashboard/jobs/{job_id}")
    page.wait_for_selector("#chart-coverage.js-plotly-plot")
    assert charts_with_data(page) == {"chart-coverage": 1, "chart-reliability": 2, "chart-stages": 2}
    assert page.locator("#stages tr").count() == 1 + 3  # a header and the three stages
    labelled = int(page.inner_text('#report td[data-stat="labelled"]'))
    row = page.locator("#queue tr[data-item]").first
    item = row.get_attribute("data-item")
    page.screenshot(path=str(artifacts / "job.png"), full_page=True)
    row.locator("select[name=human_label]").select_option("tie")
    row.locator("button").click()
    page.wait_for_selector("#chart-coverage.js-plotly-plot")
    assert int(page.inner_text('#report td[data-stat="labelled"]')) == labelled + 1
    assert page.locator(f'#queue tr[data-item="{item}"]').count() == 0
    report = page.request.get(f"{app.url}/v1/jobs/{job_id}/report", headers=AUTH_A).json()
    assert report["counts"]["labelled"] == labelled + 1
    page.screenshot(path=str(artifacts / "job-labelled.png"), full_page=True)

    assert errors == []
    assert sorted(p.name for p in artifacts.iterdir()) == ["groups.png", "job-labelled.png", "job.png",
                                                          "overview-filtered.png", "overview.png"]
