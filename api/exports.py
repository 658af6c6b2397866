"""GET /v1/jobs/{id}/export: a job's preference rows for training (judge.exports), streamed as
JSON Lines or as a Parquet file written a row group at a time, read from the database in keyset
pages (store.exports): the server's memory does not grow with the job."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Response

from api.context import state
from api.errors import ApiError, problem
from api.parsing import parse_query
from api.schemas import ExportQuery
from judge.exports import (
    PARQUET_MIMETYPE,
    ExportError,
    Selection,
    jsonl_lines,
    parquet_chunks,
    preference_rows,
    resolve_persona,
)
from store.exports import preference_pairs
from store.models import Job


def selection_of(query: ExportQuery) -> Selection:
    """The export's options from the query; a combination that cannot be written is a 400 naming the field."""
    parquet = query.as_ == "parquet"
    selection = Selection(persona=resolve_persona(query.persona, parquet), conversational=query.conversational,
                          min_certainty=query.min_certainty, consistent_only=query.consistent_only)
    try:
        selection.check(parquet)
    except ExportError as exc:
        raise ApiError(400, "bad_request", f"invalid query parameter {exc.field}: {exc}",
                       [problem(exc.field, str(exc))]) from None
    return selection


def export_response(job: Job) -> Response:
    query = parse_query(ExportQuery)
    selection = selection_of(query)
    engine = state().engine
    job_id = job.id

    def rows() -> Iterator[dict[str, object]]:
        return preference_rows(preference_pairs(engine, job_id, selection), selection)

    if query.as_ == "parquet":
        return Response(parquet_chunks(rows(), selection), mimetype=PARQUET_MIMETYPE,
                        headers={"Content-Disposition": f'attachment; filename="{job_id}.{query.format}.parquet"'})
    return Response(jsonl_lines(rows()), mimetype="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{job_id}.{query.format}.jsonl"'})
