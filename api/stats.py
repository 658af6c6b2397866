"""/v1/stats/agreement: the SPEC 4 statistics over every verdict of the caller's jobs that match
the filters (for dashboards)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.auth import authenticate, current_owner
from api.context import state
from api.errors import ApiError, json_response
from api.parsing import parse_query
from api.queries import VerdictFilter, agreement_verdicts, count_agreement_verdicts
from api.schemas import StatsQuery

bp = Blueprint("stats", __name__, url_prefix="/v1/stats")


@bp.before_request
def _authenticate() -> None:
    authenticate()


@bp.get("/agreement")
def agreement() -> Response:
    query = parse_query(StatsQuery)
    where = VerdictFilter(owner=current_owner(), profile=query.profile, model=query.model,
                          since=query.since, until=query.until)
    engine = state().engine
    limit = state().settings.stats_max_verdicts
    # The statistics are computed in memory for now; refuse what would not fit rather than fall over.
    n = count_agreement_verdicts(engine, where)
    if n > limit:
        raise ApiError(422, "too_many_verdicts",
                       f"{n} verdicts match; narrow the filters (profile, model, since, until) to at most {limit}")
    from calibration.report import build_report

    verdicts = agreement_verdicts(engine, where)
    return json_response(build_report(verdicts, threshold=query.threshold, hitl=query.hitl, group_by=query.group_by,
                                      target_accuracy=query.target_accuracy, delta=query.delta))
