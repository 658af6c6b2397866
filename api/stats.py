"""/v1/stats/agreement: the SPEC 4 statistics over every verdict of the caller's jobs that match
the filters (for dashboards), summed in SQL from the verdict summaries (store.stats); with
per_day=true also per UTC day and judge (store.stats.per_day: one query grouped by day and judge,
not one report per day)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from api.auth import authenticate, current_owner
from api.context import state
from api.errors import json_response
from api.jobs import too_many_verdicts
from api.parsing import parse_query
from api.schemas import PER_DAY_MAX_DAYS, StatsQuery
from store import stats
from store.queries import VerdictFilter, agreement_verdicts, count_agreement_verdicts

bp = Blueprint("stats", __name__, url_prefix="/v1/stats")


@bp.before_request
def _authenticate() -> None:
    authenticate()


@bp.get("/agreement")
def agreement() -> Response:
    return json_response(agreement_report(current_owner(), parse_query(StatsQuery)))


def agreement_report(owner: str, query: StatsQuery) -> dict[str, Any]:
    """The document of /v1/stats/agreement for `owner` (also drawn by /dashboard, so both agree)."""
    options: dict[str, Any] = {"threshold": query.threshold, "hitl": query.hitl,
                               "target_accuracy": query.target_accuracy, "delta": query.delta}
    selection = stats.Selection(owner=owner, profile=query.profile, model=query.model,
                                since=query.since, until=query.until)
    engine = state().engine
    report = stats.report(engine, selection, group_by=query.group_by, builtin_groups=True, **options)
    if report is None:
        report = _from_verdicts(owner, query, options)
    if query.per_day:
        report["per_day"] = stats.per_day(engine, selection, threshold=query.threshold, max_days=PER_DAY_MAX_DAYS)
    return report


def _from_verdicts(owner: str, query: StatsQuery, options: dict[str, Any]) -> dict[str, Any]:
    engine = state().engine
    # group_by names a metadata key some verdicts are not summarized under: from the verdicts, in
    # memory, so refuse what would not fit rather than fall over.
    where = VerdictFilter(owner=owner, profile=query.profile, model=query.model,
                          since=query.since, until=query.until)
    limit = state().settings.stats_max_verdicts
    n = count_agreement_verdicts(engine, where)
    if n > limit:
        raise too_many_verdicts(n, limit, query.group_by, "narrow the filters (profile, model, since, until) "
                                "or ")
    from calibration.report import build_report

    return build_report(agreement_verdicts(engine, where), group_by=query.group_by, **options)
