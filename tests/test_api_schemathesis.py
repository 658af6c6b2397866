"""Property-based conformance: schemathesis generates requests from /v1/openapi.json (valid and
invalid ones), sends them to the WSGI app, and checks that no answer is a 5xx and that every
answer's status, content type and body conform to the document."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from api.app import create_app
from store import repo
from store.db import get_engine
from tests.support.api import AUTH_A, KEY_A, judge_all, make_items

pytestmark = pytest.mark.slow  # hundreds of generated requests

MAX_EXAMPLES = 40  # per operation; the coverage phase adds its own boundary cases


@pytest.fixture
def seeded_app(tmp_path: Path) -> tuple[Flask, str]:
    engine = get_engine(f"sqlite:///{tmp_path}/schemathesis.sqlite")
    # Unthrottled: schemathesis sends hundreds of requests without a key on purpose, and expects
    # each to be a 401 (the throttle's 429 has tests of its own).
    app = create_app(engine, lambda job: None, {"PJUDGE_API_KEYS": KEY_A, "PJUDGE_AUTH_FAILURES_PER_MINUTE": 0})
    response = app.test_client().post("/v1/jobs", json={"items": make_items(12)}, headers=AUTH_A)
    job_id = response.get_json()["job_id"]
    # Some items abstained: GET /queue then answers entries whose schema is checked too.
    judge_all(engine, job_id, lambda p, _: ("A", 0.55, True) if p % 3 == 0 else ("B", 0.2, False))
    assert repo.get_job(engine, job_id) is not None
    return app, job_id


@pytest.fixture
def api_schema(seeded_app: tuple[Flask, str]) -> Any:
    app, _ = seeded_app
    # The key through the document's bearer scheme, so that schemathesis knows when it leaves it out.
    config = SchemathesisConfig.from_dict({"auth": {"openapi": {"bearer": {"bearer": KEY_A}}}})
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")
_turn = itertools.count()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_openapi_document(case: Any, seeded_app: tuple[Flask, str]) -> None:
    _, job_id = seeded_app
    # Random ids only ever reach the 404 path: every other case uses the seeded job instead.
    if case.path_parameters and "job_id" in case.path_parameters and next(_turn) % 2 == 0:
        case.path_parameters["job_id"] = job_id
    # positive_data_acceptance is left out: a schema cannot say which profile names exist or which
    # item ids a job holds, so schema-valid requests are rightly refused with 422.
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500
