"""The training export (issue 16.5): GET /v1/jobs/{id}/export's preference rows as JSON Lines and
Parquet, against the verdicts API of the same job; persona raw, column and fold; the filters; the
client's rows, files and Dataset; `pjudge export` over local files. In-process (Flask's test client,
and the client through httpx2's WSGI transport) on stored verdicts: no worker, no port."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import httpx2
import pyarrow.parquet as pq
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from api.client import AsyncClient, Client
from judge import exports
from judge.records import PairItem
from judge.templates import render_persona
from store import exports as store_exports
from store import repo
from tests.support.api import AUTH_A, AUTH_B, KEY_A, error_of, make_items, make_verdict, new_app, post_job

N = 40


def outcome(position: int) -> tuple[str | None, float | None, bool, bool]:
    """(winner, p_a, abstained, consistent) of the item at `position`: every kind of verdict."""
    if position % 10 == 3:
        return "tie", 0.5, False, True
    if position % 10 == 7:
        return None, None, False, False  # no call parsed
    if position % 10 == 9:
        return "A", 0.6, True, True  # abstained
    p_a = round(0.5 + (position % 5) * 0.12, 6) if position % 2 == 0 else round(0.5 - (position % 5) * 0.12, 6)
    winner = "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"
    return winner, p_a, False, position % 4 != 2


def store_verdicts(engine: Engine, job_id: str) -> None:
    """A verdict of `outcome` for every item of the job, out of order, as workers deliver them."""
    items = repo.job_items(engine, job_id, 0, N)
    verdicts = []
    for position, item in reversed(items):
        winner, p_a, abstained, consistent = outcome(position)
        verdict = make_verdict(item, winner, p_a, abstained).model_copy(update={"consistent": consistent})
        verdicts.append((position, verdict))
    for start in range(0, len(verdicts), 9):
        repo.record_verdicts(engine, job_id, verdicts[start:start + 9])


@pytest.fixture
def app(engine: Engine) -> Flask:
    return new_app(engine, lambda job: None)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def job_id(client: FlaskClient, engine: Engine) -> str:
    response = post_job(client, make_items(N), profile="persona-certainty")
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    store_verdicts(engine, job_id)
    return job_id


def verdicts_of(client: FlaskClient, job_id: str) -> list[dict[str, Any]]:
    page = client.get(f"/v1/jobs/{job_id}/verdicts?limit=1000", headers=AUTH_A).get_json()
    assert page["next_cursor"] is None
    return page["verdicts"]  # type: ignore[no-any-return]


def expected(verdicts: list[dict[str, Any]], min_certainty: float | None = None,
             consistent_only: bool = False) -> list[dict[str, Any]]:
    """The verdicts an export must hold, from the verdicts API: decided, not abstained, filtered."""
    return [v for v in verdicts if v["winner"] in ("A", "B") and not v["abstained"]
            and (min_certainty is None or (v["certainty"] is not None and v["certainty"] >= min_certainty))
            and (not consistent_only or v["consistent"])]


def jsonl(client: FlaskClient, job_id: str, query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/export?format=dpo{query}", headers=AUTH_A)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/x-ndjson"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def parquet(client: FlaskClient, job_id: str, query: str = "") -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/export?format=dpo&as=parquet{query}", headers=AUTH_A)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/vnd.apache.parquet"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{job_id}.dpo.parquet"'
    return pq.read_table(io.BytesIO(response.get_data())).to_pylist()  # type: ignore[no-any-return]


def check_rows(rows: list[dict[str, Any]], verdicts: list[dict[str, Any]]) -> None:
    """Each row is its verdict's pair, the winner chosen, with the verdict's p_a, certainty, consistent, judge."""
    items = {item["id"]: item for item in make_items(N)}
    assert [row["id"] for row in rows] == [v["id"] for v in verdicts]
    for row, verdict in zip(rows, verdicts, strict=True):
        item = items[row["id"]]
        chosen, rejected = ("response_a", "response_b") if verdict["winner"] == "A" else ("response_b", "response_a")
        assert (row["chosen"], row["rejected"]) == (item[chosen], item[rejected])
        assert (row["winner"], row["p_a"], row["certainty"], row["consistent"], row["judge"]) == (
            verdict["winner"], verdict["p_a"], verdict["certainty"], verdict["consistent"], verdict["judge"])


# ---------------------------------------------------------------- the rows and their filters

FILTERS = [(None, False), (0.4, False), (None, True), (0.2, True), (1.0, False), (0.0, False)]


def test_export_has_exactly_the_decided_non_abstained_filtered_verdicts(client: FlaskClient, job_id: str) -> None:
    verdicts = verdicts_of(client, job_id)
    # Every kind of verdict is there: decided either way, inconsistent, tied, failed, abstained.
    assert {v["winner"] for v in verdicts} == {"A", "B", "tie", None} and any(v["abstained"] for v in verdicts)
    for min_certainty, consistent_only in FILTERS:
        query = (f"&min_certainty={min_certainty}" if min_certainty is not None else "") + (
            "&consistent_only=true" if consistent_only else "")
        rows = jsonl(client, job_id, "&persona=column" + query)
        check_rows(rows, expected(verdicts, min_certainty, consistent_only))
        assert all(set(row) == {"id", "prompt", "chosen", "rejected", "persona", "winner", "p_a", "certainty",
                                "consistent", "judge"} for row in rows)
        assert parquet(client, job_id, query) == rows  # Parquet holds the same rows (persona=column by default)
        if min_certainty is None and not consistent_only:
            assert 0 < len(rows) < N and any(not row["consistent"] for row in rows)


def test_the_first_format_is_kept_for_existing_callers(client: FlaskClient, job_id: str) -> None:
    """No options: the stored persona (text or object) under `persona`, as the export always gave it."""
    items = {item["id"]: item for item in make_items(N)}
    rows = jsonl(client, job_id)
    check_rows(rows, expected(verdicts_of(client, job_id)))
    assert all(row["prompt"] == items[row["id"]]["prompt"] and row["persona"] == items[row["id"]]["persona"]
               for row in rows)
    assert {type(row["persona"]) for row in rows} == {str, dict}
    assert jsonl(client, job_id, "&persona=raw") == rows


def test_persona_folds_into_the_prompt_or_stays_a_column(client: FlaskClient, engine: Engine, job_id: str) -> None:
    items = {item["id"]: item for item in make_items(N)}
    folded = jsonl(client, job_id, "&persona=fold")
    column = jsonl(client, job_id, "&persona=column")
    assert [row["id"] for row in folded] == [row["id"] for row in column]
    for fold_row, column_row in zip(folded, column, strict=True):
        item = items[fold_row["id"]]
        text = render_persona(item["persona"])
        assert "persona" not in fold_row and column_row["persona"] == text
        assert fold_row["prompt"] == f"[User Profile]\n{text}\n\n[User Question]\n{item['prompt']}"
        assert column_row["prompt"] == item["prompt"]
    by_id = {row["id"]: row for row in column}
    assert by_id["item-00002"]["persona"] == "The person's age is 18-24. The person's religion is none."
    assert by_id["item-00001"]["persona"] == "The person is 55-64 years old."
    # Conversational: the folded persona is the system message; a column leaves the user message alone.
    chat = jsonl(client, job_id, "&persona=fold&conversational=true")
    first = items[chat[0]["id"]]
    assert chat[0]["prompt"] == [
        {"role": "system", "content": f"[User Profile]\n{render_persona(first['persona'])}"},
        {"role": "user", "content": first["prompt"]}]
    assert chat[0]["chosen"] == [{"role": "assistant", "content": folded[0]["chosen"]}]
    assert chat[0]["rejected"] == [{"role": "assistant", "content": folded[0]["rejected"]}]
    chat_column = jsonl(client, job_id, "&persona=column&conversational=1")
    assert chat_column[0]["prompt"] == [{"role": "user", "content": first["prompt"]}]
    for query in ("&persona=fold", "&persona=fold&conversational=true", "&conversational=true"):
        assert parquet(client, job_id, query) == jsonl(client, job_id, query if "persona" in query
                                                       else query + "&persona=column")
    # Items without a persona: the prompt unchanged, a null column.
    bare = post_job(client, make_items(4, persona=False)).get_json()["job_id"]
    repo.record_verdicts(engine, bare, [(p, make_verdict(item, "A", 0.9)) for p, item in repo.job_items(engine, bare, 0, 4)])
    assert [row["prompt"] for row in jsonl(client, bare, "&persona=fold")] == [i["prompt"] for i in make_items(4)]
    assert {row["persona"] for row in jsonl(client, bare, "&persona=column")} == {None}
    assert all("persona" not in row for row in jsonl(client, bare))


def test_pages_and_row_groups_stream_the_same_rows(client: FlaskClient, job_id: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Small keyset pages (filters skipping whole pages) and row groups give the same rows in order."""
    whole = jsonl(client, job_id, "&persona=column&min_certainty=0.3")
    monkeypatch.setattr(store_exports, "PAGE", 3)
    monkeypatch.setattr(exports, "ROW_GROUP", 4)
    assert jsonl(client, job_id, "&persona=column&min_certainty=0.3") == whole
    response = client.get(f"/v1/jobs/{job_id}/export?as=parquet&min_certainty=0.3", headers=AUTH_A)
    file = pq.ParquetFile(io.BytesIO(response.get_data()))
    assert file.num_row_groups == -(-len(whole) // 4) and file.read().to_pylist() == whole


def test_an_export_of_nothing_is_an_empty_file_with_the_columns(client: FlaskClient, job_id: str) -> None:
    fresh = post_job(client, make_items(3)).get_json()["job_id"]  # no verdict yet
    assert jsonl(client, fresh) == []
    table = pq.read_table(io.BytesIO(client.get(f"/v1/jobs/{fresh}/export?as=parquet", headers=AUTH_A).get_data()))
    assert table.num_rows == 0 and table.schema.names == [
        "id", "prompt", "chosen", "rejected", "persona", "winner", "p_a", "certainty", "consistent", "judge"]


BAD = [("min_certainty=1.5", "min_certainty"), ("min_certainty=-0.1", "min_certainty"),
       ("min_certainty=nan", "min_certainty"), ("min_certainty=high", "min_certainty"),
       ("format=csv", "format"), ("as=csv", "as"), ("persona=inline", "persona"),
       ("persona=raw&as=parquet", "persona"), ("consistent_only=maybe", "consistent_only"),
       ("conversational=2", "conversational"), ("as_=parquet", "as_"), ("min_certainty=%00", "min_certainty")]


def test_bad_parameters_are_400_naming_the_field(client: FlaskClient) -> None:
    job_id = post_job(client, make_items(2)).get_json()["job_id"]
    for query, field in BAD:
        response = client.get(f"/v1/jobs/{job_id}/export?{query}", headers=AUTH_A)
        assert response.status_code == 400, (query, response.get_data(as_text=True))
        assert error_of(response)["details"][0]["field"] == field, query


def test_another_keys_export_is_404_whatever_the_options(client: FlaskClient, job_id: str) -> None:
    for query in ("", "?as=parquet", "?persona=fold&min_certainty=0.5&consistent_only=true", "?as=csv"):
        response = client.get(f"/v1/jobs/{job_id}/export{query}", headers=AUTH_B)
        assert response.status_code == 404 and error_of(response)["code"] == "not_found", query
    assert client.get(f"/v1/jobs/{job_id}/export", headers={}).status_code == 401


# ---------------------------------------------------------------- the client

class AsyncWsgi(httpx2.AsyncBaseTransport):
    """httpx2's WSGI transport for AsyncClient (the app answers synchronously; tests only)."""

    def __init__(self, app: Flask):
        self.wsgi = httpx2.WSGITransport(app=app)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        response = self.wsgi.handle_request(httpx2.Request(request.method, request.url, headers=request.headers,
                                                           content=body))
        return httpx2.Response(response.status_code, headers=response.headers, content=response.read())


def test_the_client_exports_rows_and_files(app: Flask, client: FlaskClient, job_id: str, tmp_path: Path) -> None:
    verdicts = verdicts_of(client, job_id)
    out = tmp_path / "out"
    out.mkdir()
    with Client("http://pjudge.test", KEY_A, transport=httpx2.WSGITransport(app=app)) as api:
        job = api.job(job_id)
        rows = [line.model_dump(mode="json", exclude_none=True) for line in job.export_dpo()]
        assert rows == [{k: v for k, v in row.items() if v is not None} for row in jsonl(client, job_id)]
        filtered = list(job.export_dpo(persona="fold", min_certainty=0.4, consistent_only=True))
        assert [line.id for line in filtered] == [v["id"] for v in expected(verdicts, 0.4, True)]
        assert all(line.persona is None and line.prompt.startswith("[User Profile]") for line in filtered)
        saved = job.export_dpo(path=out / "dpo.jsonl", persona="column")
        assert saved == out / "dpo.jsonl"
        assert [json.loads(line) for line in saved.read_text().splitlines()] == jsonl(client, job_id, "&persona=column")
        as_parquet = job.save_dpo(out / "dpo.parquet", conversational=True)
        assert pq.read_table(as_parquet).to_pylist() == jsonl(client, job_id, "&persona=column&conversational=true")
        assert sorted(p.name for p in out.iterdir()) == ["dpo.jsonl", "dpo.parquet"]  # no temporary left

    async def run() -> tuple[list[str], Path]:
        async with AsyncClient("http://pjudge.test", KEY_A, transport=AsyncWsgi(app)) as api:
            job = api.job(job_id)
            ids = [line.id async for line in job.export_dpo(min_certainty=0.4)]
            return ids, await job.save_dpo(out / "async.parquet", persona="fold")

    ids, path = asyncio.run(run())
    assert ids == [v["id"] for v in expected(verdicts, 0.4)]
    assert pq.read_table(path).to_pylist() == jsonl(client, job_id, "&persona=fold")


def test_the_client_raises_the_servers_error_and_writes_no_file(app: Flask, job_id: str, tmp_path: Path) -> None:
    from api.client import ApiCallError

    out = tmp_path / "out"
    out.mkdir()
    with Client("http://pjudge.test", KEY_A, transport=httpx2.WSGITransport(app=app)) as api:
        with pytest.raises(ApiCallError) as bad:
            api.job(job_id).save_dpo(out / "dpo.parquet", persona="raw")
        assert bad.value.status == 400 and bad.value.details[0].field == "persona"
        with pytest.raises(ApiCallError) as missing:
            list(api.job("00000000-0000-0000-0000-000000000000").export_dpo())
        assert missing.value.status == 404
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- datasets (the TRL user's loaders)

@pytest.fixture
def hf_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hugging Face libraries offline, their cache in tmp_path."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf"


@pytest.mark.slow
def test_the_export_loads_with_datasets_load_dataset(client: FlaskClient, app: Flask, job_id: str, tmp_path: Path,
                                                     hf_offline: Path) -> None:
    """The acceptance check: datasets.load_dataset("json", ...) of the export has exactly the decided,
    non-abstained, filtered verdicts; Parquet and the client's Dataset are the same rows."""
    import datasets

    verdicts = verdicts_of(client, job_id)
    for query, min_certainty, consistent_only in [("&persona=column", None, False),
                                                  ("&persona=fold&min_certainty=0.4&consistent_only=true", 0.4, True)]:
        path = tmp_path / "dpo.jsonl"
        path.write_bytes(client.get(f"/v1/jobs/{job_id}/export?format=dpo{query}", headers=AUTH_A).get_data())
        loaded = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(hf_offline))
        want = expected(verdicts, min_certainty, consistent_only)
        check_rows(loaded.to_list(), want)
        assert {"prompt", "chosen", "rejected"} <= set(loaded.column_names)  # what DPOTrainer reads
        parquet_path = tmp_path / "dpo.parquet"
        parquet_path.write_bytes(client.get(f"/v1/jobs/{job_id}/export?as=parquet{query}", headers=AUTH_A).get_data())
        from_parquet = datasets.load_dataset("parquet", data_files=str(parquet_path), split="train",
                                             cache_dir=str(hf_offline))
        assert from_parquet.to_list() == loaded.to_list()
    with Client("http://pjudge.test", KEY_A, transport=httpx2.WSGITransport(app=app)) as api:
        dataset = api.job(job_id).export_dpo(as_dataset=True, persona="fold", conversational=True)
        assert isinstance(dataset, datasets.Dataset)
        assert dataset.to_list() == jsonl(client, job_id, "&persona=fold&conversational=true")
        assert api.job(job_id).to_dataset(min_certainty=0.9).num_rows == len(expected(verdicts, 0.9))


def test_a_missing_datasets_package_is_a_clear_error(app: Flask, job_id: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with Client("http://pjudge.test", KEY_A, transport=httpx2.WSGITransport(app=app)) as api, \
            pytest.raises(ImportError, match=r"persona-judge\[datasets\]"):
        api.job(job_id).to_dataset()


def test_rows_of_local_records_are_the_same_as_the_services(client: FlaskClient, job_id: str) -> None:
    """judge.exports over PairItems and Verdict records (what `pjudge export` reads) makes the service's rows."""
    from judge.records import Verdict

    items = [PairItem.model_validate(item) for item in make_items(N)]
    verdicts = [Verdict.model_validate(v) for v in verdicts_of(client, job_id)]
    selection = exports.Selection(persona="fold", min_certainty=0.2)
    by_id = {item.id: item.model_dump(mode="json", exclude_none=True) for item in items}
    rows = list(exports.preference_rows(((by_id[v.id], exports.Decision.of(v)) for v in verdicts), selection))
    assert rows == jsonl(client, job_id, "&persona=fold&min_certainty=0.2")


# ---------------------------------------------------------------- pjudge export

def test_pjudge_export_of_local_files_makes_the_services_rows(client: FlaskClient, job_id: str,
                                                               tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pjudge.cli import main

    items_path, verdicts_path = tmp_path / "items.jsonl", tmp_path / "verdicts.jsonl"
    items_path.write_text("".join(json.dumps(item) + "\n" for item in make_items(N)))
    verdicts = verdicts_of(client, job_id)
    verdicts_path.write_text("".join(json.dumps(v) + "\n" for v in reversed(verdicts)))  # rows follow the items
    runner = CliRunner()
    shown = runner.invoke(main, ["export", str(items_path), str(verdicts_path)])
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line) for line in shown.stdout.splitlines()] == jsonl(client, job_id)
    out = tmp_path / "out" / "dpo.parquet"
    written = runner.invoke(main, ["export", str(items_path), str(verdicts_path), "-o", str(out), "--persona", "fold",
                                   "--min-certainty", "0.4", "--consistent-only", "--conversational"])
    assert written.exit_code == 0, written.output
    want = jsonl(client, job_id, "&persona=fold&min_certainty=0.4&consistent_only=true&conversational=true")
    assert pq.read_table(out).to_pylist() == want and f"wrote {len(want)} rows" in written.stderr
    assert [p.name for p in out.parent.iterdir()] == ["dpo.parquet"]
    raw = runner.invoke(main, ["export", str(items_path), str(verdicts_path), "-o", str(out), "--persona", "raw"])
    assert raw.exit_code == 2 and "--persona" in raw.output
    bad = runner.invoke(main, ["export", str(items_path), str(verdicts_path), "--min-certainty", "2"])
    assert bad.exit_code == 2 and "--min-certainty" in bad.output
    items_path.write_text("".join(json.dumps(item) + "\n" for item in make_items(N)[1:]))
    stranger = runner.invoke(main, ["export", str(items_path), str(verdicts_path)])
    assert stranger.exit_code == 2 and "item-00000" in stranger.output
