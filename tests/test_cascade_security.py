"""Cascades and the human queue tried as a hostile tenant would (issue 12's guarantees over issue 14's
routes): no stage reaches a server file, an internal address, the server's keys at a client's host or
another tenant's credential; a cascade asks no more per item than one profile may; errors from the
server's own profile files show neither their paths nor their contents; the queue shows only the
caller's items and answers odd cursors and limits with a 400, never a 500."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from judge.profiles import CascadeProfile
from judge.settings import reset_settings
from store import repo
from store.models import Job
from tests.support.api import AUTH_A, AUTH_B, count, error_of, judge_all, make_items, new_app, post_job

# slow: hundreds of hostile forms (paths, addresses, odd values), each a request (one test loops over a
# matrix's cases against one app and database); run by plain scripts/test
pytestmark = [pytest.mark.slow]

PRICES = {"small": {"input_per_mtok": 0.1, "output_per_mtok": 0.4},
          "large": {"input_per_mtok": 5.0, "output_per_mtok": 15.0}}
PUBLIC = "http://93.184.216.34/v1"  # a public address literal: no DNS needed to accept it
TENANT_KEY = "sk-tenant-own-secret-0123456789abcdef"


def stage(model: str, threshold: float | None = 0.9, **fields: Any) -> dict[str, Any]:
    return {"profile": {"profile": "persona-certainty", "name": model, "model": model, **fields},
            "threshold": threshold}


def cascade(*stages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "c", "cascade": list(stages), **fields}


@pytest.fixture
def client(engine: Engine) -> FlaskClient:
    return new_app(engine, lambda job: None, PJUDGE_PRICES=json.dumps(PRICES)).test_client()


def check_each(cases: Iterable[Any], check: Callable[[Any], None]) -> None:
    """`check(case)` for every case, one request each against one app and database (a test per
    case cost a database per case, about a second each on PostgreSQL); fails naming every case
    whose check failed, with its assertion."""
    failed = []
    for case in cases:
        try:
            check(case)
        except AssertionError as exc:
            failed.append(f"{case!r}: {exc}")
    assert not failed, f"{len(failed)} cases failed:\n" + "\n".join(failed)


def refused(response: Any) -> tuple[str, str]:
    """(field, message) of a 422, asserting the error shape."""
    assert response.status_code == 422, (response.status_code, response.get_json())
    error = error_of(response)
    return str(error["details"][0]["field"]), str(error["message"])


# ---------------------------------------------------------------- server files

PATHS = ["/etc/passwd", "../x.toml", "../../etc/passwd", "persona-certainty.toml", "./persona-certainty",
         "persona-certainty/../persona-certainty", "~/.ssh/id_rsa", "C:\\x.toml", "file:///etc/passwd",
         "persona-certainty\n", "persona-certainty\x00", " persona-certainty", "persona\u2010certainty",
         "\uff50ersona-certainty", "persona-certainty\u200b", ".", "..", "-"]


def test_a_profile_named_like_a_path_or_with_unicode_tricks_is_refused_everywhere(
        client: FlaskClient, engine: Engine) -> None:
    def check(case: tuple[str, str]) -> None:
        where, name = case
        if where == "top":
            profile: Any = name
        elif where == "stage":
            profile = cascade({"profile": name, "threshold": 0.9})
        else:
            key = where.split(".")[1]
            profile = cascade({"profile": {key: name, "model": "small"}, "threshold": 0.9})
        response = post_job(client, make_items(1), profile=profile)
        assert response.status_code in (400, 422), response.get_json()
        text = json.dumps(response.get_json())
        assert "root:" not in text and "/etc/" not in text.replace(json.dumps(name)[1:-1], "")
        assert count(engine, Job) == 0

    check_each(itertools.product(["top", "stage", "stage.profile", "stage.name", "stage.template"], PATHS), check)


# ---------------------------------------------------------------- endpoints and keys

INTERNAL = ["http://127.0.0.1:9/v1", "http://localhost/v1", "http://localhost./v1", "http://[::1]/v1",
            "http://[::ffff:127.0.0.1]/v1", "http://[::ffff:169.254.169.254]/v1", "http://2130706433/v1",
            "http://0x7f.1/v1", "http://0177.0.0.1/v1", "http://0/v1", "http://10.0.0.1/v1", "http://192.168.1.1/v1",
            "http://172.16.0.1/v1", "http://100.64.0.1/v1", "http://169.254.169.254/latest/meta-data",
            "http://metadata.google.internal/v1", "http://[fd00::1]/v1", "http://[fe80::1%25eth0]/v1",
            "http://224.0.0.1/v1", "http://user:pw@93.184.216.34/v1", "file:///etc/passwd", "gopher://127.0.0.1/",
            "http://93.184.216.34@127.0.0.1/v1", "http://127.0.0.1\u3002nip.io/v1", "http://\u24db\u24de\u24d2alhost/v1"]


def test_no_stage_reaches_an_internal_address(client: FlaskClient, engine: Engine) -> None:
    def check(case: tuple[str, str]) -> None:
        provider, base_url = case
        profile = cascade(stage("small"), stage("large", provider=provider, base_url=base_url,
                                                price={"input_per_mtok": 1}))
        field, _ = refused(post_job(client, make_items(1), profile=profile))
        assert field == "profile.cascade[1].profile.base_url"
        assert count(engine, Job) == 0

    check_each(itertools.product(["openai", "openai-compatible", "anthropic"], INTERNAL), check)


def test_no_stage_sends_a_server_key_to_a_client_host_or_uses_another_tenants_credential(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # The operator allows api_key_env for OPENAI_API_KEY (bound only to OpenAI's own endpoint).
    client = new_app(engine, lambda job: None, PJUDGE_PRICES=json.dumps(PRICES),
                     PJUDGE_API_KEY_ENVS="OPENAI_API_KEY,ANTHROPIC_API_KEY").test_client()
    for variable, provider in (("OPENAI_API_KEY", "openai"), ("ANTHROPIC_API_KEY", "openai"),
                               ("OPENAI_API_KEY", "openai-compatible"), ("ANTHROPIC_API_KEY", "anthropic")):
        profile = cascade(stage("small"), stage("large", provider=provider, base_url=PUBLIC, api_key_env=variable,
                                                price={"input_per_mtok": 1}))
        assert refused(post_job(client, make_items(1), profile=profile))[0] == "profile.cascade[1].profile.api_key_env"
    wrong_provider = cascade(stage("small", api_key_env="ANTHROPIC_API_KEY"))
    assert refused(post_job(client, make_items(1), profile=wrong_provider))[0] == "profile.cascade[0].profile.api_key_env"
    stored = client.post("/v1/credentials", json={"name": "b-key", "provider": "openai", "api_key": TENANT_KEY},
                         headers=AUTH_B)
    assert stored.status_code == 201, stored.get_json()
    theirs = cascade(stage("small"), stage("large", base_url=PUBLIC, credential="b-key", price={"input_per_mtok": 1}))
    assert refused(post_job(client, make_items(1), profile=theirs))[0] == "profile.cascade[1].profile.credential"
    assert count(engine, Job) == 0
    assert post_job(client, make_items(1), profile=theirs, headers=AUTH_B).status_code == 202


def test_each_stage_runs_with_its_own_access_and_the_job_keeps_only_the_credentials_name(
        engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Stage 0 at OpenAI on the server's key, stage 1 at the tenant's host with its credential, stage 2
    at the tenant's host with no key: the worker gives each stage exactly that, and no key is stored."""
    from worker.access import job_access

    server_key = "sk-server-openai-secret-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", server_key)
    reset_settings()
    client = new_app(engine, lambda job: None, PJUDGE_PRICES=json.dumps(PRICES)).test_client()
    caplog.set_level(logging.DEBUG)
    assert client.post("/v1/credentials", json={"name": "mine", "provider": "openai", "api_key": TENANT_KEY},
                       headers=AUTH_A).status_code == 201
    profile = cascade(stage("small"), stage("large", base_url=PUBLIC, credential="mine", price={"input_per_mtok": 1}),
                      stage("large", None, base_url=PUBLIC, price={"input_per_mtok": 1}))
    response = post_job(client, make_items(2), profile=profile)
    assert response.status_code == 202, response.get_json()
    job = repo.get_job(engine, response.get_json()["job_id"])
    assert job is not None
    judging = repo.job_profile(job)
    assert isinstance(judging, CascadeProfile)
    accesses = [job_access(engine, job, judge)[0] for judge in judging.judges]
    assert [a.api_key for a in accesses] == [server_key, TENANT_KEY, None]
    assert [a.operator for a in accesses] == [True, False, False]
    with engine.connect() as conn:
        rows = json.dumps([list(map(str, row)) for row in conn.execute(select(Job)).all()])
    for secret in (server_key, TENANT_KEY):
        assert secret not in rows and secret not in caplog.text
        assert secret not in json.dumps(client.get(f"/v1/jobs/{job.id}", headers=AUTH_A).get_json())


