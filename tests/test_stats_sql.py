"""The dashboard statistics from the SQL summaries (store.stats) equal calibration.report.build_report
on the same stored verdicts: random verdict sets with ties, null winners, unlabelled items, missing
orders, metadata groups, labels changed afterwards, redelivered batches and several hours of
created_at, on SQLite and PostgreSQL (PJUDGE_TEST_POSTGRES_URL)."""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine

from calibration.counts import FIELD
from calibration.report import build_report
from judge.profiles import JudgeProfile
from judge.records import Call, PairItem, Verdict
from store import bulk, repo, stats, summaries
from store.db import create_db_engine, migrate
from store.models import CallRow, Job, JobItem, VerdictRow, summary_main
from store.rows import call_from_row, call_row, verdict_from_row, verdict_row
from store.stats import Selection
from tests.support.random_verdicts import make_items, random_verdict

OWNER, OTHER = "owner-a", "owner-b"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
TOLERANCE = 1e-9
# build_report's own extras that need every verdict's certainty level (see store.stats)
NOT_FROM_COUNTS = {"coverage_auc"}
REPORT_ONLY = {"by_group", "group_by", "simulated", "models", "bootstrap"}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 8 positions, so that the HITL cut walks several chunks and jobs."""
    monkeypatch.setattr(summaries, "CHUNK", 8)


# ---------------------------------------------------------------- random verdicts (tests/support/random_verdicts.py)

def populate(engine: Engine, seed: int, jobs: int = 4, n: int = 60) -> list[str]:
    """Jobs of the owner (and one of another owner), verdicts in shuffled batches over several hours
    (some delivered twice), then labels changed on some verdicts and on some items before judging."""
    rng = random.Random(seed)
    job_ids = []
    for j in range(jobs + 1):
        owner = OWNER if j < jobs else OTHER
        profile = JudgeProfile(name=rng.choice(["persona-certainty", "persona-tie"]), provider="openai",
                               model=rng.choice(["gpt-4o", "sim-judge"]))
        items = make_items(rng, rng.randint(n // 2, n))
        job = repo.create_job(engine, owner, items, profile).job
        job_ids.append(job.id)
        # labels attached before judging reach the verdicts through the items
        repo.attach_labels(engine, job.id, [(it.id, rng.choice(["A", "B", None])) for it in rng.sample(items, 3)])
        stored = repo.job_items(engine, job.id, 0, len(items))
        verdicts = [(pos, random_verdict(rng, item, profile.name, profile.model)) for pos, item in stored]
        rng.shuffle(verdicts)
        start = 0
        while start < len(verdicts):
            size = rng.randint(1, 16)
            when = T0 + timedelta(minutes=rng.randint(0, 5 * 60), microseconds=rng.randint(0, 999_999))
            batch = verdicts[start:start + size]
            repo.record_verdicts(engine, job.id, batch, now=when)
            if rng.random() < 0.3:  # a redelivery, partly overlapping the next batch
                repo.record_verdicts(engine, job.id, verdicts[start:start + size + 2], now=when)
            start += size
        for _ in range(2):
            changed = [(it.id, rng.choice(["A", "B", "tie", None])) for it in rng.sample(items, len(items) // 4)]
            repo.attach_labels(engine, job.id, changed)
    return job_ids


# ---------------------------------------------------------------- the reference

def stored_verdicts(engine: Engine, selection: Selection) -> list[tuple[str, Verdict]]:
    """(job id, verdict) of the selection in input order, read back as the legacy routes read them."""
    query = select(VerdictRow).join(Job, Job.id == VerdictRow.job_id)
    if selection.owner is not None:
        query = query.where(Job.owner == selection.owner)
    if selection.job_id is not None:
        query = query.where(VerdictRow.job_id == selection.job_id)
    if selection.profile is not None:
        query = query.where(VerdictRow.profile == selection.profile)
    if selection.model is not None:
        query = query.where(VerdictRow.model == selection.model)
    if selection.since is not None:
        query = query.where(VerdictRow.created_at >= selection.since)
    if selection.until is not None:
        query = query.where(VerdictRow.created_at < selection.until)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(Job.created_at, VerdictRow.job_id, VerdictRow.position)).all()
        calls: dict[tuple[str, str], list[Call]] = {}
        jobs = sorted({r.job_id for r in rows})  # the calls of other jobs are never looked up
        for call in conn.execute(select(CallRow).where(CallRow.job_id.in_(jobs))
                                 .order_by(CallRow.job_id, CallRow.item_id, CallRow.order, CallRow.sample)):
            calls.setdefault((call.job_id, call.item_id), []).append(call_from_row(call))
    return [(r.job_id, verdict_from_row(r, calls.get((r.job_id, r.item_id), []))) for r in rows]


def reference(engine: Engine, selection: Selection, group_by: str | None = None, **options: Any) -> dict[str, Any]:
    pairs = stored_verdicts(engine, selection)
    verdicts = [v for _, v in pairs]
    if group_by not in stats.BUILTIN_GROUPS:
        out = build_report(verdicts, group_by=group_by, **options)
    else:  # by profile, model or job: build_report of each group's verdicts
        out = build_report(verdicts, **options)
        keys = [{"profile": v.judge.profile, "model": v.judge.model, "job": job}[group_by] for job, v in pairs]
        out["by_group"] = {
            key: {k: v for k, v in build_report([v for k2, v in zip(keys, verdicts, strict=True) if k2 == key],
                                                **options).items() if k not in REPORT_ONLY}
            for key in sorted(set(keys))}
        out["group_by"] = group_by
    return out


def assert_same(got: Any, want: Any, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        want = {k: v for k, v in want.items() if k not in NOT_FROM_COUNTS}
        assert set(got) == set(want), (path, set(got) ^ set(want))
        for key in want:
            assert_same(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, int | float) and not isinstance(got, bool), (path, got, want)
        assert math.isclose(got, want, rel_tol=0, abs_tol=TOLERANCE), (path, got, want)
    else:
        assert got == want and type(got) is type(want), (path, got, want)


def check(engine: Engine, selection: Selection, group_by: str | None = None, **options: Any) -> dict[str, Any]:
    got = stats.report(engine, selection, group_by=group_by, builtin_groups=True, **options)
    assert got is not None
    assert_same(got, reference(engine, selection, group_by, **options))
    return got


# ---------------------------------------------------------------- tests

# One seed in the fast tier; the other two (each a second of CPU or more) in the full suite.
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)])
def test_summaries_equal_build_report(engine: Engine, seed: int) -> None:
    job_ids = populate(engine, seed)
    everything = Selection(owner=OWNER)
    report = check(engine, everything)
    assert report["counts"]["items"] > 100 and report["hitl"]["n_sent"] > 0
    check(engine, everything, hitl=0.37, target_accuracy=0.55, delta=0.2)
    check(engine, everything, threshold=0.733, hitl=1.0)  # off the 0.01 grid: SQL split
    check(engine, everything, threshold=0.7, hitl=0.0, target_accuracy=0.9)
    for threshold in (0.0, 0.37, 0.99, 1.0):  # on the grid: summed fields only
        check(engine, everything, threshold=threshold)
    for key in ("dataset", "group", "maybe", "profile", "model", "job"):
        check(engine, everything, group_by=key, hitl=0.3)
    check(engine, everything, group_by="dataset", threshold=0.555, target_accuracy=0.6)
    check(engine, everything, group_by="absent-key")
    for job_id in job_ids[:-1]:
        check(engine, Selection(job_id=job_id), hitl=0.45, target_accuracy=0.5)
        check(engine, Selection(job_id=job_id), group_by="group")


def test_more_sets_than_an_in_list_takes_read_the_same_report(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """group_by=job over more jobs than PostgreSQL binds parameters (65,535) put every job and cut
    value in one IN list: past bulk.MAX_IN_LIST the rows are matched in Python only, and the jobs'
    creation times are read a slice at a time. Forced here at 1."""
    populate(engine, 4)
    everything = Selection(owner=OWNER)
    filtered = {key: check(engine, everything, group_by=key, hitl=0.3) for key in ("job", "group")}
    monkeypatch.setattr(bulk, "MAX_IN_LIST", 1)
    for key, report in filtered.items():
        assert check(engine, everything, group_by=key, hitl=0.3) == report


@pytest.mark.slow  # seconds of CPU: four jobs, three thresholds, both sides
def test_an_off_grid_split_next_to_a_grid_point_or_past_the_grid_equals_build_report(engine: Engine) -> None:
    """An off-grid threshold reads the verdicts of the one certainty bin it cuts and the histogram
    for the rest (calibration.counts.split_from_bin): certainties equal to the grid point just below
    or above it (0.8 and 0.7 are common here) fall on the right side, and thresholds outside [0, 1]
    split like build_report's."""
    populate(engine, 4)
    everything = Selection(owner=OWNER)
    for threshold in (0.800000001, 0.799999999, 0.700000001, 0.010000001, 0.999999999, 1.5, -0.25):
        check(engine, everything, threshold=threshold)
    check(engine, everything, group_by="dataset", threshold=0.800000001, target_accuracy=0.6)
    check(engine, everything, group_by="job", threshold=0.699999999)


