"""Issue 12, attacker review (slice s3), findings 5 and 6: storage and memory amplification. Raw answers
are capped low by default, statistics never read raw answers, the report's in-memory path has the
stats cap, a page of verdicts is bounded in bytes, and a job's stored pair items are bounded in bytes
(/v1/jobs and the pairs /v1/personalization expands). Real migrated databases (SQLite; PostgreSQL
where PJUDGE_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from judge.profiles import BUILTIN_DIR, load_profile
from judge.records import Call
from judge.settings import Settings
from store import repo
from store.models import Job, JobItem
from tests.support.api import AUTH_A, count, error_of, make_items, make_verdict, new_app, post_job

RAW = "[[A]] [[80]] " + "x" * 8000  # a long answer under the default cap
MB = 1024 * 1024


def _judge_with_long_answers(engine: Engine, job_id: str, samples: int = 8) -> None:
    """Every item judged with `samples` calls per order, each keeping RAW, as a worker would store them."""
    job = repo.get_job(engine, job_id)
    assert job is not None
    verdicts = []
    for position, item in repo.job_items(engine, job_id, 0, job.n_items):
        verdict = make_verdict(item, "A", 0.9)
        calls = [Call(order=order, sample=s, raw=RAW, choice="A", certainty=0.8, input_tokens=10, output_tokens=10,
                      cost_usd=0.0001) for order in ("AB", "BA") for s in range(samples)]
        verdicts.append((position, verdict.model_copy(update={"calls": calls})))
    repo.record_verdicts(engine, job_id, verdicts)
    repo.finish_if_complete(engine, job_id)


# ---------------------------------------------------------------- F5: raw answers and what reads them

def test_the_default_raw_cap_is_8192_characters_and_holds_four_times_any_built_in_answer() -> None:
    cap = Settings().raw_max_chars
    assert cap == 8192
    longest = max(load_profile(path.stem).max_tokens for path in BUILTIN_DIR.glob("*.toml"))
    assert cap >= 4 * longest * 4  # ~4 characters a token, and room for four times the longest answer


def test_a_page_of_verdicts_ends_at_its_byte_budget_and_next_cursor_continues(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_VERDICT_PAGE_MB=0.5).test_client()
    job_id = post_job(client, make_items(30)).get_json()["job_id"]
    _judge_with_long_answers(engine, job_id)  # ~130 KB of JSON per verdict
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        page = client.get(f"/v1/jobs/{job_id}/verdicts?limit=1000{cursor}", headers=AUTH_A)
        assert page.status_code == 200
        assert len(page.data) <= 0.5 * MB, len(page.data)  # was every verdict at once: ~4 MB
        body = page.get_json()
        assert body["verdicts"], "a page holds at least one verdict"
        seen += [v["id"] for v in body["verdicts"]]
        pages += 1
        if body["next_cursor"] is None:
            break
        cursor = f"&cursor={body['next_cursor']}"
    assert seen == [f"item-{i:05d}" for i in range(30)] and pages >= 8
    # A single verdict larger than the budget still comes, alone.
    tiny = new_app(engine, lambda job: None, PJUDGE_VERDICT_PAGE_MB=0.01).test_client()
    body = tiny.get(f"/v1/jobs/{job_id}/verdicts?limit=5", headers=AUTH_A).get_json()
    assert len(body["verdicts"]) == 1 and body["next_cursor"] is not None
    assert len(body["verdicts"][0]["calls"]) == 16 and body["verdicts"][0]["calls"][0]["raw"] == RAW


def test_reports_and_stats_over_unsummarized_keys_never_read_raw_answers(engine: Engine) -> None:
    client = new_app(engine, lambda job: None).test_client()
    items = [dict(item, metadata={"note": "x" * 300}) for item in make_items(6)]  # too long to be summarized
    job_id = post_job(client, items).get_json()["job_id"]
    _judge_with_long_answers(engine, job_id, samples=2)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        report = client.get(f"/v1/jobs/{job_id}/report?group_by=note", headers=AUTH_A)
        stats = client.get("/v1/stats/agreement?group_by=note", headers=AUTH_A)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert report.status_code == 200 and stats.status_code == 200
    assert report.get_json()["by_group"]["x" * 300]["counts"]["items"] == 6
    assert stats.get_json()["by_group"]["x" * 300]["counts"]["items"] == 6
    reads_calls = [s for s in statements if re.search(r"\bFROM calls\b", s)]
    assert reads_calls, "the calls are read (for the position statistics)"
    assert not [s for s in reads_calls if re.search(r"\bcalls\.raw\b(?!_)", s)], reads_calls


def test_the_report_fallback_has_the_stats_verdict_cap(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_STATS_MAX_VERDICTS=5).test_client()
    items = [dict(item, metadata={"note": "x" * 300}) for item in make_items(6)]
    job_id = post_job(client, items).get_json()["job_id"]
    _judge_with_long_answers(engine, job_id, samples=1)
    refused = client.get(f"/v1/jobs/{job_id}/report?group_by=note", headers=AUTH_A)
    assert refused.status_code == 422, refused.get_json()
    error = error_of(refused)
    assert error["code"] == "too_many_verdicts" and error["details"][0]["field"] == "group_by"
    assert "PJUDGE_STATS_MAX_VERDICTS" in error["message"]
    assert client.get(f"/v1/jobs/{job_id}/report?group_by=group", headers=AUTH_A).status_code == 200  # summarized


# ---------------------------------------------------------------- F6: a job's stored bytes

def _wide_lines(personas: int, response_chars: int) -> list[dict[str, Any]]:
    """One prompt answered by one system for `personas` personas: n(n-1) pair items, each holding two
    of these responses."""
    return [{"system": "s", "prompt_id": "q", "prompt": "How should I spend a free Saturday?", "persona_id": f"p{i}",
             "persona": f"Persona number {i}.", "response": f"{i} " + "r" * response_chars} for i in range(personas)]


def test_personalization_refuses_a_body_that_expands_past_the_job_size_cap_before_storing(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_MAX_JOB_MB=10).test_client()
    lines = _wide_lines(20, 20_000)  # a 0.4 MB body: 380 pair items of ~40 KB each, ~15 MB stored
    refused = client.post("/v1/personalization", json={"responses": lines, "profile": "persona-certainty"},
                          headers=AUTH_A)
    assert refused.status_code == 422, refused.get_json()
    error = error_of(refused)
    assert error["code"] == "job_too_large" and "PJUDGE_MAX_JOB_MB" in error["message"]
    [detail] = error["details"]
    assert detail["field"] == "responses" and detail["message"].startswith("380 pair items of at least 14.5 MB")
    assert count(engine, Job) == 0 and count(engine, JobItem) == 0
    fits = client.post("/v1/personalization", json={"responses": _wide_lines(10, 20_000),
                                                    "profile": "persona-certainty"}, headers=AUTH_A)
    assert fits.status_code == 202, fits.get_json()  # 90 pairs, ~3.6 MB


def test_at_the_defaults_a_9_mb_personalization_body_cannot_become_a_gigabyte_job(engine: Engine) -> None:
    client = new_app(engine, lambda job: None).test_client()
    lines = _wide_lines(60, 150_000)  # 3,540 pair items of ~300 KB: ~1 GB stored
    refused = client.post("/v1/personalization", json={"responses": lines, "profile": "persona-certainty"},
                          headers=AUTH_A)
    assert refused.status_code == 422 and error_of(refused)["code"] == "job_too_large"
    assert "more than 200 MB" in error_of(refused)["message"]
    assert count(engine, Job) == 0


def test_post_jobs_has_the_same_job_size_rule(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_MAX_JOB_MB=1).test_client()
    items = [dict(item, response_a="é" * 100_000) for item in make_items(6)]  # 1.2 MB of UTF-8 text
    refused = post_job(client, items)
    assert refused.status_code == 422, refused.get_json()
    [detail] = error_of(refused)["details"]
    assert detail["field"] == "items" and detail["message"].startswith("6 pair items of at least 1.1")
    assert count(engine, Job) == 0
    assert post_job(client, items[:4]).status_code == 202  # 0.8 MB