# ---------------------------------------------------------------- odd values

ODD = [
    ({"then": None}, "profile.then"), ({"then": ""}, "profile.then"), ({"then": "Human"}, "profile.then"),
    ({"then": 1}, "profile.then"), ({"then": True}, "profile.then"), ({"then": ["human"]}, "profile.then"),
    ({"then": {"human": 1}}, "profile.then"), ({"then": "human\u200b"}, "profile.then"),
    ({"name": ""}, "profile.name"), ({"name": None}, "profile.name"), ({"name": "x" * 300}, "profile.name"),
    ({"name": ["c"]}, "profile.name"), ({"cascade": None}, "profile.cascade"), ({"cascade": {}}, "profile.cascade"),
    ({"cascade": "persona-certainty"}, "profile.cascade"), ({"cascade": [None]}, "profile.cascade[0]"),
    ({"cascade": [[]]}, "profile.cascade[0]"), ({"cascade": [{}]}, "profile.cascade[0].profile"),
    ({"cascade": [{"profile": None}]}, "profile.cascade[0].profile"),
    ({"cascade": [{"profile": 3}]}, "profile.cascade[0].profile"),
    ({"cascade": [{"profile": ""}]}, "profile.cascade[0].profile"),
    ({"cascade": [{"profile": []}]}, "profile.cascade[0].profile"),
    ({"cascade": [{"profile": "persona-certainty", "threshold": "0.9"}]}, "profile.cascade[0].threshold"),
    ({"cascade": [{"profile": "persona-certainty", "threshold": True}]}, "profile.cascade[0].threshold"),
    ({"cascade": [{"profile": "persona-certainty", "threshold": [0.9]}]}, "profile.cascade[0].threshold"),
    ({"cascade": [{"profile": "persona-certainty", "threshold": 1e308}]}, "profile.cascade[0].threshold"),
    ({"cascade": [{"profile": "persona-certainty", "threshold": 0.4999999999}]}, "profile.cascade[0].threshold"),
    ({"cascade": [{"profile": "persona-certainty", "threshold": 0.9, "thresholds": [0.9] * 100_000}]},
     "profile.cascade[0].thresholds"),
    ({"thresholds": [0.5] * 100_000}, "profile.thresholds"),
    ({"cascade": [{"profile": "persona-certainty"}] * 9}, "profile.cascade"),
    ({"cascade": [{"profile": "persona-certainty"}] * 100_000}, "profile.cascade"),
]


