"""Issue 12, findings 2-4, as a hostile tenant would try them: the API in-process, the worker's own
task (worker.tasks.judge_batch, run eagerly in this process), SQLite, and small HTTP servers on
loopback standing in for "a host the client chose" (recording every request they get) and for
the operator's endpoint (the simulated LLM)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from api.app import create_app
from judge.jsonl import read_items
from judge.profiles import load_profile
from judge.settings import reset_settings
from store import repo
from store.db import get_engine
from tests.support.cli import EXAMPLE_ITEMS

KEY_A = "tenant-a-key-0123456789abcdef"
KEY_B = "tenant-b-key-0123456789abcdef"
AUTH_A = {"Authorization": f"Bearer {KEY_A}"}
AUTH_B = {"Authorization": f"Bearer {KEY_B}"}
# Server secrets a hostile endpoint would like to see, each where an SDK or a profile could find it.
SERVER_SECRETS = {
    "OPENAI_API_KEY": "sk-server-openai-SECRET-0123456789",
    "ANTHROPIC_API_KEY": "sk-ant-server-anthropic-SECRET-0123456789",
    "ANTHROPIC_AUTH_TOKEN": "server-anthropic-token-SECRET-0123456789",
    "GOOGLE_API_KEY": "server-google-SECRET-0123456789",
    "OPENAI_ORG_ID": "org-server-SECRET-0123456789",
    "OPENAI_PROJECT_ID": "proj-server-SECRET-0123456789",
}
METADATA_SECRET = "AKIA-INSTANCE-ROLE-SECRET-0123456789"
FABRICATED = "[[B]]\n[[100]] fabricated by tenant B"


class Recorder:
    """An HTTP server on loopback answering every POST like an OpenAI- or Anthropic-compatible
    server (or with `status` and `body`), recording each request's path, headers and body."""

    def __init__(self, answer: str = "[[A]]\n[[80]]", status: int = 200, body: bytes | None = None):
        self.answer, self.status, self.body = answer, status, body
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length)
                recorder.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                          "body": payload.decode("utf-8", "replace")})
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                out = recorder.body if recorder.body is not None else recorder.reply(self.path)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def reply(self, path: str) -> bytes:
        if path.endswith("/messages"):
            return json.dumps({"content": [{"type": "text", "text": self.answer}],
                               "usage": {"input_tokens": 10, "output_tokens": 3}}).encode()
        return json.dumps({"choices": [{"message": {"content": self.answer}}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 3}}).encode()

    def seen(self) -> str:
        return json.dumps(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(**options: Any) -> Recorder:
        started.append(Recorder(**options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Service]]:
    """An API and an in-process worker sharing one SQLite database and the environment's settings."""
    url = f"sqlite:///{tmp_path}/service.sqlite"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # never used: tasks run in this process
    monkeypatch.setenv("PJUDGE_API_KEYS", f"{KEY_A},{KEY_B}")
    monkeypatch.setenv("PJUDGE_API_KEY", KEY_A)  # the CLI's variable: another tenant's secret on a shared host
    for name, value in SERVER_SECRETS.items():
        monkeypatch.setenv(name, value)

    def make(**env: str) -> Service:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        reset_settings()
        return Service(get_engine(url))

    yield make


class Service:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.client: FlaskClient = create_app(engine, lambda job: None).test_client()

    def post(self, profile: Any, auth: dict[str, str] = AUTH_A, n: int = 2) -> Any:
        items = [i.model_dump(exclude_none=True) for i in read_items(EXAMPLE_ITEMS)[:n]]
        return self.client.post("/v1/jobs", json={"items": items, "profile": profile}, headers=auth)

    def run(self, job_id: str) -> list[dict[str, Any]]:
        """What a worker does with the job's batches; then the verdicts as the API returns them."""
        from worker.tasks import judge_batch

        job = repo.get_job(self.engine, job_id)
        assert job is not None
        for start, end in repo.batches(job):
            judge_batch.apply(args=(job_id, start, end)).get()
        owner = AUTH_A if job.owner == repo.hash_key(KEY_A) else AUTH_B
        page = self.client.get(f"/v1/jobs/{job_id}/verdicts", headers=owner)
        assert page.status_code == 200
        return page.get_json()["verdicts"]  # type: ignore[no-any-return]

    def judge(self, profile: Any, auth: dict[str, str] = AUTH_A, n: int = 2) -> list[dict[str, Any]]:
        response = self.post(profile, auth, n)
        assert response.status_code == 202, response.get_json()
        return self.run(response.get_json()["job_id"])


def errors_of(response: Any) -> list[str | None]:
    assert response.status_code == 422, response.get_json()
    return [d["field"] for d in response.get_json()["error"]["details"]]


def secrets_in(text_: str) -> list[str]:
    return [name for name, value in {**SERVER_SECRETS, "PJUDGE_API_KEY": KEY_A}.items() if value in text_]


# ---------------------------------------------------------------- finding 2: provider keys

CLIENT_PROFILES = [
    ("openai", "sdk", "/v1"),
    ("anthropic", "sdk", ""),
    ("openai-compatible", "sdk", "/v1"),
    ("openai-compatible", "direct", "/v1"),
]


@pytest.mark.parametrize("provider,transport,path", CLIENT_PROFILES)
def test_no_server_secret_reaches_a_client_chosen_endpoint_in_any_provider_or_transport(
        service: Callable[..., Service], recorder: Callable[..., Recorder], provider: str, transport: str,
        path: str) -> None:
    svc = service(PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")  # the "client's host" is on loopback here
    host = recorder()
    verdicts = svc.judge({"provider": provider, "transport": transport, "model": "m", "max_retries": 0,
                          "base_url": host.url + path})
    assert len(host.requests) == 2 * 2, [v["error"] for v in verdicts]  # 2 items, both orders: it was called
    assert secrets_in(host.seen()) == []
    assert all(v["winner"] is not None for v in verdicts)


@pytest.mark.parametrize("provider,variable", [
    ("openai", "GOOGLE_API_KEY"), ("openai-compatible", "ANTHROPIC_API_KEY"), ("anthropic", "OPENAI_API_KEY"),
    ("openai", "PJUDGE_API_KEY"), ("openai", "OPENAI_API_KEY"),
])
def test_api_key_env_sends_no_server_variable_to_a_client_chosen_endpoint(
        service: Callable[..., Service], recorder: Callable[..., Recorder], provider: str, variable: str) -> None:
    svc = service(PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    host = recorder()
    profile = {"provider": provider, "model": "m", "max_retries": 0, "api_key_env": variable,
               "base_url": host.url + ("" if provider == "anthropic" else "/v1")}
    response = svc.post(profile)
    if response.status_code == 202:
        svc.run(response.get_json()["job_id"])
    assert secrets_in(host.seen()) == []
    assert errors_of(response) == ["profile.api_key_env"]


def test_the_server_key_goes_to_the_operators_endpoint_and_only_there(
        service: Callable[..., Service], recorder: Callable[..., Recorder]) -> None:
    operator, lookalike = recorder(), recorder()
    svc = service(OPENAI_BASE_URL=operator.url + "/v1", PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    svc.judge("persona-certainty")  # provider openai, no base_url: the operator's endpoint
    assert operator.requests and all(r["headers"]["authorization"] == f"Bearer {SERVER_SECRETS['OPENAI_API_KEY']}"
                                     for r in operator.requests)
    # The same host and path on another port, and the operator's URL under another provider.
    svc.judge({"provider": "openai", "model": "m", "base_url": lookalike.url + "/v1"})
    svc.judge({"provider": "anthropic", "model": "m", "base_url": operator.url})
    assert lookalike.requests and secrets_in(lookalike.seen()) == []
    assert secrets_in(json.dumps(operator.requests[4:])) == []


# Every provider and transport (its base URL's path: the SDKs post to <base>/chat/completions and
# <base>/v1/messages).
PROVIDERS = [("openai", "sdk", "/v1"), ("anthropic", "sdk", ""), ("openai-compatible", "sdk", "/v1"),
             ("openai-compatible", "direct", "/v1")]
OPENAI_SDK = {"OPENAI_API_KEY", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"}  # the key and the SDK's own headers
ANTHROPIC_SDK = {"ANTHROPIC_API_KEY"}  # (with a key given, the SDK sends no ANTHROPIC_AUTH_TOKEN)
# (how the operator configures the recording endpoint R, {(provider, transport): the secrets R may get});
# a combination not listed gets none. "{R}" is the endpoint's URL.
BINDINGS: list[tuple[dict[str, str], dict[tuple[str, str], set[str]]]] = [
    ({"PJUDGE_ENDPOINTS": "{R},{R}/v1"}, {}),  # a local model server for every provider: no server key
    ({"PJUDGE_API_BASE_URLS": "{R},{R}/v1"}, {}),
    ({"PJUDGE_BASE_URL": "{R}/v1"}, {}),
    ({"OPENAI_BASE_URL": "{R}/v1"}, {("openai", "sdk"): OPENAI_SDK}),
    ({"ANTHROPIC_BASE_URL": "{R}"}, {("anthropic", "sdk"): ANTHROPIC_SDK}),
    ({"PJUDGE_ENDPOINTS": "openai={R}/v1,anthropic={R}"},
     {("openai", "sdk"): OPENAI_SDK, ("anthropic", "sdk"): ANTHROPIC_SDK}),
    ({"PJUDGE_ENDPOINTS": "openai-compatible={R}/v1"},
     {("openai-compatible", "sdk"): OPENAI_SDK, ("openai-compatible", "direct"): {"OPENAI_API_KEY"}}),
    ({"PJUDGE_ENDPOINTS": "openai-compatible={R}/v1|GOOGLE_API_KEY,{R}", "PJUDGE_API_KEY_ENVS": "GOOGLE_API_KEY"},
     {("openai-compatible", "sdk"): {"GOOGLE_API_KEY"}, ("openai-compatible", "direct"): {"GOOGLE_API_KEY"}}),
    ({"PJUDGE_ENDPOINTS": "anthropic={R}|GOOGLE_API_KEY,{R}/v1"}, {("anthropic", "sdk"): {"GOOGLE_API_KEY"}}),
]


@pytest.mark.parametrize("config,expected", BINDINGS, ids=[" ".join(f"{k}={v}" for k, v in c.items())
                                                           for c, _ in BINDINGS])
def test_each_server_secret_reaches_only_the_endpoints_the_operator_bound_it_to(
        service: Callable[..., Service], recorder: Callable[..., Recorder], config: dict[str, str],
        expected: dict[tuple[str, str], set[str]]) -> None:
    host = recorder()
    svc = service(PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true", **{k: v.replace("{R}", host.url) for k, v in config.items()})
    for number, (provider, transport, path) in enumerate(PROVIDERS):
        host.requests.clear()
        profile = {"provider": provider, "transport": transport, "model": "sim-judge", "max_retries": 0,
                   "max_reasks": 0, "base_url": host.url + path, "temperature": number / 10}  # not cached
        verdicts = svc.judge(profile)
        assert len(host.requests) == 4, (provider, transport, [v["error"] for v in verdicts])
        assert set(secrets_in(host.seen())) == expected.get((provider, transport), set()), (provider, transport)
        # api_key_env sends a server variable only where it is bound (here: nowhere but GOOGLE_API_KEY's).
        for variable in ("GOOGLE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PJUDGE_API_KEY"):
            host.requests.clear()
            monkeypatched = svc.post({**profile, "api_key_env": variable})
            if monkeypatched.status_code == 202:
                svc.run(monkeypatched.get_json()["job_id"])
                assert variable == "GOOGLE_API_KEY" and "GOOGLE_API_KEY" in expected.get((provider, transport), ())
            else:
                assert errors_of(monkeypatched) == ["profile.api_key_env"]
            assert set(secrets_in(host.seen())) <= expected.get((provider, transport), set())


def test_api_key_env_is_refused_at_the_servers_own_endpoints_unless_bound_there(
        service: Callable[..., Service], recorder: Callable[..., Recorder]) -> None:
    """An allowed variable is still not sent to api.openai.com, api.anthropic.com or a local server."""
    host = recorder()
    svc = service(PJUDGE_API_KEY_ENVS="GOOGLE_API_KEY", PJUDGE_ENDPOINTS=f"{host.url}/v1")
    for profile in ({"provider": "openai", "model": "m"}, {"provider": "anthropic", "model": "m"},
                    {"provider": "openai-compatible", "model": "m", "base_url": f"{host.url}/v1"}):
        assert errors_of(svc.post({**profile, "api_key_env": "GOOGLE_API_KEY"})) == ["profile.api_key_env"]
    assert host.requests == []


def test_a_job_at_any_operator_endpoint_is_priced_by_the_server_whatever_key_it_uses(
        service: Callable[..., Service], recorder: Callable[..., Recorder]) -> None:
    """A keyless local server (PJUDGE_BASE_URL) with the tenant's own credential: not free."""
    host = recorder()
    svc = service(PJUDGE_BASE_URL=f"{host.url}/v1", PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    stored = svc.client.post("/v1/credentials", json={"name": "mine", "provider": "openai-compatible",
                                                      "api_key": "sk-tenant-own-0123456789"}, headers=AUTH_A)
    assert stored.status_code == 201
    free = {"input_per_mtok": 0.0, "output_per_mtok": 0.0}
    profile = {"provider": "openai-compatible", "model": "sim-judge", "credential": "mine"}
    for base_url in ({}, {"base_url": f"{host.url}/v1"}):
        assert errors_of(svc.post({**profile, **base_url, "price": free})) == ["profile.price"]
    verdicts = svc.judge(profile)
    assert all(c["cost_usd"] > 0 for v in verdicts for c in v["calls"])
    # At the tenant's own endpoint its price stands (its provider bills it, not the server).
    own = recorder()
    mine = svc.judge({**profile, "base_url": f"{own.url}/v1", "price": free})
    assert own.requests and all(c["cost_usd"] == 0 for v in mine for c in v["calls"])


def test_a_tenants_stored_credential_is_used_for_its_jobs_only_and_never_shown(
        service: Callable[..., Service], recorder: Callable[..., Recorder], caplog: pytest.LogCaptureFixture) -> None:
    svc = service(PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    host = recorder()
    own_key = "sk-tenant-a-own-key-0123456789abcdef"
    stored = svc.client.post("/v1/credentials", json={"name": "mine", "provider": "openai-compatible",
                                                      "api_key": own_key}, headers=AUTH_A)
    assert stored.status_code == 201 and set(stored.get_json()) == {"name", "provider", "created_at"}
    again = svc.client.post("/v1/credentials", json={"name": "mine", "provider": "openai", "api_key": "x"},
                            headers=AUTH_A)
    assert again.status_code == 409
    listed = svc.client.get("/v1/credentials", headers=AUTH_A).get_json()
    assert [c["name"] for c in listed["credentials"]] == ["mine"]
    assert svc.client.get("/v1/credentials", headers=AUTH_B).get_json() == {"credentials": []}

    profile = {"provider": "openai-compatible", "model": "m", "base_url": host.url + "/v1", "credential": "mine"}
    for transport in ("sdk", "direct"):
        svc.judge({**profile, "transport": transport})
    assert {r["headers"]["authorization"] for r in host.requests} == {f"Bearer {own_key}"}
    assert secrets_in(host.seen()) == []
    # Another tenant cannot name it; an unknown one or one of another provider is refused.
    assert errors_of(svc.post(profile, AUTH_B)) == ["profile.credential"]
    assert errors_of(svc.post({**profile, "credential": "nope"})) == ["profile.credential"]
    assert errors_of(svc.post({**profile, "provider": "anthropic"})) == ["profile.credential"]
    # Never in clear in the database, the API's answers or the logs.
    with svc.engine.connect() as conn:
        dumped = json.dumps([list(map(str, row)) for table in ("jobs", "credentials", "calls", "verdicts")
                             for row in conn.execute(text(f"SELECT * FROM {table}"))])
    answers = json.dumps(listed) + stored.get_data(as_text=True)
    assert own_key not in dumped + answers + caplog.text
    assert svc.client.delete("/v1/credentials/mine", headers=AUTH_B).status_code == 404
    waiting = svc.post(profile)  # queued before the credential is deleted: its calls then fail
    assert svc.client.delete("/v1/credentials/mine", headers=AUTH_A).status_code == 204
    assert svc.client.get("/v1/credentials", headers=AUTH_A).get_json() == {"credentials": []}
    orphaned = svc.run(waiting.get_json()["job_id"])
    assert all(v["error"] == "provider: credential 'mine' no longer exists" for v in orphaned)


def test_stored_keys_are_encrypted_under_the_servers_secret(service: Callable[..., Service],
                                                            isolated_home: Path) -> None:
    from store import credentials, vault

    svc = service()
    assert credentials.create(svc.engine, "owner", "k", "openai", "sk-plain-0123456789") is not None
    key_file = isolated_home / vault.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert credentials.key_of(svc.engine, "owner", "k") == ("openai", "sk-plain-0123456789")
    other = service(PJUDGE_SECRET_KEY="another server's secret")
    with pytest.raises(vault.VaultError):
        credentials.key_of(other.engine, "owner", "k")


def test_credentials_are_validated_like_everything_else(service: Callable[..., Service]) -> None:
    svc = service()
    for body, field in (({"name": "../x", "provider": "openai", "api_key": "k"}, "name"),
                        ({"name": "x", "provider": "azure", "api_key": "k"}, "provider"),
                        ({"name": "x", "provider": "openai", "api_key": "has space"}, "api_key"),
                        ({"name": "x", "provider": "openai"}, "api_key"),
                        ({"name": "x", "provider": "openai", "api_key": "k", "extra": 1}, "extra")):
        response = svc.client.post("/v1/credentials", json=body, headers=AUTH_A)
        assert errors_of(response) == [field]
        assert "has space" not in response.get_data(as_text=True)
    assert svc.client.get("/v1/credentials").status_code == 401


# ---------------------------------------------------------------- finding 3: SSRF with read-back

@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1:9/v1", "http://localhost:9/v1", "http://[::1]:9/v1", "http://169.254.169.254/latest",
    "http://metadata.google.internal/v1", "http://10.0.0.7/v1", "http://[fd00:ec2::254]/", "http://0.0.0.0:9/",
    "http://[::ffff:169.254.169.254]/", "javascript:alert(1)", "file:///etc/passwd",
    "http://user:password@example.com/v1", "http://127.0.0.1:18901.nip.io/v1", "ftp://example.com/",
])
def test_client_chosen_internal_or_odd_endpoints_are_refused_at_post(service: Callable[..., Service],
                                                                      base_url: str) -> None:
    response = service().post({"provider": "openai-compatible", "model": "m", "base_url": base_url})
    assert errors_of(response) == ["profile.base_url"]


def test_a_refused_client_host_gets_one_fixed_message_that_tells_nothing_of_how_it_resolves(
        service: Callable[..., Service]) -> None:
    svc = service()
    messages = set()
    for base_url in ("http://127.0.0.1:9/v1", "http://localhost:9/v1", "http://10.0.0.7/v1", "http://[fe80::1]/",
                     "http://169.254.169.254/", "http://metadata.google.internal/v1", "http://no-such-host.invalid/v1"):
        response = svc.post({"provider": "openai-compatible", "model": "m", "base_url": base_url})
        assert errors_of(response) == ["profile.base_url"]
        messages.add(json.dumps(response.get_json()["error"]))
    assert len(messages) == 1
    shown = messages.pop()
    assert not any(word in shown for word in ("loopback", "private", "link-local", "metadata", "resolved"))


def test_metadata_addresses_stay_refused_when_private_endpoints_are_allowed(service: Callable[..., Service]) -> None:
    svc = service(PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    for base_url in ("http://169.254.169.254/latest", "http://[fd00:ec2::254]/", "http://metadata.google.internal/"):
        assert errors_of(svc.post({"provider": "openai", "model": "m", "base_url": base_url})) == ["profile.base_url"]


@pytest.mark.parametrize("provider,transport,path", CLIENT_PROFILES)
@pytest.mark.parametrize("status,body", [
    (500, b'{"error": {"message": "' + METADATA_SECRET.encode() + b'"}}'),
    (400, METADATA_SECRET.encode() + b" plain text"),
    (200, b'{"Code": "Success", "SecretAccessKey": "' + METADATA_SECRET.encode() + b'"}'),
    (200, b"not json " + METADATA_SECRET.encode()),
])
def test_a_client_chosen_endpoints_answer_never_comes_back_in_errors(
        service: Callable[..., Service], recorder: Callable[..., Recorder], provider: str, transport: str,
        path: str, status: int, body: bytes) -> None:
    svc = service(PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    host = recorder(status=status, body=body)
    verdicts = svc.judge({"provider": provider, "transport": transport, "model": "m", "max_retries": 0,
                          "max_reasks": 0, "base_url": host.url + path})
    assert host.requests
    errors = [c["error"] for v in verdicts for c in v["calls"]]
    assert all(errors) and len(errors) == 4
    shown = json.dumps(verdicts)
    assert METADATA_SECRET not in shown and "plain text" not in shown, shown[:1500]


@pytest.mark.parametrize("provider,transport,path", CLIENT_PROFILES)
def test_a_host_that_resolves_to_loopback_at_call_time_is_not_called(
        service: Callable[..., Service], recorder: Callable[..., Recorder], provider: str, transport: str,
        path: str) -> None:
    """DNS rebinding: the check at POST passed (here: bypassed by storing the job directly), the
    name now resolves to an internal address; the worker refuses the connection itself."""
    svc = service()
    host = recorder()
    port = host.url.rsplit(":", 1)[1]
    profile = load_profile("persona-certainty", provider=provider, transport=transport, model="m", max_retries=0,
                           base_url=f"http://localhost:{port}{path}")
    job = repo.create_job(svc.engine, repo.hash_key(KEY_A), read_items(EXAMPLE_ITEMS)[:2], profile).job
    verdicts = svc.run(job.id)
    assert host.requests == []
    # (The SDKs' aiohttp transport reports a refused connection as a connect timeout.)
    assert all(c["error"].startswith(("provider: APIConnectionError", "provider: APITimeoutError"))
               for v in verdicts for c in v["calls"])


def test_the_operators_own_loopback_endpoint_stays_allowed(service: Callable[..., Service], start_sim: Any) -> None:
    sim = start_sim("--seed", "2")
    svc = service(PJUDGE_ENDPOINTS=sim.openai_base_url)
    for transport in ("sdk", "direct"):
        verdicts = svc.judge({"provider": "openai-compatible", "model": "sim-judge", "transport": transport,
                              "base_url": sim.openai_base_url})
        assert all(v["winner"] is not None and v["error"] is None for v in verdicts)


# ---------------------------------------------------------------- finding 4: cache poisoning and oracle

def test_another_tenants_answers_never_reach_my_verdicts_nor_tell_what_i_judged(
        service: Callable[..., Service], recorder: Callable[..., Recorder], start_sim: Any) -> None:
    sim = start_sim("--seed", "5", "--noise", "0")
    fake = recorder(answer=FABRICATED)
    svc = service(OPENAI_BASE_URL=sim.openai_base_url, PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true")
    # Tenant B judges the items against its own server, which fabricates B wins with certainty 100.
    poisoned = svc.judge({"profile": "persona-certainty", "base_url": fake.url + "/v1"}, AUTH_B, n=4)
    assert all("fabricated" in c["raw"] for v in poisoned for c in v["calls"])
    # Tenant A judges the same items with the built-in profile at the operator's endpoint.
    served = sim.stats()["completions"]
    mine = svc.judge("persona-certainty", AUTH_A, n=4)
    assert all(not c["cached"] and "fabricated" not in (c["raw"] or "") for v in mine for c in v["calls"])
    assert sim.stats()["completions"] - served == 4 * 2
    # Tenant B asks the same question as A did: nothing comes back cached, so B learns nothing of A's.
    probe = svc.judge("persona-certainty", AUTH_B, n=4)
    assert not any(c["cached"] for v in probe for c in v["calls"])
    assert all(c["cost_usd"] > 0 for v in probe for c in v["calls"])
    # A tenant's own rerun is still answered from the cache.
    rerun = svc.judge("persona-certainty", AUTH_A, n=4)
    assert all(c["cached"] for v in rerun for c in v["calls"])


def test_operators_may_let_tenants_share_what_the_servers_keys_answered(
        service: Callable[..., Service], recorder: Callable[..., Recorder], start_sim: Any) -> None:
    sim = start_sim("--seed", "5")
    fake = recorder(answer=FABRICATED)
    svc = service(OPENAI_BASE_URL=sim.openai_base_url, PJUDGE_ALLOW_PRIVATE_ENDPOINTS="true",
                  PJUDGE_SHARED_CACHE="true")
    svc.judge({"profile": "persona-certainty", "base_url": fake.url + "/v1"}, AUTH_B)
    first = svc.judge("persona-certainty", AUTH_A)
    shared = svc.judge("persona-certainty", AUTH_B)
    assert not any(c["cached"] for v in first for c in v["calls"])
    assert all(c["cached"] and "fabricated" not in c["raw"] for v in shared for c in v["calls"])
