"""Reading request bodies and query strings defensively: every way a body can be wrong (type,
encoding, syntax, NaN, nesting, lone surrogates, NUL) becomes a 400/422, never a 500."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from api.errors import ApiError, invalid, problem, pydantic_problems, summarize
from judge.jsonl import bad_text, find_bad_text, strict_json

M = TypeVar("M", bound=BaseModel)

# Escapes that decode to text the database cannot store: a surrogate half (invalid in UTF-8) or
# NUL (PostgreSQL text rejects it). Only bodies containing one are walked in full.
_SUSPICIOUS = re.compile(rb"\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)")
_JOB_ID = re.compile(r"^[0-9a-fA-F-]{1,36}$")


def find_bad_string(document: object) -> str | None:
    """The first problem with a string (key or value) anywhere in a decoded document."""
    found = find_bad_text(document)
    return found[1] if found else None


def deeper_than(value: object, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iteratively: a deep value must not overflow
    the check meant to catch it)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict | list):
            if depth >= limit:
                return True
            children = current.values() if isinstance(current, dict) else current
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _is_json_mimetype(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def read_json_body() -> Any:
    """The decoded JSON body. The size limit (MAX_CONTENT_LENGTH) is enforced by werkzeug before
    anything is read: a larger Content-Length raises 413 at once."""
    if not _is_json_mimetype(request.mimetype):
        raise ApiError(400, "unsupported_media_type", "the body must be JSON: send 'Content-Type: application/json'",
                       [problem("Content-Type", "must be application/json")])
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise ApiError(400, "bad_request", "the body must be UTF-8 encoded JSON",
                       [problem("Content-Type", "the charset must be utf-8")])
    raw = request.get_data(cache=False)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A streamed (chunked) body is cut at the limit by werkzeug without an error: refuse it.
        raise RequestEntityTooLarge()
    if not raw.strip():
        raise ApiError(400, "bad_request", "the request body is empty: send a JSON document")
    try:
        # utf-8-sig: a leading byte-order mark (some Windows tools write one) is not an error.
        document = strict_json(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, "bad_request",
                       f"malformed JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except ValueError as exc:  # NaN/Infinity, 1e999 (no JSON answer could carry it back), long integers, too deep
        raise ApiError(400, "bad_request", f"malformed JSON: {exc}") from None
    found = find_bad_text(document) if _SUSPICIOUS.search(raw) else None
    if found:
        field, reason = found
        raise invalid(f"invalid text in body: {field or 'the body'}: {reason}", [problem(field, reason)])
    return document


def json_line(raw: bytes) -> Any:
    """One line of an NDJSON body decoded as strictly as read_json_body decodes a body; ValueError
    saying why not."""
    try:
        document = strict_json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from None
    except ValueError as exc:
        raise ValueError(f"malformed JSON: {exc}") from None
    reason = find_bad_string(document) if _SUSPICIOUS.search(raw) else None
    if reason:
        raise ValueError(reason)
    return document


def check_query_text(args: Mapping[str, str | None]) -> None:
    """400 naming the first query parameter whose value no database could compare (NUL, which
    PostgreSQL's text refuses, or a lone surrogate)."""
    for key, value in args.items():
        reason = bad_text(value) if value is not None else None
        if reason:
            raise ApiError(400, "bad_request", f"invalid query parameter {key}",
                           [{"field": key, "message": reason}])


def parse_query(model: type[M]) -> M:
    """Validate the query string with `model`; a bad value, or a parameter given twice (which of
    the two was meant?), is a 400 naming the parameter."""
    repeated = [problem(key, "given more than once") for key in request.args if len(request.args.getlist(key)) > 1]
    if repeated:
        raise ApiError(400, "bad_request", summarize(repeated, "invalid query parameter"), repeated)
    args = {key: request.args.get(key) for key in request.args}
    check_query_text(args)
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = pydantic_problems(exc)
        raise ApiError(400, "bad_request", summarize(problems, "invalid query parameter"), problems) from None


def plausible_job_id(job_id: str) -> bool:
    """Ids are UUIDs; anything else cannot exist, so it is a 404 without a query (and never a NUL
    or a 10 kB string sent to the database)."""
    return bool(_JOB_ID.match(job_id))
