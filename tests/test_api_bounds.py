"""Issue 12, finding 6 (amplification and unbounded size) and the bounds of a shared server: the
operator's limits on the profile fields that multiply a job's requests and tokens, raw answers
capped on the call (a loopback server answering 50 MB), server-side prices for jobs on the
server's provider keys, and per-key daily quotas. Real migrated databases (SQLite; PostgreSQL
where PJUDGE_TEST_POSTGRES_URL is set), the real runner against llm-sim or a loopback server."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from api.app import create_app
from judge.prices import PriceError
from judge.profiles import BUILTIN_DIR, load_profile
from judge.providers.base import CallRequest, CallResult
from judge.records import PairItem
from judge.runner import Judge
from judge.settings import reset_settings
from store import repo
from store.models import CacheEntry, CallRow, Job, utcnow
from tests.support.api import AUTH_A, AUTH_B, KEY_A, count, error_of, judge_all, make_items, new_app, post_job
from tests.support.personalization import SIM_PROFILE, judging_enqueue, response_lines


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return new_app(engine, lambda job: None).test_client()


CAP = 8192  # PJUDGE_RAW_MAX_CHARS's default
HUGE = 50_000_000  # characters of the loopback server's answer


# ---------------------------------------------------------------- amplification

def test_the_704_request_profile_is_refused_naming_each_field_and_its_limit(client: FlaskClient,
                                                                              engine: Engine) -> None:
    # One item with these made 704 provider requests on the server's key (2 orders x 32 samples x
    # 11 attempts, each retried up to 20 times on errors).
    profile = {"samples": 32, "max_reasks": 10, "max_retries": 20, "max_tokens": 32768, "timeout_s": 1e9}
    response = post_job(client, make_items(1), profile=profile)
    assert response.status_code == 422, response.get_json()
    details = {d["field"]: d["message"] for d in error_of(response)["details"]}
    assert details == {
        "profile.samples": "at most 8 on this server, got 32 (PJUDGE_API_MAX_SAMPLES)",
        "profile.max_reasks": "at most 3 on this server, got 10 (PJUDGE_API_MAX_REASKS)",
        "profile.max_retries": "at most 8 on this server, got 20 (PJUDGE_API_MAX_RETRIES)",
        "profile.max_tokens": "at most 4096 on this server, got 32768 (PJUDGE_API_MAX_TOKENS)",
        "profile.timeout_s": "at most 300 on this server, got 1000000000 (PJUDGE_API_MAX_TIMEOUT_S)",
    }
    assert count(engine, Job) == 0


@pytest.mark.parametrize("field,value", [("samples", 9), ("max_reasks", 4), ("max_retries", 9),
                                         ("max_tokens", 4097), ("timeout_s", 300.5)])
def test_each_bounded_field_is_refused_just_past_its_default_limit(client: FlaskClient, field: str,
                                                                   value: float) -> None:
    response = post_job(client, make_items(1), profile={field: value})
    assert response.status_code == 422
    assert [d["field"] for d in error_of(response)["details"]] == [f"profile.{field}"]


def test_the_operator_sets_the_limits_and_the_built_in_profiles_fit_the_defaults(engine: Engine) -> None:
    client = new_app(engine, lambda job: None).test_client()
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        assert post_job(client, make_items(1), profile=path.stem).status_code == 202, path.stem
    strict = new_app(engine, lambda job: None, PJUDGE_API_MAX_SAMPLES=2).test_client()
    refused = post_job(strict, make_items(1), profile="faireval-scores")  # its samples = 3
    assert refused.status_code == 422 and error_of(refused)["details"][0]["field"] == "profile.samples"
    lenient = new_app(engine, lambda job: None, PJUDGE_API_MAX_SAMPLES=16).test_client()
    assert post_job(lenient, make_items(1), profile={"samples": 16}).status_code == 202


def test_personalization_jobs_are_bounded_too(client: FlaskClient, engine: Engine) -> None:
    response = client.post("/v1/personalization", json={"responses": response_lines(),
                                                         "profile": {"max_tokens": 8000}}, headers=AUTH_A)
    assert response.status_code == 422
    assert error_of(response)["details"][0]["field"] == "profile.max_tokens"
    assert count(engine, Job) == 0


# ---------------------------------------------------------------- raw answers capped

@functools.cache
def _huge_body() -> bytes:
    """The huge answer's bytes, made once per session (a 50 MB json.dumps is not free)."""
    content = "[[A]] [[90]] " + "x" * (HUGE - 13)
    return json.dumps({"id": "x", "object": "chat.completion", "model": "sim-judge",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 100, "completion_tokens": 10}}).encode()


