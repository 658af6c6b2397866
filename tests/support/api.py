"""Builders for the API tests: the test keys, request items, stored verdicts, an app with an
injected enqueue."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col
from werkzeug.serving import BaseWSGIServer, make_server

from api.app import create_app
from judge.records import Call, JudgeInfo, PairItem, Verdict
from store import repo

KEY_A = "test-key-alpha-0123456789"
KEY_B = "test-key-bravo-9876543210"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}


def make_items(n: int, persona: bool = True) -> list[dict[str, Any]]:
    rng = random.Random(n)
    items = []
    for i in range(n):
        item: dict[str, Any] = {
            "id": f"item-{i:05d}", "prompt": f"Question {i}: how should I start saving money?",
            "response_a": "Open a savings account. " * rng.randint(1, 4),
            "response_b": "Track your spending first, then automate a transfer. " * rng.randint(1, 3),
            "human_label": rng.choice(["A", "B", "tie", None]), "metadata": {"dataset": "test", "group": i % 3},
        }
        if persona:
            item["persona"] = "The person is 55-64 years old." if i % 2 else {"age": "18-24", "religion": "none"}
        items.append({k: v for k, v in item.items() if v is not None})
    return items


def make_verdict(item: PairItem, winner: str | None, p_a: float | None, abstained: bool = False,
                 model: str = "gpt-4o-2024-08-06", profile: str = "persona-certainty") -> Verdict:
    def call(order: str) -> Call:
        shown_first = "A" if order == "AB" else "B"
        return Call(order=order, sample=0, raw=f"[[{shown_first}]] [[80]]", choice=winner if winner in ("A", "B") else None,
                    certainty=0.8, input_tokens=100, output_tokens=9, cost_usd=0.0005, latency_s=0.1,
                    error=None if winner else "unparsed")

    certainty = None if p_a is None else round(abs(2 * p_a - 1), 9)
    return Verdict(id=item.id, winner=winner, p_a=p_a, certainty=certainty, consistent=winner is not None,  # type: ignore[arg-type]
                   abstained=abstained, bpde=0.0, human_label=item.human_label,
                   judge=JudgeInfo(profile=profile, provider="openai", model=model),
                   calls=[call("AB"), call("BA")], len_a=len(item.response_a), len_b=len(item.response_b),
                   metadata=dict(item.metadata))


def judge_all(engine: Engine, job_id: str, choose: Callable[[int, PairItem], tuple[str | None, float | None, bool]]
              | None = None, model: str = "gpt-4o-2024-08-06", shuffle: bool = False) -> None:
    """Store a verdict for every item of the job through repo.record_verdicts, as a worker would."""
    job = repo.get_job(engine, job_id)
    assert job is not None
    items = repo.job_items(engine, job_id, 0, job.n_items)
    if shuffle:
        random.Random(7).shuffle(items)

    def default(position: int, item: PairItem) -> tuple[str | None, float | None, bool]:
        return ("A", 0.9, False) if position % 2 == 0 else ("B", 0.2, False)

    choose = choose or default
    verdicts = []
    for position, item in items:
        winner, p_a, abstained = choose(position, item)
        verdicts.append((position, make_verdict(item, winner, p_a, abstained, model=model)))
    for start in range(0, len(verdicts), 37):  # several deliveries, like a worker's batches
        repo.record_verdicts(engine, job_id, verdicts[start:start + 37])
    repo.finish_if_complete(engine, job_id)


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def error_of(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["details"], list)
    return body["error"]  # type: ignore[no-any-return]


def new_app(engine: Engine, enqueue: Callable[[Any], Any], **config: Any) -> Flask:
    return create_app(engine, enqueue, {"PJUDGE_API_KEYS": f"{KEY_A}, {KEY_B}", **config})


def unqueued_client(engine: Engine, **config: str) -> FlaskClient:
    """A test client of an app that stores jobs and sends nothing to a queue (the attack tests)."""
    app = new_app(engine, lambda job: None, **config)
    app.extensions["pjudge"].enqueue_range = lambda job, start, end: None
    return app.test_client()


def post_job(client: FlaskClient, items: list[dict[str, Any]], headers: dict[str, str] | None = None,
             **body: Any) -> Any:
    return client.post("/v1/jobs", json={"items": items, **body}, headers=headers or AUTH_A)


class LiveServer:
    """The app on a loopback port, served by werkzeug in a thread; enqueue 'judges' the job in a
    background thread (through repo.record_verdicts) a moment later, like a worker would."""

    def __init__(self, engine: Engine, delay: float = 0.3, config: dict[str, str] | None = None,
                 choose: Callable[[int, PairItem], tuple[str | None, float | None, bool]] | None = None):
        self.engine, self.delay, self.choose = engine, delay, choose
        self.jobs: list[Any] = []
        self.app: Flask = create_app(engine, self._enqueue, {"PJUDGE_API_KEYS": KEY_A, **(config or {})})
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                       daemon=True)  # shutdown() waits up to one poll interval
        self.judges: list[threading.Thread] = []

    def _enqueue(self, job: Any) -> None:
        self.jobs.append(job)

        def work() -> None:
            time.sleep(self.delay)
            judge_all(self.engine, job.id, self.choose, shuffle=True)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self.judges.append(thread)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        for thread in self.judges:
            thread.join(timeout=30)
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the dashboard's data and a served app

T_DASHBOARD = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)  # the first of two weeks of verdicts


def simulated_jobs(engine: Engine, owner: str, seed: int = 0, days: int = 14, n: int = 40,
                   judges: tuple[tuple[str, str, float], ...] = (("persona-certainty", "sim-small", 0.35),
                                                                  ("persona-certainty", "sim-large", 0.1),
                                                                  ("persona-tie", "sim-small", 0.25))) -> list[str]:
    """One job a day per judge (profile, model, noise) over `days` days from T_DASHBOARD, judged by a
    simulated judge: right with probability 1 - noise (drifting a little each day), more certain
    when right; a tenth of the items abstain unlabelled (the human queue). Stored through
    repo.record_verdicts with the day's timestamp, as tests/test_stats_sql.py does."""
    from judge.profiles import JudgeProfile

    rng = random.Random(seed)
    job_ids = []
    for day in range(days):
        for profile_name, model, noise in judges:
            profile = JudgeProfile(name=profile_name, provider="openai", model=model)
            items = [PairItem(id=f"d{day:02d}-{i:03d}", prompt=f"Question {i}", persona="a saver",
                              response_a="a" * rng.randint(10, 200), response_b="b" * rng.randint(10, 200),
                              human_label=None if i % 10 == 0 else rng.choice(["A", "B", "A", "B", "tie"]),
                              metadata={"day": day})
                     for i in range(n)]
            job = repo.create_job(engine, owner, items, profile).job
            drifted = min(0.9, noise + 0.01 * day)
            verdicts = []
            for position, item in repo.job_items(engine, job.id, 0, n):
                truth = item.human_label or rng.choice(["A", "B"])
                right = rng.random() > drifted
                winner = truth if right and truth != "tie" else rng.choice(["A", "B"])
                confidence = rng.uniform(0.75, 1.0) if right else rng.uniform(0.5, 0.85)
                p_a = round(confidence if winner == "A" else 1 - confidence, 6)
                verdicts.append((position, make_verdict(item, winner, p_a, abstained=item.human_label is None,
                                                        model=model, profile=profile_name)))
            when = T_DASHBOARD + timedelta(days=day, hours=rng.randint(0, 10))
            repo.record_verdicts(engine, job.id, verdicts, now=when)
            repo.finish_if_complete(engine, job.id)
            job_ids.append(job.id)
    return job_ids