def test_odd_cascade_values_are_422_naming_the_field(client: FlaskClient, engine: Engine) -> None:
    def check(case: tuple[dict[str, Any], str]) -> None:
        fields, field = case
        profile = {**cascade({"profile": "persona-certainty", "threshold": 0.9}), **fields}
        started = time.monotonic()
        response = post_job(client, make_items(1), profile=profile)
        assert refused(response)[0] == field
        assert time.monotonic() - started < 10  # a huge list is refused by its length, not stage by stage
        assert count(engine, Job) == 0

    check_each(ODD, check)


def test_a_duplicated_key_is_checked_as_it_is_used(client: FlaskClient, engine: Engine) -> None:
    """JSON with a key twice: the value checked is the value stored (the last), whichever comes first."""
    good = f'"base_url": "{PUBLIC}"'
    bad = '"base_url": "http://169.254.169.254/v1"'
    for first, last, status in ((good, bad, 422), (bad, good, 202)):
        body = ('{"items": ' + json.dumps(make_items(1)) + ', "profile": {"name": "c", "cascade": [{"threshold": 0.9, '
                '"profile": {"model": "large", "price": {"input_per_mtok": 1}, ' + first + ", " + last + "}}]}}")
        response = client.post("/v1/jobs", data=body, headers={**AUTH_A, "Content-Type": "application/json"})
        assert response.status_code == status, response.get_json()
        if status == 202:
            job = repo.get_job(engine, response.get_json()["job_id"])
            assert job is not None
            judging = repo.job_profile(job)
            assert isinstance(judging, CascadeProfile) and judging.judges[0].base_url == PUBLIC
    assert count(engine, Job) == 1


