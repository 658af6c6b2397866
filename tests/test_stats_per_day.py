"""store.stats.per_day (GET /v1/stats/agreement?per_day=true): the statistics per UTC day and judge
from one query grouped by day and judge equal, key for key, the report of the same selection
narrowed to each day's since and until (and judge), on SQLite and PostgreSQL, including cut hours
at since and until."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from store import repo
from store.stats import Selection, days, per_day, report
from tests.support.api import KEY_A, KEY_B, T_DASHBOARD, simulated_jobs

OWNER = repo.hash_key(KEY_A)
RESAMPLES = 50  # the bootstrap's settings only need to be the same on both sides
LEFT_OUT = ("hitl", "risk_control", "by_group", "group_by", "simulated", "models", "bootstrap")


def populate(engine: Engine) -> None:
    simulated_jobs(engine, OWNER, seed=5, days=4, n=12)
    simulated_jobs(engine, repo.hash_key(KEY_B), seed=6, days=2, n=8, judges=(("b-profile", "b-model", 0.2),))


def single_day(engine: Engine, selection: Selection, since: str, until: str, judge: tuple[str, str] | None = None
               ) -> dict[str, Any]:
    """The report of the selection narrowed to [since, until) (and the judge): what
    /v1/stats/agreement answers for the day's query."""
    narrowed = Selection(owner=selection.owner, profile=judge[0] if judge else selection.profile,
                         model=judge[1] if judge else selection.model,
                         since=datetime.fromisoformat(since), until=datetime.fromisoformat(until))
    out = report(engine, narrowed, bootstrap_resamples=RESAMPLES)
    assert out is not None
    return {key: value for key, value in out.items() if key not in LEFT_OUT}


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Equal, floats to 1e-9: SQL sums the float columns (Brier, confidences) in another order."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, set(got) ^ set(want))
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, float) and math.isclose(got, want, rel_tol=0, abs_tol=1e-9), (path, got, want)
    else:
        assert got == want and type(got) is type(want), (path, got, want)


def check(engine: Engine, selection: Selection) -> list[dict[str, Any]]:
    entries = per_day(engine, selection, bootstrap_resamples=RESAMPLES)
    for entry in entries:
        day = {key: value for key, value in entry.items() if key not in ("day", "since", "until", "by_judge")}
        assert_same(day, single_day(engine, selection, entry["since"], entry["until"]), entry["day"])
        for judge in entry["by_judge"]:
            got = {key: value for key, value in judge.items() if key not in ("profile", "model")}
            want = single_day(engine, selection, entry["since"], entry["until"], (judge["profile"], judge["model"]))
            assert_same(got, want, f'{entry["day"]} {judge["profile"]} {judge["model"]}')
    return entries


def test_each_day_and_judge_equals_the_report_of_that_day(engine: Engine) -> None:
    populate(engine)
    entries = check(engine, Selection(owner=OWNER))
    assert [e["day"] for e in entries] == [(T_DASHBOARD + timedelta(days=d)).date().isoformat() for d in range(4)]
    assert all(len(e["by_judge"]) == 3 for e in entries)
    assert all("b-profile" not in str(e) for e in entries)  # another key's verdicts never count
    total = report(engine, Selection(owner=OWNER), bootstrap_resamples=RESAMPLES)
    assert total is not None
    assert sum(e["counts"]["items"] for e in entries) == total["counts"]["items"]
    assert sum(e["cost"]["calls"] for e in entries) == total["cost"]["calls"]


def test_cut_hours_filters_and_an_empty_range(engine: Engine) -> None:
    populate(engine)
    since = T_DASHBOARD + timedelta(days=1, hours=3, minutes=17, seconds=5)
    until = T_DASHBOARD + timedelta(days=3, hours=5, minutes=43)
    entries = check(engine, Selection(owner=OWNER, since=since, until=until))
    assert entries[0]["since"] == since.isoformat() and entries[-1]["until"] == until.isoformat()
    assert len(entries) == 3
    check(engine, Selection(owner=OWNER, profile="persona-certainty", since=since))
    check(engine, Selection(owner=OWNER, model="sim-small", until=until))
    assert per_day(engine, Selection(owner=OWNER, since=until, until=since)) == []
    assert per_day(engine, Selection(owner="nobody")) == []


def test_at_most_the_last_days_and_only_thresholds_on_the_grid(engine: Engine) -> None:
    populate(engine)
    got = days(engine, Selection(owner=OWNER), max_days=2)
    assert [d.start.date() for d in got] == [(T_DASHBOARD + timedelta(days=d)).date() for d in (2, 3)]
    assert got[0].start == datetime(2026, 5, 6, tzinfo=UTC)
    with pytest.raises(ValueError, match="0.01 grid"):
        days(engine, Selection(owner=OWNER), threshold=0.837)
