"""What verdicts cost: the `cost` section of every report (CLI, API job report, /v1/stats/agreement).

One home for the formula, as for the SPEC 4 statistics (calibration.counts):
- `cost_columns`: a verdict's own cost inputs, computed once from its calls. store/ keeps them as
  the verdict rows' columns (n_calls, cost_usd, input_tokens, cached_input_tokens, saved_*).
- `CostSums`: those columns summed over a set of verdicts: in Python here (`sums_of`), or by SQL
  in store.stats, which only ever sums the stored columns.
- `cost_section`: the report's numbers from the sums.

The section: {cost_usd, items, calls, calls_per_item, input_tokens, cached_input_tokens,
cached_input_share, saved_by_batch_usd, saved_by_caching_usd, by_profile: {profile: the same
without by_profile}}. `items` are the verdicts (an item without one, e.g. past a job's budget, is
not counted); `calls` count every call of them, re-asks within a call not separately (a call's
`attempts`), cached ones included. A call records `cached_input_tokens` and the USD saved by a
provider batch or by prompt caching (`saved_batch_usd`, `saved_cache_usd`) only where those
features price it; a verdict none of whose calls records one has null there, and the section's
share or saving is null when no verdict has it (a mix counts the verdicts that have it, over all
verdicts' input tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from judge.records import Call, Verdict

COST_DECIMALS = 9  # a call's cost_usd is rounded so (judge.profiles.Price.cost)
# The per-verdict columns, in CostSums' order (store.models.VerdictRow names its columns so).
COST_COLUMNS = ("n_calls", "cost_usd", "input_tokens", "cached_input_tokens", "saved_batch_usd", "saved_cache_usd")


def _known_sum(values: Iterable[float | int | None]) -> Any:
    """The sum of the values that are not None; None when all are (SQL's SUM)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _call_value(call: Call, name: str) -> Any:
    return getattr(call, name)


def cost_columns(verdict: Verdict) -> dict[str, Any]:
    """The verdict's cost inputs (COST_COLUMNS), as stored with it."""
    calls = verdict.calls
    saved_batch = _known_sum(_call_value(c, "saved_batch_usd") for c in calls)
    saved_cache = _known_sum(_call_value(c, "saved_cache_usd") for c in calls)
    return {
        "n_calls": len(calls),
        "cost_usd": round(sum(c.cost_usd or 0.0 for c in calls), COST_DECIMALS),
        "input_tokens": sum(c.input_tokens or 0 for c in calls),
        "cached_input_tokens": _known_sum(_call_value(c, "cached_input_tokens") for c in calls),
        "saved_batch_usd": None if saved_batch is None else round(saved_batch, COST_DECIMALS),
        "saved_cache_usd": None if saved_cache is None else round(saved_cache, COST_DECIMALS),
    }


@dataclass(frozen=True)
class CostSums:
    """COST_COLUMNS summed over `items` verdicts (None: no verdict had the column)."""

    items: int = 0
    n_calls: int = 0
    cost_usd: float = 0.0
    input_tokens: int = 0
    cached_input_tokens: int | None = None
    saved_batch_usd: float | None = None
    saved_cache_usd: float | None = None

    @classmethod
    def of_row(cls, items: Any, values: Mapping[str, Any]) -> CostSums:
        """From SQL sums (COUNT and SUM of each column; SUM of no rows or all nulls is NULL)."""
        def number(name: str, kind: type) -> Any:
            value = values.get(name)
            return None if value is None else kind(value)

        return cls(items=int(items or 0), n_calls=int(values.get("n_calls") or 0),
                   cost_usd=float(values.get("cost_usd") or 0.0), input_tokens=int(values.get("input_tokens") or 0),
                   cached_input_tokens=number("cached_input_tokens", int),
                   saved_batch_usd=number("saved_batch_usd", float), saved_cache_usd=number("saved_cache_usd", float))

    def __add__(self, other: CostSums) -> CostSums:
        def add(a: Any, b: Any) -> Any:
            return b if a is None else a if b is None else a + b

        return CostSums(self.items + other.items, self.n_calls + other.n_calls, self.cost_usd + other.cost_usd,
                        self.input_tokens + other.input_tokens,
                        add(self.cached_input_tokens, other.cached_input_tokens),
                        add(self.saved_batch_usd, other.saved_batch_usd),
                        add(self.saved_cache_usd, other.saved_cache_usd))


def sums_of(verdicts: Iterable[Verdict]) -> CostSums:
    total = CostSums()
    for verdict in verdicts:
        columns = cost_columns(verdict)
        total = total + CostSums(items=1, **columns)
    return total


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, COST_DECIMALS)


def section(sums: CostSums) -> dict[str, Any]:
    """The report's numbers of one set of verdicts."""
    share = None
    if sums.cached_input_tokens is not None and sums.input_tokens > 0:
        share = round(sums.cached_input_tokens / sums.input_tokens, 6)
    return {
        "cost_usd": round(sums.cost_usd, COST_DECIMALS),
        "items": sums.items,
        "calls": sums.n_calls,
        "calls_per_item": round(sums.n_calls / sums.items, 6) if sums.items else None,
        "input_tokens": sums.input_tokens,
        "cached_input_tokens": sums.cached_input_tokens,
        "cached_input_share": share,
        "saved_by_batch_usd": _usd(sums.saved_batch_usd),
        "saved_by_caching_usd": _usd(sums.saved_cache_usd),
    }


def cost_section(by_profile: Mapping[str, CostSums]) -> dict[str, Any]:
    """The `cost` section: the total over the profiles, and each profile's own."""
    total = CostSums()
    for sums in by_profile.values():
        total = total + sums
    return {**section(total), "by_profile": {name: section(by_profile[name]) for name in sorted(by_profile)}}


def cost_of_verdicts(verdicts: Iterable[Verdict]) -> dict[str, Any]:
    """The `cost` section of verdicts in memory (pjudge report, a report computed from verdicts)."""
    groups: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        groups.setdefault(verdict.judge.profile, []).append(verdict)
    return cost_section({name: sums_of(group) for name, group in groups.items()})


COST_HEADER = ("profile", "items", "calls", "calls per item", "cost (USD)", "cached input share",
               "saved by batch (USD)", "saved by caching (USD)")


def cost_rows(cost: Mapping[str, Any]) -> list[list[Any]]:
    """The rows of the reports' cost table (COST_HEADER): each profile, then all (when several)."""
    def row(name: str, s: Mapping[str, Any]) -> list[Any]:
        return [name, s["items"], s["calls"], s["calls_per_item"], s["cost_usd"], s["cached_input_share"],
                s["saved_by_batch_usd"], s["saved_by_caching_usd"]]

    rows = [row(name, s) for name, s in cost.get("by_profile", {}).items()]
    if len(rows) != 1:
        rows.append(row("all", cost))
    return rows