@pytest.mark.slow  # seconds of CPU: many selections
def test_filters_and_exact_time_ranges(engine: Engine) -> None:
    populate(engine, 7, jobs=3)
    with engine.connect() as conn:
        profiles = conn.execute(select(VerdictRow.profile).distinct()).scalars().all()
        models = conn.execute(select(VerdictRow.model).distinct()).scalars().all()
    for profile in profiles:
        check(engine, Selection(owner=OWNER, profile=profile), group_by="dataset")
    for model in models:
        check(engine, Selection(owner=OWNER, model=model), hitl=0.5)
    minute = timedelta(minutes=1)
    ranges = [
        (T0 + 37 * minute + timedelta(microseconds=17), T0 + 3 * 60 * minute + 11 * minute),  # both ends cut
        (T0 + 60 * minute, T0 + 3 * 60 * minute),  # whole hours
        (T0 + 61 * minute, T0 + 119 * minute),  # inside one hour
        (T0 + 130 * minute, None),
        (None, T0 + 130 * minute),
        (T0 + 200 * minute, T0 + 100 * minute),  # empty
    ]
    for since, until in ranges:
        selection = Selection(owner=OWNER, since=since, until=until)
        check(engine, selection, hitl=0.4, target_accuracy=0.55)
        check(engine, selection, group_by="dataset", hitl=0.25)
        check(engine, selection, group_by="job", threshold=0.615)


