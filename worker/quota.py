"""The daily cost quota (PJUDGE_QUOTA_COST_PER_DAY) as a worker checks it before spending, for
interactive batches (worker.tasks) and provider batches (worker.provider_batches) alike."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from store import repo


def over_cost_quota(engine: Engine, owner: str) -> str | None:
    """The error of a batch (or a round of provider batches about to be sent) whose owner has
    reached PJUDGE_QUOTA_COST_PER_DAY (counted as at POST: store.repo.cost_in_quota_window), or None. Checked before each batch judges, so jobs posted
    before the quota was reached stop spending too; batches already running finish, so the spend
    may overshoot by at most one batch per worker thread."""
    from judge.settings import settings

    limit = settings().quota_cost_per_day
    if limit is None:
        return None
    spent = repo.cost_in_quota_window(engine, owner)
    if spent < limit:
        return None
    return (f"quota: this key's quota of {limit:g} USD per 24 h is used up ({spent:.6g} USD spent); "
            "the item was not judged")