def cascade_job(client: FlaskClient, engine: Engine, when: datetime = T_DASHBOARD + timedelta(days=13)) -> str:
    """A job of tests/support/verdicts.small_cascade's verdicts under a three-stage cascade profile
    (then = human), stored as a worker stores them at `when`."""
    from judge.profiles import load_judging
    from store.models import Job
    from tests.support.verdicts import small_cascade

    verdicts = small_cascade()
    items = [{"id": v.id, "prompt": f"Question {i}?", "response_a": f"Answer A {i}", "response_b": f"Answer B {i}",
              **({"human_label": v.human_label} if v.human_label is not None else {})}
             for i, v in enumerate(verdicts)]
    response = client.post("/v1/jobs", json={"items": items, "profile": "persona-certainty"}, headers=AUTH_A)
    job_id: str = response.get_json()["job_id"]
    cascade = load_judging({"name": "three-stage", "then": "human", "cascade": [
        {"profile": "persona-certainty", "threshold": 0.8}, {"profile": "persona-certainty", "threshold": 0.9},
        {"profile": "persona-certainty", "threshold": 0.95}]})
    with engine.begin() as conn:
        conn.execute(update(Job).where(col(Job.id) == job_id)
                     .values(profile_json=json.dumps(cascade.stored())))  # type: ignore[union-attr]
    repo.record_verdicts(engine, job_id, list(enumerate(verdicts)), now=when)
    return job_id


class ServedApp:
    """A Flask app served on a loopback port from a thread (werkzeug), for a browser."""

    def __init__(self, app: Flask):
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01},
                                       daemon=True)  # shutdown() waits up to one poll interval

    def __enter__(self) -> ServedApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