def test_summaries_are_the_sum_of_their_verdicts(engine: Engine) -> None:
    """Relabels and redeliveries leave the summaries equal to a rebuild from the verdict rows."""
    populate(engine, 11, jobs=2)
    with engine.connect() as conn:
        query = stats._Query(conn, Selection(owner=OWNER), stats.Grouping.of("dataset", False), risk=True)
        from_summaries, _ = query.counts()
        from_verdicts = query._verdict_counts(None, None, set())
    assert from_summaries[None]["items"] == sum(c["items"] for c in from_verdicts.values()) > 0
    read = [FIELD[name] for name in stats._main_fields(0.8)[0] if name in FIELD]  # what a report reads
    for name, counts in from_verdicts.items():
        summed = from_summaries[name]
        assert (summed.ints[read] == counts.ints[read]).all(), name
        assert summed.floats == pytest.approx(counts.floats, abs=TOLERANCE)
        assert (summed.risk == counts.risk).all()
        hitl = {k: v for k, v in summed.hitl.items() if v.any()}
        assert hitl.keys() == counts.hitl.keys() and all((hitl[k] == counts.hitl[k]).all() for k in hitl)


def test_metadata_that_cannot_be_summarized_falls_back(engine: Engine) -> None:
    rng = random.Random(5)
    items = make_items(rng, 40)
    items = [it.model_copy(update={"metadata": {**it.metadata, "persona_id": f"u{i}", "note": "x" * 300}})
             for i, it in enumerate(items)]
    profile = JudgeProfile(name="persona-certainty", provider="openai", model="gpt-4o")
    job = repo.create_job(engine, OWNER, items, profile).job
    plan = json.loads(job.summary_keys or "{}")
    assert plan["dataset"] and not plan["note"] and plan["persona_id"]  # 40 values: under the limit
    verdicts = [(p, random_verdict(rng, it, profile.name, profile.model)) for p, it in repo.job_items(engine, job.id, 0, 40)]
    extra = verdicts[0][1].model_copy(update={"metadata": {"late": 1}})
    repo.record_verdicts(engine, job.id, [*verdicts[1:], (0, extra)])
    selection = Selection(owner=OWNER)
    assert stats.report(engine, selection, group_by="note") is None  # too long: from the verdicts
    assert stats.report(engine, selection, group_by="late") is None  # unknown when the job was made
    check(engine, selection, group_by="persona_id")
    check(engine, selection, group_by="dataset")


# Metadata keys that collide with the summaries' own names: "" is the ungrouped rows' group_key,
# "(missing)" the name of the null group; and keys and values too long to be summarized.
KEYS = st.sampled_from(["", "g", "(missing)", " ", "dataset", "é", "k" * 129, "k" * 256, "0", "\x00"]) | st.text(max_size=6)
VALUES = (st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "(missing)", "x", "v" * 201, "0", "a\x00"])
          | st.text(max_size=4) | st.lists(st.integers(0, 1), max_size=2) | st.dictionaries(st.sampled_from("ab"),
                                                                                              st.integers(0, 1)))