# ---------------------------------------------------------------- cost per item

def test_a_cascade_asks_no_more_samples_per_item_than_one_profile_may(client: FlaskClient, engine: Engine) -> None:
    """Each stage is bounded like a single profile (PJUDGE_API_MAX_SAMPLES = 8 per profile), but an item
    can reach every stage: eight stages of 8 samples ask 64 samples in each order, eight times what one
    profile may. The stages' samples together are bounded as one profile's are."""
    greedy = cascade(*(stage("small" if k % 2 else "large", None, samples=8, temperature=k / 10) for k in range(8)))
    field, message = refused(post_job(client, make_items(1), profile=greedy))
    assert field == "profile.cascade"
    assert "64" in message and "at most 8" in message and "PJUDGE_API_MAX_SAMPLES" in message
    assert count(engine, Job) == 0
    # What one profile may, split over stages, is fine.
    fair = cascade(stage("small", samples=3), stage("large", samples=5))
    assert post_job(client, make_items(1), profile=fair).status_code == 202
    assert post_job(client, make_items(1), profile=cascade(*(stage("small", None) for _ in range(8)))).status_code == 202


def test_a_stored_cascade_is_bounded_in_samples_as_a_posted_one(
        client: FlaskClient, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    stages = "".join(f'[[cascade]]\n[cascade.profile]\nname = "s{k}"\nmodel = "small"\nsamples = 4\n' for k in range(3))
    (folder / "wide.toml").write_text('name = "wide"\n' + stages, encoding="utf-8")
    monkeypatch.setenv("PJUDGE_PROFILES", str(folder))
    reset_settings()
    field, message = refused(post_job(client, make_items(1), profile="wide"))
    assert field == "profile.cascade" and "12" in message


# ---------------------------------------------------------------- the server's profile files

@pytest.fixture
def broken_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "operator-secret-folder"
    folder.mkdir()
    (folder / "broken.toml").write_text('name = "broken"\nmodel = [\n', encoding="utf-8")
    (folder / "leaky.yaml").write_text('name: leaky\nbase_url: "http://admin:hunter2-SECRET@10.1.2.3/v1" [\n',
                                       encoding="utf-8")
    (folder / "keyed.yaml").write_text('name: keyed\napi_key_env: "sk-proj-abcdefghijklmnopqrstuvwxyz012345" [\n',
                                       encoding="utf-8")
    (folder / "badfield.toml").write_text('name = "badfield"\nsamples = 0\n', encoding="utf-8")
    (folder / "badtemplate.toml").write_text('name = "badtemplate"\ntemplate = "nope"\n', encoding="utf-8")
    (folder / "gone-stage.toml").write_text('name = "gone-stage"\n[[cascade]]\nprofile = "gone"\nthreshold = 0.9\n',
                                            encoding="utf-8")
    (folder / "leaky-stage.toml").write_text('name = "leaky-stage"\n[[cascade]]\nprofile = "leaky"\n',
                                             encoding="utf-8")
    (folder / "leaky-table.toml").write_text(
        'name = "leaky-table"\n[[cascade]]\n[cascade.profile]\nprofile = "leaky"\n', encoding="utf-8")
    templates = folder / "templates"
    templates.mkdir()
    (templates / "brokentpl.toml").write_text('parser = "choice"\nuser = [\n', encoding="utf-8")
    (folder / "usestpl.toml").write_text('name = "usestpl"\ntemplate = "brokentpl"\n', encoding="utf-8")
    monkeypatch.setenv("PJUDGE_PROFILES", str(folder))
    monkeypatch.setenv("PJUDGE_TEMPLATES", str(templates))
    reset_settings()
    return folder


BROKEN: list[Any] = ["broken", "leaky", "badfield", "badtemplate", "gone-stage", "leaky-stage", "leaky-table",
                     {"profile": "broken"}, {"profile": "leaky", "model": "small"}, {"name": "leaky"},
                     {"template": "leaky"}, cascade({"profile": "broken"}), cascade({"profile": "leaky"}),
                     cascade({"profile": {"profile": "leaky"}}), cascade({"profile": "badtemplate"}),
                     cascade({"profile": {"name": "broken", "model": "small"}}), "usestpl",
                     {"template": "brokentpl", "model": "small"}, cascade({"profile": "usestpl"})]


def test_errors_from_the_servers_profile_files_show_neither_their_paths_nor_their_contents(
        client: FlaskClient, engine: Engine, broken_profiles: Path, caplog: pytest.LogCaptureFixture) -> None:
    def check(profile: Any) -> None:
        response = post_job(client, make_items(1), profile=profile)
        assert response.status_code == 422, response.get_json()
        text = json.dumps(response.get_json())
        for secret in (str(broken_profiles), "operator-secret-folder", "hunter2", "10.1.2.3", "admin:",
                       "unicode string", str(Path(__file__).parents[1])):
            assert secret not in text, text
        assert count(engine, Job) == 0

    check_each(BROKEN, check)


def test_an_unreadable_server_profile_is_logged_for_the_operator(
        client: FlaskClient, broken_profiles: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="api.profiles")
    response = post_job(client, make_items(1), profile="leaky")
    assert "the server's profile 'leaky' cannot be read" in error_of(response)["message"]
    assert str(broken_profiles / "leaky.yaml") in caplog.text
    post_job(client, make_items(1), profile="keyed")
    assert "keyed.yaml" in caplog.text and "sk-proj-abcdefghij" not in caplog.text


# ---------------------------------------------------------------- the human queue

def queued_job(client: FlaskClient, engine: Engine, n: int, auth: dict[str, str]) -> str:
    items = [{k: v for k, v in item.items() if k != "human_label"} for item in make_items(n)]
    response = post_job(client, items, profile="persona-certainty", headers=auth)
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    judge_all(engine, job_id, lambda position, item: ("A", 0.55, True))  # every item abstained
    return job_id


CURSORS = ["-1", "+1", " 1", "1 ", "1\n", "1.0", "1e3", "0x10", "\uff11", "\u0661", "", "9" * 18, "9" * 19,
           "9" * 400, "00000000000000000001", "null", "None", "[]", "1&cursor=2", "%00", "1%0A"]
LIMITS = ["", "0", "-1", "1001", "1e3", "1.0", "1.5", " 5", "5 ", "\uff15", "\u0665", "0x10", "true", "9" * 400,
          "NaN", "inf", "null"]


def test_odd_queue_cursors_and_limits_are_400_never_500_and_show_only_the_callers_items(
        client: FlaskClient, engine: Engine) -> None:
    mine = queued_job(client, engine, 5, AUTH_A)
    theirs = queued_job(client, engine, 12, AUTH_B)
    my_ids = {item["id"] for item in make_items(5)}
    for value in CURSORS:
        response = client.get(f"/v1/jobs/{mine}/queue?cursor={value}", headers=AUTH_A)
        assert response.status_code in (200, 400), (value, response.status_code)
        if response.status_code == 200:
            assert {e["item"]["id"] for e in response.get_json()["items"]} <= my_ids
    for value in ("2147483647", "2147483648", "9" * 18):  # beyond a position column (INTEGER) can hold
        response = client.get(f"/v1/jobs/{mine}/queue?cursor={value}", headers=AUTH_A)
        assert response.status_code == 400 and error_of(response)["details"][0]["field"] == "cursor", value
        response = client.get(f"/v1/jobs/{mine}/verdicts?cursor={value}", headers=AUTH_A)
        assert response.status_code == 200 and response.get_json() == {"verdicts": [], "next_cursor": None}, value
    for value in LIMITS:
        response = client.get(f"/v1/jobs/{mine}/queue?limit={value}", headers=AUTH_A)
        assert response.status_code in (200, 400), (value, response.status_code)
    # A cursor of another tenant's job (positions 5..11 exist only there) is not an entry of mine.
    theirs_page = client.get(f"/v1/jobs/{theirs}/queue?limit=11", headers=AUTH_B).get_json()
    cursor = theirs_page["next_cursor"]
    assert cursor is not None and int(cursor) >= 5
    response = client.get(f"/v1/jobs/{mine}/queue?cursor={cursor}", headers=AUTH_A)
    assert response.status_code == 400 and error_of(response)["details"][0]["field"] == "cursor"
    # Their job, with my key and their cursor: 404, as if it did not exist.
    for path in (f"/v1/jobs/{theirs}/queue", f"/v1/jobs/{theirs}/queue?cursor={cursor}",
                 f"/v1/jobs/{theirs.upper()}/queue", f"/v1/jobs/{theirs}%20/queue", f"/v1/jobs/{theirs[:-1]}/queue"):
        assert client.get(path, headers=AUTH_A).status_code == 404, path
    assert client.post(f"/v1/jobs/{theirs}/labels", json=[{"id": "item-00000", "human_label": "A"}],
                       headers=AUTH_A).status_code == 404
    assert client.get(f"/v1/jobs/{theirs}/queue", headers=AUTH_B).get_json()["items"][0]["item"]["id"] == "item-00000"


# ---------------------------------------------------------------- the per-stage report

def test_a_cascade_jobs_report_reads_at_most_the_verdicts_a_report_may_load(engine: Engine) -> None:
    """The per-stage section is computed from every verdict of the job (not from summaries), so it
    obeys PJUDGE_STATS_MAX_VERDICTS like any report that loads verdicts: a tenant cannot make each
    GET of a report read millions of rows."""
    from tests.support.verdicts import small_cascade

    verdicts = small_cascade()
    for limit, status in ((len(verdicts) - 1, 422), (len(verdicts), 200)):
        client = new_app(engine, lambda job: None, PJUDGE_PRICES=json.dumps(PRICES),
                         PJUDGE_STATS_MAX_VERDICTS=str(limit)).test_client()
        items = [{"id": v.id, "prompt": "p", "response_a": "a", "response_b": "b"} for v in verdicts]
        response = post_job(client, items, profile=cascade(stage("small"), stage("large")))
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["job_id"]
        repo.record_verdicts(engine, job_id, list(enumerate(verdicts)))
        response = client.get(f"/v1/jobs/{job_id}/report", headers=AUTH_A)
        assert response.status_code == status, response.get_json()
        if status == 422:
            assert error_of(response)["code"] == "too_many_verdicts"
            assert "PJUDGE_STATS_MAX_VERDICTS" in error_of(response)["message"]
        else:
            assert response.get_json()["cascade_stages"]["escalated"]["items"] == 4


def test_provider_replay_which_reads_a_server_file_is_refused_over_http(client: FlaskClient, engine: Engine) -> None:
    """`replay` answers from a recorded file (replay_path, a server path refused over HTTP): without one
    the job could never run (every batch failing at the worker, retried), with one it reads server files."""
    assert refused(post_job(client, make_items(1), profile={"provider": "replay", "model": "x"}))[0] == "profile.provider"
    field, _ = refused(post_job(client, make_items(1), profile=cascade(stage("small"), stage("x", provider="replay"))))
    assert field == "profile.cascade[1].profile.provider"
    assert count(engine, Job) == 0
