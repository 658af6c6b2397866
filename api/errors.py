"""One error shape for every failure: {"error": {"code", "message", "details"}}.

`details` is always a list of {"field", "message"} (empty when there is nothing per field), so a
client handles every error the same way. Bad input is 400 (unreadable request) or 422 (readable but
invalid); nothing a client sends may end in a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flask import Flask, Response, has_request_context, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from judge.jsonl import InputError

log = logging.getLogger("pjudge.api")

MAX_DETAILS = 100  # a 100k-item body with one problem per item must not answer with megabytes

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    409: "conflict", 413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_input",
    429: "too_many_requests",
}


def problem(field: str | None, message: str) -> dict[str, str | None]:
    return {"field": field, "message": message}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Sequence[Mapping[str, Any]] = (),
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


def invalid(message: str, details: Sequence[Mapping[str, Any]] = (), status: int = 422,
            code: str = "invalid_input") -> ApiError:
    return ApiError(status, code, message, details)


def not_found(what: str = "job") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def json_response(document: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    # allow_nan=False: a NaN that slipped through becomes a logged 500, never invalid JSON on the wire.
    body = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, status=status, mimetype="application/json", headers=dict(headers or {}))


def error_document(code: str, message: str, details: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The error shape itself (also written by the WSGI server's own errors: pjudge.commands.serve)."""
    shown = list(details)
    if len(shown) > MAX_DETAILS:
        more = len(shown) - MAX_DETAILS
        shown = shown[:MAX_DETAILS] + [problem(None, f"... and {more} more problem(s)")]
    return {"error": {"code": code, "message": message, "details": shown}}


def http_code(status: int) -> str:
    """The error code of a plain HTTP status."""
    return _HTTP_CODES.get(status, "http_error")


def body_too_large_message(limit: int | None) -> str:
    return "request body too large" + (f" (limit {limit} bytes)" if limit else "")


def error_response(status: int, code: str, message: str, details: Iterable[Mapping[str, Any]] = (),
                   headers: Mapping[str, str] | None = None) -> Response:
    return json_response(error_document(code, message, details), status, headers)


# ---------------------------------------------------------------- pydantic / InputError -> details

def join_path(prefix: str, loc: Iterable[int | str]) -> str:
    """("items", 516, "response_b") style locations as `items[516].response_b`."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _is_union_tag(part: object) -> bool:
    # pydantic adds the union member it tried ("str", "function-after[...]", "dict[str,any]") to loc.
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part
                                      or part.startswith(("constrained-", "literal")))


def pydantic_problems(error: ValidationError, prefix: str = "") -> list[dict[str, str | None]]:
    problems = []
    for detail in error.errors(include_url=False, include_input=False):
        loc = [p for p in detail.get("loc", ()) if not _is_union_tag(p)]
        kind = detail.get("type")
        message = detail.get("msg", "invalid value")
        if kind == "extra_forbidden":
            message = "unknown field" if prefix or len(loc) > 1 else "unknown parameter"
        elif kind == "missing":
            message = "required field is missing"
        problems.append(problem(join_path(prefix, loc) or None, message))
    return problems


def item_problems(error: InputError, prefix: str = "items") -> list[dict[str, str | None]]:
    """InputError of judge.jsonl.validate_items, whose `line` is the item's index in the list."""
    problems = []
    for p in error.problems:
        path = prefix if p.line is None else f"{prefix}[{p.line}]"
        if p.field:
            path += "." + p.field
        problems.append(problem(path, p.message))
    return problems


def summarize(problems: Sequence[Mapping[str, Any]], what: str = "invalid request") -> str:
    if not problems:
        return what
    first = problems[0]
    text = f"{what}: {first['field']}: {first['message']}" if first.get("field") else f"{what}: {first['message']}"
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problem(s))"
    return text


# ---------------------------------------------------------------- handlers

def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        # This request's own limit: an NDJSON upload's (api.pages.upload_limit) is not the body limit.
        limit = request.max_content_length if has_request_context() else app.config.get("MAX_CONTENT_LENGTH")
        message = body_too_large_message(limit)
        # No "Connection: close" here: hop-by-hop headers are the server's business (PEP 3333).
        return error_response(413, "body_too_large", message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and exc.response is None:
            allowed = getattr(exc, "valid_methods", None)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
        return error_response(status, http_code(status), exc.description or exc.name,
                              headers=headers)

    @app.errorhandler(Exception)
    def _internal(exc: Exception) -> Response:
        import traceback

        from judge.providers.base import redact

        # Redacted: exception texts can carry URLs with passwords or anything that looks like a key.
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("internal error: %s", redact(text)[-4000:])
        return error_response(500, "internal", "internal server error")
