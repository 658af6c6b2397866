"""Shared benchmark helpers: timing medians, output, the reference data location."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def median_seconds(func: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    """Median wall time of `runs` calls, and the last result."""
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def emit(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    else:
        name = record.get("benchmark", "?")
        figures = ", ".join(f"{k}={v}" for k, v in record.items() if k != "benchmark")
        print(f"{name}: {figures}", flush=True)


def skip(name: str, reason: str, as_json: bool) -> None:
    emit({"benchmark": name, "skipped": reason}, as_json)
    print(f"{name}: skipped ({reason})", file=sys.stderr)