@pytest.mark.slow  # 25 random examples
@given(data=st.data())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_metadata_keys_never_break_the_summed_report(engine: Engine, data: st.DataObject) -> None:
    """Whatever the metadata keys and values, the report summed in SQL (overall and by any key) is
    build_report's on the same verdicts, and it never errors (a key "" made the HITL cut fail)."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = random.Random(seed)
    owner = f"prop-{uuid.uuid4()}"  # one engine for all examples: each example is its own owner
    keys = data.draw(st.lists(KEYS, min_size=1, max_size=4, unique=True), label="keys")
    profile = JudgeProfile(name="persona-certainty", provider="openai", model="gpt-4o")
    for j in range(data.draw(st.integers(1, 2), label="jobs")):
        n = data.draw(st.integers(1, 24), label="items")
        items = [PairItem(id=f"it-{i}", prompt="p", response_a="a" * rng.randint(1, 80),
                          response_b="b" * rng.randint(1, 80), human_label=rng.choice(["A", "B", "tie", None]),
                          metadata={key: data.draw(VALUES) for key in keys if data.draw(st.booleans())})
                 for i in range(n)]
        job = repo.create_job(engine, owner, items, profile).job
        verdicts = [(p, random_verdict(rng, it, profile.name, profile.model))
                    for p, it in repo.job_items(engine, job.id, 0, n)]
        repo.record_verdicts(engine, job.id, verdicts, now=T0 + timedelta(minutes=37 * j))
    selection = Selection(owner=owner)
    hitl = data.draw(st.sampled_from([0.2, 0.5, 1.0]), label="hitl")
    check(engine, selection, hitl=hitl, bootstrap_resamples=20)
    for key in [*keys, "g"]:
        got = stats.report(engine, selection, group_by=key, hitl=hitl, bootstrap_resamples=20)
        if got is None:  # not summarized under this key: the API reads the verdicts
            with engine.connect() as conn:
                assert summaries.never_summarized(key) or stats.overflowed(conn, selection, key)
            continue
        assert_same(got, reference(engine, selection, key, hitl=hitl, bootstrap_resamples=20))


def test_migration_0007_fingerprints_keyed_jobs_and_summarizes_anew_those_that_grouped_a_key_named_empty(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    items = [it.model_copy(update={"metadata": {"": rng.choice(["x", "y", ""]), "g": i % 2}})
             for i, it in enumerate(make_items(rng, 30))]
    profile = JudgeProfile(name="persona-certainty", provider="openai", model="gpt-4o")
    with monkeypatch.context() as patched:  # summarized as before the fix: "" rows beside the totals
        patched.setattr(summaries, "_fits", lambda key, name: True)
        job = repo.create_job(engine, OWNER, items, profile).job
        assert json.loads(job.summary_keys or "{}")[""] is True
        repo.record_verdicts(engine, job.id, [(p, random_verdict(rng, it, profile.name, profile.model))
                                              for p, it in repo.job_items(engine, job.id, 0, 30)])
    with pytest.raises((AssertionError, ValueError)):  # the "" rows counted into the totals
        check(engine, Selection(owner=OWNER), group_by="g")
    keyed = repo.create_job(engine, OTHER, items[:5], profile, idempotency_key="k-1").job
    _down_to(engine, "0006")
    migrate(engine)
    # A job stored with an Idempotency-Key before 0007 gets its request's fingerprint.
    assert repo.get_job(engine, keyed.id).request_fingerprint == keyed.request_fingerprint is not None  # type: ignore[union-attr]
    assert repo.create_job(engine, OTHER, items[:5], profile, idempotency_key="k-1").same_request
    assert not repo.create_job(engine, OTHER, items[1:6], profile, idempotency_key="k-1").same_request
    check(engine, Selection(owner=OWNER), group_by="g", hitl=0.5)
    check(engine, Selection(job_id=job.id), hitl=0.3)
    assert stats.report(engine, Selection(owner=OWNER), group_by="") is None  # from the verdicts


def _down_to(engine: Engine, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path}/old.sqlite")
        yield engine
        engine.dispose()
        return
    from tests.support.services import create_postgres_database, drop_postgres_database

    url = create_postgres_database()
    engine = create_db_engine(database_url_of(url))
    yield engine
    engine.dispose()
    drop_postgres_database(url)


def database_url_of(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def test_migrations_summarize_the_verdicts_stored_before(unmigrated: Engine) -> None:
    engine = unmigrated
    migrate(engine, "0002")
    rng = random.Random(21)
    with engine.begin() as conn:  # rows as the code before 0003 wrote them
        verdict_columns = {column["name"] for column in sa_inspect(conn).get_columns("verdicts")}
        call_columns = {column["name"] for column in sa_inspect(conn).get_columns("calls")}
        for j in range(3):
            profile = JudgeProfile(name="persona-certainty", provider="openai", model=f"model-{j % 2}")
            items = make_items(rng, 50)
            job = Job(id=f"00000000-0000-0000-0000-00000000000{j}", owner=OWNER, profile_name=profile.name,
                      provider=profile.provider, model=profile.model, profile_json=profile.model_dump_json(),
                      n_items=len(items), created_at=T0 + timedelta(seconds=j))
            conn.execute(insert(Job.__table__), [job.model_dump(exclude={"summary_keys", "request_fingerprint",
                                                                               "max_cost_usd", "open_for_items",
                                                                               "plan_state", "quota_at"})])
            conn.execute(insert(JobItem.__table__), [
                {"job_id": job.id, "item_id": it.id, "position": i, "item_json": it.model_dump_json()}
                for i, it in enumerate(items)])
            for i, item in enumerate(items):
                verdict = random_verdict(rng, item, profile.name, profile.model)
                when = T0 + timedelta(minutes=rng.randint(0, 180))
                conn.execute(insert(VerdictRow.__table__), [  # without the columns of later migrations
                    {k: v for k, v in verdict_row(job.id, i, verdict, when).items() if k in verdict_columns}])
                if verdict.calls:
                    conn.execute(insert(CallRow.__table__), [  # without the columns of later migrations
                        {k: v for k, v in call_row(job.id, item.id, call, when).items() if k in call_columns}
                        for call in verdict.calls])
    migrate(engine, "0003")  # the summary tables, empty
    migrate(engine)  # 0004: the cumulative layout, filled
    with engine.connect() as conn:  # 0017: each job counts in the daily quota from its creation
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM jobs WHERE quota_at = created_at").scalar_one() == 3
    check(engine, Selection(owner=OWNER), hitl=0.3)
    check(engine, Selection(owner=OWNER, since=T0 + timedelta(minutes=50)), group_by="dataset", target_accuracy=0.6)
    check(engine, Selection(job_id="00000000-0000-0000-0000-000000000001"), group_by="group")


@pytest.mark.slow
def test_migration_0004_converts_stored_summaries_both_ways(unmigrated: Engine) -> None:
    """A database with live summaries goes down to 0003's per-bin histogram and back up to the
    cumulative one in place: the bins equal the verdicts' own, and the statistics stay exact."""
    from alembic import command
    from alembic.config import Config

    from store.db import MIGRATIONS

    engine = unmigrated
    migrate(engine)
    populate(engine, 5, jobs=2, n=40)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with engine.connect() as conn:
        bins = dict(conn.exec_driver_sql(
            "SELECT stat_certainty_bin, COUNT(*) FROM verdicts WHERE winner IN ('A', 'B') "
            "AND stat_certainty_bin IS NOT NULL GROUP BY stat_certainty_bin").all())
        stored = conn.exec_driver_sql(
            "SELECT " + ", ".join(f"SUM(cert_n_{'m1' if k < 0 else k})" for k in range(-1, 101))
            + " FROM summary_main WHERE group_key = '' AND hour = -1").one()  # the jobs' totals
    assert len(bins) > 5
    assert [int(v or 0) for v in stored] == [bins.get(k, 0) for k in range(-1, 101)]
    migrate(engine)
    check(engine, Selection(owner=OWNER), hitl=0.3, target_accuracy=0.6)
    check(engine, Selection(owner=OWNER), group_by="dataset", threshold=0.42)


def test_models_match_the_migrations(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_record_verdicts_writes_a_handful_of_statements(engine: Engine) -> None:
    populate(engine, 3, jobs=1, n=20)
    with engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(summary_main)).scalar_one()
    assert rows > 0
    job = repo.create_job(engine, OWNER, make_items(random.Random(1), 16),
                          JudgeProfile(name="persona-certainty", provider="openai", model="m")).job
    items = repo.job_items(engine, job.id, 0, 16)
    batch = [(p, random_verdict(random.Random(p), it, "persona-certainty", "m")) for p, it in items]
    statements: list[str] = []
    from sqlalchemy import event

    def count_statement(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count_statement)
    try:
        assert repo.record_verdicts(engine, job.id, batch) == 16
    finally:
        event.remove(engine, "before_cursor_execute", count_statement)
    writes = [s for s in statements if not s.lstrip().upper().startswith(("SELECT", "PRAGMA"))]
    assert len(writes) <= 8, writes  # verdicts, job, calls, four summary tables, the job's completion
