"""/v1/credentials: a caller's own provider keys, stored encrypted (store/credentials.py) and
named by jobs in `profile.credential`. Listed by name, provider and date; the key is never
returned, logged, or stored anywhere in clear."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from flask import Blueprint, Response
from pydantic import ValidationError

from api.auth import authenticate, current_owner
from api.context import state
from api.errors import ApiError, invalid, json_response, problem, pydantic_problems, summarize
from api.parsing import read_json_body
from api.schemas import CredentialCreate, CredentialList, CredentialOut
from store import credentials

bp = Blueprint("credentials", __name__, url_prefix="/v1/credentials")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _out(name: str, provider: str, created: datetime) -> CredentialOut:
    created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
    return CredentialOut(name=name, provider=provider, created_at=created)


@bp.before_request
def _authenticate() -> None:
    authenticate()


@bp.post("")
def create_credential() -> Response:
    body = read_json_body()
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object {name, provider, api_key}", [problem(None, "expected an object")])
    try:
        given = CredentialCreate.model_validate(body, strict=True)
    except ValidationError as exc:
        problems = pydantic_problems(exc)  # never the input: it may be the key
        raise invalid(summarize(problems, "invalid credential"), problems) from None
    row = credentials.create(state().engine, current_owner(), given.name, given.provider, given.api_key)
    if row is None:
        raise ApiError(409, "conflict", f"a credential named '{given.name}' exists (delete it first)",
                       [problem("name", "already used")])
    out = _out(row.name, row.provider, row.created_at)
    return json_response(out.model_dump(mode="json"), 201, {"Location": f"/v1/credentials/{row.name}"})


@bp.get("")
def list_credentials() -> Response:
    rows = credentials.listing(state().engine, current_owner())
    document = CredentialList(credentials=[_out(name, provider, created) for name, provider, created in rows])
    return json_response(document.model_dump(mode="json"))


@bp.delete("/<name>")
def delete_credential(name: str) -> Response:
    if not _NAME.match(name) or not credentials.remove(state().engine, current_owner(), name):
        raise ApiError(404, "not_found", "credential not found")
    return Response(status=204)
