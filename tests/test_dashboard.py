"""/dashboard through Flask's test client: sign-in with an API key into a session cookie, no key no
page, one key never sees another's jobs, the overview's numbers equal /v1/stats/agreement's for
the same filters, and a label posted from a job's queue reaches its report."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from store import repo
from store.db import get_engine
from tests.support.api import AUTH_A, AUTH_B, KEY_A, KEY_B, cascade_job, new_app, simulated_jobs

# slow: two weeks of simulated jobs per test (seconds of CPU each)
pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, list[str], list[str]]:
    """Two weeks of simulated jobs of key A (two days of key B's), on one SQLite database."""
    path: Path = tmp_path_factory.mktemp("dashboard") / "db.sqlite"
    engine = get_engine(f"sqlite:///{path}")
    jobs_a = simulated_jobs(engine, repo.hash_key(KEY_A), seed=1, n=30)
    jobs_b = simulated_jobs(engine, repo.hash_key(KEY_B), seed=2, days=2, n=20,
                            judges=(("tenant-b-profile", "tenant-b-model", 0.2),))
    return engine, jobs_a, jobs_b


@pytest.fixture
def app(world: tuple[Engine, list[str], list[str]]) -> Flask:
    return new_app(world[0], lambda job: None)


def sign_in(client: FlaskClient, key: str) -> Any:
    page = client.get("/dashboard/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token is not None
    return client.post("/dashboard/login", data={"key": key, "csrf_token": token.group(1)})


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def cells(html: str, table: str) -> dict[str, str]:
    """The data-stat cells of a page's table, as text."""
    body = html[html.index(f'<table id="{table}"'):]
    body = body[:body.index("</table>")]
    return {name: unescape(re.sub(r"<[^>]+>", "", value)).strip()
            for name, value in re.findall(r'<td data-stat="([^"]+)">(.*?)</td>', body, re.S)}


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- authentication

def test_without_a_session_pages_redirect_to_the_login_form_and_the_json_is_401(app: Flask,
                                                                               world: Any) -> None:
    client = app.test_client()
    job_id = world[1][0]
    for path in ("/dashboard/", f"/dashboard/jobs/{job_id}"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/dashboard/login")
    for path in ("/dashboard/data/overview", "/dashboard/data/jobs"):
        response = client.get(path)
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    # A bearer key is the API's, not the dashboard's: no session, no page.
    assert client.get("/dashboard/data/jobs", headers=AUTH_A).status_code == 401
    assert client.post(f"/dashboard/jobs/{job_id}/labels", data={"id": "d00-001", "human_label": "A"}).status_code == 401


def test_signing_in_keeps_only_the_keys_hash_in_a_strict_httponly_cookie(app: Flask) -> None:
    client = app.test_client()
    response = sign_in(client, KEY_A)
    assert response.status_code == 302 and response.headers["Location"].endswith("/dashboard/")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http here; over https it is Secure (next test)
    assert KEY_A not in cookie
    assert client.get("/dashboard/").status_code == 200
    assert KEY_A not in client.get("/dashboard/").get_data(as_text=True)


def test_the_cookie_is_secure_over_https(app: Flask) -> None:
    client = app.test_client()
    page = client.get("/dashboard/login", base_url="https://localhost")
    response = client.post("/dashboard/login", base_url="https://localhost",
                           data={"key": KEY_A, "csrf_token": csrf_of(page.get_data(as_text=True))})
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_wrong_key_or_a_missing_form_token_does_not_sign_in(app: Flask) -> None:
    client = app.test_client()
    response = sign_in(client, "not-a-key-of-this-service")
    assert response.status_code == 401 and "invalid or revoked key" in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302
    fresh = app.test_client()
    assert fresh.post("/dashboard/login", data={"key": KEY_A}).status_code == 403
    assert fresh.get("/dashboard/").status_code == 302


def test_posts_without_the_sessions_form_token_are_refused(app: Flask, world: Any) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    job_id = world[1][0]
    response = client.post(f"/dashboard/jobs/{job_id}/labels", data={"id": "d00-000", "human_label": "A"})
    assert response.status_code == 403
    assert client.post("/dashboard/logout", data={"csrf_token": "forged"}).status_code == 403


def test_a_revoked_key_loses_its_session(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/db.sqlite")
    key, row = repo.create_api_key(engine, "dash")
    app = new_app(engine, lambda job: None)
    client = app.test_client()
    sign_in(client, key)
    assert client.get("/dashboard/").status_code == 200
    repo.revoke_api_key(engine, str(row.id))
    assert client.get("/dashboard/").status_code == 302
    assert client.get("/dashboard/data/jobs").status_code == 401


def test_signing_out_ends_the_session(app: Flask) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    token = csrf_of(client.get("/dashboard/").get_data(as_text=True))
    assert client.post("/dashboard/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/dashboard/").status_code == 302


def test_plotly_is_served_from_the_wheel_with_long_caching(app: Flask) -> None:
    import plotly

    client = app.test_client()
    response = client.get(f"/dashboard/plotly-{plotly.__version__}.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert "max-age=31536000" in response.headers["Cache-Control"]
    assert len(response.data) > 1_000_000
    sign_in(client, KEY_A)
    page = client.get("/dashboard/").get_data(as_text=True)
    assert f'src="/dashboard/plotly-{plotly.__version__}.min.js"' in page and "cdn" not in page.lower()


# ---------------------------------------------------------------- tenants

def test_one_key_never_sees_another_keys_jobs_on_any_page(app: Flask, world: Any) -> None:
    _, jobs_a, jobs_b = world
    client = app.test_client()
    sign_in(client, KEY_B)
    pages = [client.get("/dashboard/").get_data(as_text=True),
             client.get("/dashboard/data/overview").get_data(as_text=True),
             client.get("/dashboard/data/jobs").get_data(as_text=True)]
    for page in pages:
        assert "sim-small" not in page and "sim-large" not in page
        assert not any(job_id in page for job_id in jobs_a)
    assert any(jobs_b[0] in page for page in pages)
    for job_id in jobs_a[:3]:
        assert client.get(f"/dashboard/jobs/{job_id}").status_code == 404
        response = client.post(f"/dashboard/jobs/{job_id}/labels",
                               data={"id": "d00-000", "human_label": "A", "csrf_token": csrf_of(pages[0])})
        assert response.status_code == 404
    assert client.get(f"/dashboard/jobs/{jobs_b[0]}").status_code == 200
    client_a = app.test_client()
    sign_in(client_a, KEY_A)
    assert "tenant-b" not in client_a.get("/dashboard/").get_data(as_text=True)
    assert client_a.get(f"/dashboard/jobs/{jobs_b[0]}").status_code == 404


# ---------------------------------------------------------------- the numbers

@pytest.mark.parametrize("filters", [
    {},
    {"profile": "persona-certainty"},
    {"model": "sim-large", "since": "2026-05-08", "until": "2026-05-12T06:00:00Z"},
])
def test_the_overviews_numbers_equal_the_stats_api_for_the_same_filters(app: Flask, filters: dict[str, str]) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    api = client.get("/v1/stats/agreement", query_string=filters, headers=AUTH_A).get_json()
    data = client.get("/dashboard/data/overview", query_string=filters).get_json()
    assert data["totals"] == api
    shown = cells(client.get("/dashboard/", query_string=filters).get_data(as_text=True), "totals")
    assert shown["items"] == str(api["counts"]["items"]) and shown["labelled"] == str(api["counts"]["labelled"])
    assert shown["accuracy"] == fmt(api["accuracy"])
    kappa = api["cohen_kappa"]
    assert shown["cohen_kappa"] == f"{fmt(kappa['value'])} [{fmt(kappa['ci95'][0])}, {fmt(kappa['ci95'][1])}]"
    assert shown["calls"] == str(api["cost"]["calls"]) and shown["cost_usd"] == fmt(api["cost"]["cost_usd"], 4)
    # every point of every chart is /v1/stats/agreement of the query it names
    assert data["series"] and data["per_day"]
    for point in [*data["per_day"], *data["series"][0]["points"][:3]]:
        day = client.get(f"/v1/stats/agreement?{point['query']}", headers=AUTH_A).get_json()
        assert point["accuracy"] == day["accuracy"] and point["calls"] == day["cost"]["calls"]
        assert point["cohen_kappa"] == day["cohen_kappa"]["value"] and point["cost_usd"] == day["cost"]["cost_usd"]


def test_the_overview_has_two_weeks_per_judge_and_the_days_sum_to_the_totals(app: Flask) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    data = client.get("/dashboard/data/overview").get_json()
    assert [(s["profile"], s["model"]) for s in data["series"]] == [
        ("persona-certainty", "sim-large"), ("persona-certainty", "sim-small"), ("persona-tie", "sim-small")]
    assert len(data["per_day"]) == 14 and all(len(s["points"]) == 14 for s in data["series"])
    assert sum(p["calls"] for p in data["per_day"]) == data["totals"]["cost"]["calls"]
    assert sum(p["items"] for p in data["per_day"]) == data["totals"]["cost"]["items"]


def test_a_bad_filter_is_a_400_naming_it(app: Flask) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    response = client.get("/dashboard/data/overview?since=yesterday")
    assert response.status_code == 400 and response.get_json()["error"]["details"][0]["field"] == "since"


# ---------------------------------------------------------------- a job's page

def test_the_job_page_shows_the_api_report_and_labelling_from_its_queue_changes_it(app: Flask, world: Any) -> None:
    job_id = world[1][-1]
    client = app.test_client()
    sign_in(client, KEY_A)
    before = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    queue = client.get(f"/v1/jobs/{job_id}/queue", headers=AUTH_A).get_json()["items"]
    assert queue
    page = client.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    shown = cells(page, "report")
    assert shown["labelled"] == str(before["counts"]["labelled"]) and shown["accuracy"] == fmt(before["accuracy"])
    assert all(f'data-item="{entry["item"]["id"]}"' in page for entry in queue)
    item = queue[0]["item"]["id"]
    winner = queue[0]["verdict"]["winner"]
    response = client.post(f"/dashboard/jobs/{job_id}/labels",
                           data={"id": item, "human_label": winner, "csrf_token": csrf_of(page)})
    assert response.status_code == 302
    after = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    assert after["counts"]["labelled"] == before["counts"]["labelled"] + 1
    assert after["counts"]["correct"] == before["counts"]["correct"] + 1
    page = client.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert cells(page, "report")["labelled"] == str(after["counts"]["labelled"])
    assert f'data-item="{item}"' not in page
    # put it back for the other tests of this module's database
    client.post(f"/v1/jobs/{job_id}/labels", json=[{"id": item, "human_label": None}], headers=AUTH_A)


def test_a_label_outside_a_b_tie_or_an_unknown_item_is_a_422(app: Flask, world: Any) -> None:
    job_id = world[1][-1]
    client = app.test_client()
    sign_in(client, KEY_A)
    token = csrf_of(client.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True))
    for data in ({"id": "d13-000", "human_label": "C"}, {"id": "no-such-item", "human_label": "A"}):
        response = client.post(f"/dashboard/jobs/{job_id}/labels", data={**data, "csrf_token": token})
        assert response.status_code == 422


def test_another_keys_bearer_header_changes_nothing_on_a_page(app: Flask, world: Any) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    page = client.get("/dashboard/", headers=AUTH_B).get_data(as_text=True)
    assert "tenant-b" not in page and "sim-small" in page


def test_a_cascades_job_page_shows_its_stages_and_queue_from_the_report(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/db.sqlite")
    app = new_app(engine, lambda job: None)
    client = app.test_client()
    job_id = cascade_job(client, engine)
    report = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A).get_json()
    stages = report["cascade_stages"]["stages"]
    sign_in(client, KEY_A)
    page = client.get(f"/dashboard/jobs/{job_id}").get_data(as_text=True)
    assert 'id="chart-stages"' in page
    table = page[page.index('<table id="stages"'):]
    rows = re.findall(r"<tr><td>(\d+)</td>.*?</tr>", table[:table.index("</table>")], re.S)
    assert len(rows) == len(stages) == 3
    for stage in stages:
        assert f"<td>{stage['reached']}</td><td>{stage['accepted']}</td>" in table
    queue = client.get(f"/v1/jobs/{job_id}/queue", headers=AUTH_A).get_json()["items"]
    assert [e["item"]["id"] for e in queue] == re.findall(r'<tr data-item="([^"]+)">', page)


def test_failed_sign_ins_count_against_the_addresss_authentication_limit(world: Any) -> None:
    app = new_app(world[0], lambda job: None, PJUDGE_AUTH_FAILURES_PER_MINUTE="2")
    client = app.test_client()
    for _ in range(2):
        assert sign_in(client, "wrong-key-0123456789").status_code == 401
    response = sign_in(client, "another-wrong-key-012345")
    assert response.status_code == 401 and "too many failed sign-ins" in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 302
    # as for the API, a key known to be good (here listed in PJUDGE_API_KEYS) still gets in
    assert sign_in(client, KEY_A).status_code == 302 and client.get("/dashboard/").status_code == 200


# ---------------------------------------------------------------- issue 17's remaining charts and tables

def close(got: Any, want: Any, path: str = "") -> None:
    """Equal, floats to 1e-9 (SQL and numpy sum the float columns in different orders)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, set(got) ^ set(want))
        for key in want:
            close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=0, abs=1e-9), (path, got, want)
    else:
        assert got == want, (path, got, want)


def test_without_a_session_the_new_pages_redirect_and_their_json_is_401(app: Flask) -> None:
    client = app.test_client()
    for path in ("/dashboard/groups", "/dashboard/groups?group_by=profile"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/dashboard/login")
    for path in ("/dashboard/data/groups?group_by=day", "/dashboard/data/groups"):
        response = client.get(path, headers=AUTH_A)  # a bearer key is no session
        assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/v1/stats/agreement?per_day=true").status_code == 401


def test_the_per_day_charts_are_the_stats_apis_per_day_and_each_point_its_own_query(app: Flask) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    filters = {"profile": "persona-certainty", "since": "2026-05-06T05:30:00Z"}
    data = client.get("/dashboard/data/overview", query_string=filters).get_json()
    api = client.get(f"/v1/stats/agreement?{data['per_day_query']}", headers=AUTH_A).get_json()
    assert data["per_day_query"] == "profile=persona-certainty&since=2026-05-06T05%3A30%3A00%2B00%3A00&per_day=true"
    assert [p["day"] for p in data["per_day"]] == [d["day"] for d in api["per_day"]]
    assert [(s["profile"], s["model"]) for s in data["series"]] == [
        ("persona-certainty", "sim-large"), ("persona-certainty", "sim-small")]
    names = ("accuracy", "first_position_rate", "position_consistency", "prefers_longer", "ece")
    for i, day in enumerate(api["per_day"]):
        assert [data["per_day"][i][name] for name in names] == [day[name] for name in names]
        assert data["per_day"][i]["krippendorff_alpha_ci95"] == day["krippendorff_alpha"]["ci95"]
        for series, judge in zip(data["series"], day["by_judge"], strict=True):
            point = series["points"][i]
            assert [point[name] for name in names] == [judge[name] for name in names]
    # and each point is /v1/stats/agreement over its own day (and judge)
    for point in [data["per_day"][0], data["series"][1]["points"][-1], data["series"][0]["points"][3]]:
        day = client.get(f"/v1/stats/agreement?{point['query']}", headers=AUTH_A).get_json()
        for name in names:
            assert point[name] == day[name], name
        assert point["krippendorff_alpha"] == day["krippendorff_alpha"]["value"]
        assert point["cohen_kappa_ci95"] == day["cohen_kappa"]["ci95"]
    page = client.get("/dashboard/", query_string=filters).get_data(as_text=True)
    assert unescape(f"GET /v1/stats/agreement?{data['per_day_query']}") in unescape(page)
    for chart in ("chart-alpha", "chart-first-position", "chart-consistency", "chart-longer", "chart-coverage",
                  "chart-reliability"):
        assert f'id="{chart}"' in page


def test_the_overview_reads_the_days_in_a_few_queries_whatever_their_number(app: Flask, world: Any) -> None:
    from sqlalchemy import event

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    client = app.test_client()
    sign_in(client, KEY_A)
    event.listen(world[0], "before_cursor_execute", record)
    try:
        client.get("/dashboard/data/overview")
        two_weeks = len(statements)
        statements.clear()
        client.get("/dashboard/data/overview?since=2026-05-16")
        two_days = len(statements)
    finally:
        event.remove(world[0], "before_cursor_execute", record)
    assert two_weeks == two_days < 25, (two_weeks, two_days)


def pjudge_report(tmp_path: Path, engine: Engine, owner: str, *args: str) -> dict[str, Any]:
    """`pjudge report --format json` on the owner's stored verdicts."""
    import json

    from store.queries import VerdictFilter, agreement_verdicts
    from tests.support.cli import run_pjudge

    path = tmp_path / "verdicts.jsonl"
    path.write_text("".join(v.model_dump_json() + "\n" for v in agreement_verdicts(engine, VerdictFilter(owner))))
    result = run_pjudge("report", str(path), "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_coverage_reliability_and_groups_equal_the_stats_api_and_pjudge_report(app: Flask, world: Any,
                                                                             tmp_path: Path) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    api = client.get("/v1/stats/agreement?group_by=day", headers=AUTH_A).get_json()
    cli = pjudge_report(tmp_path, world[0], repo.hash_key(KEY_A), "--group-by", "day")
    overview = client.get("/dashboard/data/overview").get_json()["totals"]
    for name in ("coverage_curve", "reliability", "ece", "brier"):
        assert overview[name] == api[name]
        close(overview[name], cli[name], name)
    groups = client.get("/dashboard/data/groups?group_by=day").get_json()
    assert groups["report"] == api and groups["query"] == "group_by=day"
    page = client.get("/dashboard/groups?group_by=day").get_data(as_text=True)
    assert "GET /v1/stats/agreement?group_by=day" in page and 'id="chart-groups-accuracy"' in page
    rows = re.findall(r'<tr data-group="([^"]+)">(.*?)</tr>', page, re.S)
    assert sorted(name for name, _ in rows) == sorted(api["by_group"]) == sorted(cli["by_group"])
    for name, row in rows:
        shown = {stat: unescape(re.sub(r"<[^>]+>", "", value)).strip()
                 for stat, value in re.findall(r'<td data-stat="([^"]+)">(.*?)</td>', row, re.S)}
        want, other = api["by_group"][name], cli["by_group"][name]
        kappa = want["cohen_kappa"]
        assert shown["items"] == str(want["counts"]["items"]) == str(other["counts"]["items"])
        assert shown["accuracy"] == fmt(want["accuracy"]) == fmt(other["accuracy"])
        assert shown["cohen_kappa"] == f"{fmt(kappa['value'])} [{fmt(kappa['ci95'][0])}, {fmt(kappa['ci95'][1])}]"
        assert kappa == other["cohen_kappa"]
        for stat in ("first_position_rate", "position_consistency", "prefers_longer"):
            assert shown[stat] == fmt(want[stat]) and want[stat] == other[stat]
    # the builtin groups, and the keys offered
    by_model = client.get("/dashboard/data/groups?group_by=model&since=2026-05-10").get_json()
    assert sorted(by_model["report"]["by_group"]) == ["sim-large", "sim-small"]
    assert '<option selected>day</option>' in page and "<option>profile</option>" in page


def test_one_key_never_sees_another_keys_groups_or_days(app: Flask, world: Any) -> None:
    _, jobs_a, jobs_b = world
    client = app.test_client()
    sign_in(client, KEY_B)
    for group_by in ("job", "profile", "model", "day"):
        for path in (f"/dashboard/groups?group_by={group_by}", f"/dashboard/data/groups?group_by={group_by}"):
            page = client.get(path).get_data(as_text=True)
            assert "sim-small" not in page and "sim-large" not in page and "persona-certainty" not in page
            assert not any(job_id in page for job_id in jobs_a)
    assert jobs_b[0] in client.get("/dashboard/groups?group_by=job").get_data(as_text=True)
    data = client.get("/dashboard/data/overview").get_json()
    assert [(s["profile"], s["model"]) for s in data["series"]] == [("tenant-b-profile", "tenant-b-model")]
    assert len(data["per_day"]) == 2


def test_a_bad_group_by_or_per_day_threshold_is_a_400_naming_the_field(app: Flask) -> None:
    client = app.test_client()
    sign_in(client, KEY_A)
    response = client.get("/dashboard/data/groups?group_by=" + "k" * 300)
    assert response.status_code == 400 and response.get_json()["error"]["details"][0]["field"] == "group_by"
    response = client.get("/v1/stats/agreement?per_day=true&threshold=0.837", headers=AUTH_A)
    error = response.get_json()["error"]
    assert response.status_code == 400 and "0.01 grid" in error["message"] and error["details"][0]["field"] == "per_day"