class _HugeAnswerServer:
    """A loopback server whose every answer is an OpenAI chat completion holding a parseable
    verdict followed by HUGE characters; with `declare_length` off it sends no Content-Length
    (the body ends when the connection closes). Counts the requests."""

    def __init__(self) -> None:
        self.body = _huge_body()
        self.requests = 0
        self.declare_length = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if server.declare_length:
                    self.send_header("Content-Length", str(len(server.body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                try:
                    self.wfile.write(server.body)
                except OSError:  # the client stopped reading at its limit
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def huge_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_HugeAnswerServer]:
    """A server the operator configured (PJUDGE_ENDPOINTS), so loopback is allowed."""
    server = _HugeAnswerServer()
    server.thread.start()
    monkeypatch.setenv("PJUDGE_ENDPOINTS", f"{server.url},{server.url}/v1")
    reset_settings()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.mark.slow  # reads 50 MB twice
def test_a_50_mb_answer_is_capped_on_the_call_in_the_database_and_in_get_verdicts(
        engine: Engine, huge_server: _HugeAnswerServer) -> None:
    huge_server.declare_length = False  # so the SDK reads it whole: the runner's cap is what holds
    client = new_app(engine, judging_enqueue(engine)).test_client()
    # The SDK transport (the direct one refuses a body over PJUDGE_PROVIDER_MAX_ANSWER_MB unread).
    profile = {**SIM_PROFILE, "base_url": f"{huge_server.url}/v1", "max_reasks": 0, "max_retries": 0,
               "transport": "sdk"}
    created = post_job(client, make_items(1), profile=profile)
    assert created.status_code == 202, created.get_json()
    job_id = created.get_json()["job_id"]
    assert huge_server.requests == 2  # both orders, judged by the real runner

    page = client.get(f"/v1/jobs/{job_id}/verdicts", headers=AUTH_A)
    assert page.status_code == 200 and len(page.data) < 200_000  # was 100 MB
    [verdict] = page.get_json()["verdicts"]
    assert verdict["winner"] is not None  # parsed from the kept start of the answer
    for call in verdict["calls"]:
        assert len(call["raw"]) == CAP and call["raw"].startswith("[[A]] [[90]] xxx")
        assert call["raw_truncated_from"] == HUGE
    with engine.connect() as conn:
        stored = conn.execute(select(CallRow.raw, CallRow.raw_truncated_from)).all()
    assert [(len(raw), full) for raw, full in stored] == [(CAP, HUGE), (CAP, HUGE)]


@pytest.mark.parametrize("transport,provider,declared", [
    ("sdk", "openai-compatible", True), pytest.param("sdk", "anthropic", True, marks=pytest.mark.slow),  # reads 50 MB
    ("direct", "openai-compatible", True), ("direct", "openai-compatible", False)])
def test_an_answer_over_the_body_limit_fails_its_call_unread_and_unretried(
        engine: Engine, huge_server: _HugeAnswerServer, monkeypatch: pytest.MonkeyPatch, transport: str,
        provider: str, declared: bool) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key-0123")
    huge_server.declare_length = declared
    client = new_app(engine, judging_enqueue(engine)).test_client()
    base_url = huge_server.url if provider == "anthropic" else f"{huge_server.url}/v1"
    profile = {**SIM_PROFILE, "provider": provider, "base_url": base_url, "transport": transport,
               "max_reasks": 0, "max_retries": 2}
    job_id = post_job(client, make_items(1), profile=profile).get_json()["job_id"]
    [verdict] = client.get(f"/v1/jobs/{job_id}/verdicts", headers=AUTH_A).get_json()["verdicts"]
    assert verdict["winner"] is None and huge_server.requests == 2  # no retry
    for call in verdict["calls"]:
        assert call["raw"] is None and "larger than 4194304 bytes" in call["error"], call


class _Answers:
    """An in-process provider answering `text` to every request."""

    name = "fake"

    def __init__(self, text: str):
        self.text = text

    async def complete(self, request: CallRequest) -> CallResult:
        return CallResult(text=self.text, input_tokens=10, output_tokens=10)

    async def aclose(self) -> None:
        pass


class _Cache:
    def __init__(self) -> None:
        self.entries: dict[str, CallResult] = {}

    def get(self, key: str) -> CallResult | None:
        return self.entries.get(key)

    def put(self, key: str, result: CallResult) -> None:
        self.entries[key] = result


def test_the_runner_caps_raw_answers_for_the_cli_too_and_never_caches_a_cut_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from judge.settings import reset_settings

    monkeypatch.setenv("PJUDGE_RAW_MAX_CHARS", "1000")
    reset_settings()
    item = PairItem(id="1", prompt="p", response_a="a", response_b="b")
    profile = load_profile("persona-certainty", max_reasks=0)

    async def judge(text: str, cache: _Cache) -> Any:
        async with Judge(profile, provider=_Answers(text), cache=cache) as judge:  # type: ignore[arg-type]
            return await judge.judge_item(item)

    cache = _Cache()
    verdict = asyncio.run(judge("[[B]] [[70]] " + "y" * 5000, cache))
    assert [(len(c.raw or ""), c.raw_truncated_from) for c in verdict.calls] == [(1000, 5013), (1000, 5013)]
    assert verdict.winner is not None and cache.entries == {}
    whole = asyncio.run(judge("[[B]] [[70]]", cache))
    assert [c.raw_truncated_from for c in whole.calls] == [None, None] and len(cache.entries) == 2
    # The SPEC 1.2 line of a whole answer only gains a null field.
    assert json.loads(whole.calls[0].model_dump_json())["raw_truncated_from"] is None


# ---------------------------------------------------------------- server-side prices

def test_a_client_price_of_zero_cannot_make_a_server_keyed_job_free(engine: Engine, start_sim: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sim = start_sim("--seed", "5")
    monkeypatch.setenv("PJUDGE_ENDPOINTS", sim.openai_base_url)  # the operator's endpoint: its keys, its prices
    reset_settings()
    prices = {"sim-judge": {"input_per_mtok": 3.0, "output_per_mtok": 15.0}}
    client = new_app(engine, judging_enqueue(engine), PJUDGE_PRICES=json.dumps(prices)).test_client()
    free = {**SIM_PROFILE, "base_url": sim.openai_base_url, "price": {"input_per_mtok": 0, "output_per_mtok": 0}}
    refused = post_job(client, make_items(3), profile=free)
    assert refused.status_code == 422, refused.get_json()
    assert error_of(refused)["details"][0]["field"] == "profile.price"
    assert count(engine, Job) == 0

    created = post_job(client, make_items(3), profile={**SIM_PROFILE, "base_url": sim.openai_base_url})
    assert created.status_code == 202, created.get_json()
    job_id = created.get_json()["job_id"]
    job = repo.get_job(engine, job_id)
    assert job is not None and repo.job_profile(job).price.model_dump(include=set(prices["sim-judge"])) == prices["sim-judge"]
    calls = [c for v in repo.all_verdicts(engine, job_id) for c in v.calls]
    expected = sum((c.input_tokens or 0) * 3.0 + (c.output_tokens or 0) * 15.0 for c in calls) / 1e6
    assert expected > 0 and job.cost_usd == pytest.approx(expected)
    body = client.get(f"/v1/jobs/{job_id}", headers=AUTH_A).get_json()
    assert body["cost_usd"] == pytest.approx(expected, abs=1e-6)


def test_the_price_table_has_built_in_defaults_a_wildcard_and_a_file_form(engine: Engine, tmp_path: Path) -> None:
    client = new_app(engine, lambda job: None).test_client()
    default = post_job(client, make_items(1))
    job = repo.get_job(engine, default.get_json()["job_id"])
    assert job is not None and repo.job_profile(job).price.model_dump() == {"input_per_mtok": 2.5,
                                                                             "output_per_mtok": 10.0,
                                                                             "cached_input_per_mtok": 1.25}
    unknown = post_job(client, make_items(1), profile={"model": "gpt-9-preview"})
    assert unknown.status_code == 422 and error_of(unknown)["details"][0]["field"] == "profile.model"

    table = tmp_path / "prices.toml"
    table.write_text('["*"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n', encoding="utf-8")
    client = new_app(engine, lambda job: None, PJUDGE_PRICES=str(table)).test_client()
    priced = post_job(client, make_items(1), profile={"model": "gpt-9-preview"})
    assert priced.status_code == 202
    job = repo.get_job(engine, priced.get_json()["job_id"])
    assert job is not None and repo.job_profile(job).price.output_per_mtok == 2.0

    for bad in ('{"m": {"input_per_mtok": -1}}', "{not json", str(tmp_path / "missing.json")):
        with pytest.raises(PriceError):
            create_app(engine, lambda job: None, {"PJUDGE_API_KEYS": KEY_A, "PJUDGE_PRICES": bad})


# ---------------------------------------------------------------- per-key daily quotas

def _age(engine: Engine, job_id: str, hours: float) -> None:
    """Make a job look posted `hours` ago (created, and counted in the quota, then)."""
    then = utcnow() - timedelta(hours=hours)
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == job_id).values(created_at=then, quota_at=then))


def test_the_items_quota_answers_429_with_retry_after_over_the_last_24_hours(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_QUOTA_ITEMS_PER_DAY=10).test_client()
    first = post_job(client, make_items(6), headers={**AUTH_A, "Idempotency-Key": "first"})
    assert first.status_code == 202
    _age(engine, first.get_json()["job_id"], 23)

    over = post_job(client, make_items(5))
    assert over.status_code == 429, over.get_json()
    error = error_of(over)
    assert error["code"] == "quota_exceeded" and "10 items per 24 h" in error["message"]
    assert error["details"][0]["field"] == "items"
    assert 3500 <= int(over.headers["Retry-After"]) <= 3601  # when the 23-hour-old job leaves the window
    assert count(engine, Job) == 1

    assert post_job(client, make_items(4)).status_code == 202  # 6 + 4 fit
    assert post_job(client, make_items(5), headers=AUTH_B).status_code == 202  # another key's own quota
    replay = post_job(client, make_items(6), headers={**AUTH_A, "Idempotency-Key": "first"})
    assert replay.status_code == 200  # a replay creates nothing: no quota check

    _age(engine, first.get_json()["job_id"], 25)  # out of the window: 4 used
    assert post_job(client, make_items(6)).status_code == 202
    too_big = post_job(client, make_items(11), headers=AUTH_B)
    assert too_big.status_code == 422 and error_of(too_big)["code"] == "quota_exceeded"


def test_the_items_quota_counts_personalization_pairs(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_QUOTA_ITEMS_PER_DAY=40).test_client()
    assert post_job(client, make_items(10)).status_code == 202
    response = client.post("/v1/personalization", json={"responses": response_lines()}, headers=AUTH_A)
    assert response.status_code == 429  # 36 pairs on top of 10 items
    assert error_of(response)["details"][0]["field"] == "responses" and response.headers["Retry-After"]


def test_the_cost_quota_refuses_new_jobs_once_the_days_spend_is_reached(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_QUOTA_COST_PER_DAY=0.03).test_client()
    job_id = post_job(client, make_items(20)).get_json()["job_id"]
    judge_all(engine, job_id)  # 40 calls at 0.0005 USD
    assert post_job(client, make_items(1)).status_code == 202  # 0.02 spent
    judge_all(engine, post_job(client, make_items(20)).get_json()["job_id"])
    over = post_job(client, make_items(1))
    assert over.status_code == 429 and 86000 < int(over.headers["Retry-After"]) <= 86400
    assert "0.03 USD per 24 h" in error_of(over)["message"]
    _age(engine, job_id, 24.5)
    assert post_job(client, make_items(1)).status_code == 202


def test_concurrent_posts_of_one_key_cannot_overrun_its_quota(engine: Engine) -> None:
    client = new_app(engine, lambda job: None, PJUDGE_QUOTA_ITEMS_PER_DAY=10).test_client()
    statuses: list[int] = []

    def post() -> None:
        statuses.append(post_job(client, make_items(3)).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] * 3 + [429] * 5
    assert count(engine, Job) == 3


@pytest.mark.slow  # reads 50 MB twice
def test_no_cache_entry_holds_a_cut_answer(engine: Engine, huge_server: _HugeAnswerServer) -> None:
    huge_server.declare_length = False
    profile = load_profile(SIM_PROFILE["profile"], provider="openai-compatible", model="sim-judge",
                           base_url=f"{huge_server.url}/v1", max_reasks=0, max_retries=0,
                           transport="sdk")  # the SDK reads it whole: the runner's cap is what holds
    cache = repo.DbCallCache(engine)

    async def run() -> Any:
        async with Judge(profile, cache=cache) as judge:
            return await judge.judge_item(PairItem(id="1", prompt="p", response_a="a", response_b="b"))

    verdict = asyncio.run(run())
    assert all(c.raw_truncated_from == HUGE for c in verdict.calls)
    assert count(engine, CacheEntry) == 0


def test_pjudge_submit_sends_a_local_profile_file_without_its_price(tmp_path: Path) -> None:
    from pjudge.commands.submit import profile_spec

    path = tmp_path / "mine.toml"
    path.write_text('model = "sim-judge"\nsamples = 2\n[price]\ninput_per_mtok = 0.0\n', encoding="utf-8")
    assert profile_spec(str(path), {}) == {"model": "sim-judge", "samples": 2, "name": "mine"}
