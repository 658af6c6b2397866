"""Replays recorded raw outputs keyed by (item id, order, sample): no network, no cost.

The recording is a JSON Lines file of either verdicts (each with `calls`) or raw rows
`{"id", "order", "sample", "raw"}`. Only first attempts are recorded, so a re-ask finds nothing.
"""

from __future__ import annotations

from judge.endpoints import Access
from judge.jsonl import iter_json_lines
from judge.profiles import JudgeProfile
from judge.providers.base import CallRequest, CallResult, ProviderError, register

Key = tuple[str, str | None, int]


def load_recording(path: str) -> dict[Key, str]:
    recorded: dict[Key, str] = {}
    for _, row in iter_json_lines(path):
        if not isinstance(row, dict) or "id" not in row:
            continue
        if "calls" in row:
            for call in row["calls"] or []:
                if call.get("raw") is not None:
                    recorded[(str(row["id"]), call.get("order"), int(call.get("sample", 0)))] = call["raw"]
        elif row.get("raw") is not None:
            recorded[(str(row["id"]), row.get("order"), int(row.get("sample", 0)))] = row["raw"]
    return recorded


class ReplayProvider:
    name = "replay"

    def __init__(self, profile: JudgeProfile):
        if not profile.replay_path:
            raise ProviderError("provider 'replay' needs replay_path (a file of recorded outputs)")
        self._recorded = load_recording(profile.replay_path)

    async def complete(self, request: CallRequest) -> CallResult:
        if request.attempt > 0:
            raise ProviderError("replay has no recorded re-ask")
        for order in (request.order, None):
            raw = self._recorded.get((request.item_id, order, request.sample))
            if raw is not None:
                return CallResult(text=raw, input_tokens=0, output_tokens=0)
        raise ProviderError(f"no recorded output for item {request.item_id!r}, order {request.order}, "
                            f"sample {request.sample}")

    async def aclose(self) -> None:
        return None


@register("replay")
def _replay(profile: JudgeProfile, access: Access) -> ReplayProvider:
    return ReplayProvider(profile)
