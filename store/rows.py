"""Conversions between records (judge.records) and rows of the verdicts and calls tables, in both
directions: the one place that knows the column names of a stored verdict."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Column
from sqlalchemy.engine import Row

from calibration.cost import cost_columns
from judge.records import Call, JudgeInfo, StageVerdict, Verdict
from store.models import CallRow, table_of


def verdict_row(job_id: str, position: int, verdict: Verdict, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id, "item_id": verdict.id, "position": position, "winner": verdict.winner,
        "p_a": verdict.p_a, "certainty": verdict.certainty, "consistent": verdict.consistent,
        "abstained": verdict.abstained, "bpde": verdict.bpde, "human_label": verdict.human_label,
        "len_a": verdict.len_a, "len_b": verdict.len_b, "error": verdict.error,
        "n_failed_calls": sum(c.error is not None for c in verdict.calls), **cost_columns(verdict),
        "profile": verdict.judge.profile, "provider": verdict.judge.provider, "model": verdict.judge.model,
        "metadata_json": json.dumps(verdict.metadata, ensure_ascii=False), "created_at": now,
        "stage": verdict.stage,
        "stages_json": (None if verdict.stages is None
                        else json.dumps([s.model_dump(mode="json") for s in verdict.stages], ensure_ascii=False)),
    }


def call_row(job_id: str, item_id: str, call: Call, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id, "item_id": item_id, "order": call.order or "", "sample": call.sample, "raw": call.raw,
        "raw_truncated_from": call.raw_truncated_from, "choice": call.choice, "certainty": call.certainty,
        "scores_json": json.dumps(call.scores) if call.scores is not None else None,
        "input_tokens": call.input_tokens, "output_tokens": call.output_tokens, "cost_usd": call.cost_usd,
        "cached_input_tokens": call.cached_input_tokens, "cache_write_tokens": call.cache_write_tokens,
        "saved_cache_usd": call.saved_cache_usd, "saved_batch_usd": call.saved_batch_usd,
        "latency_s": call.latency_s, "cached": call.cached, "attempts": call.attempts, "error": call.error,
        "created_at": now, "stage": call.stage or 0,
    }


def call_from_row(row: Row[Any]) -> Call:
    return Call(
        # .get: a migration's backfill reads the calls table as it is then, before later columns.
        # raw: None where a reader left it out (statistics never read answers, see call_columns).
        order=row.order or None, sample=row.sample, raw=row._mapping.get("raw"),
        raw_truncated_from=row._mapping.get("raw_truncated_from"),
        choice=row.choice, certainty=row.certainty,
        scores=json.loads(row.scores_json) if row.scores_json else None, input_tokens=row.input_tokens,
        output_tokens=row.output_tokens, cost_usd=row.cost_usd, latency_s=row.latency_s, cached=row.cached,
        error=row.error, attempts=row.attempts, stage=row._mapping.get("stage"),
        cached_input_tokens=row._mapping.get("cached_input_tokens"),
        cache_write_tokens=row._mapping.get("cache_write_tokens"),
        saved_cache_usd=row._mapping.get("saved_cache_usd"), saved_batch_usd=row._mapping.get("saved_batch_usd"),
    )


def verdict_from_row(row: Row[Any], calls: list[Call]) -> Verdict:
    stages_json = row._mapping.get("stages_json")
    if stages_json is None:  # a single judge: its calls carry no stage (stored as 0)
        calls = [call.model_copy(update={"stage": None}) if call.stage is not None else call for call in calls]
    return Verdict(
        id=row.item_id, winner=row.winner, p_a=row.p_a, certainty=row.certainty, consistent=row.consistent,
        abstained=row.abstained, bpde=row.bpde, human_label=row.human_label,
        judge=JudgeInfo(profile=row.profile, provider=row.provider, model=row.model), calls=calls,
        len_a=row.len_a, len_b=row.len_b, error=row.error, metadata=json.loads(row.metadata_json or "{}"),
        stage=row._mapping.get("stage"),
        stages=None if stages_json is None else [StageVerdict.model_validate(s) for s in json.loads(stages_json)],
    )


def call_columns(with_raw: bool = True) -> list[Column[Any]]:
    """The calls table's columns a Call is made of; without `raw` (up to PJUDGE_RAW_MAX_CHARS per
    call) for readers that only count and aggregate (statistics): their Calls have raw None."""
    return [column for column in table_of(CallRow).columns if with_raw or column.name != "raw"]
