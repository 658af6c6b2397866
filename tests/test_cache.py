"""Cache keys: a hash of the normalized request, sensitive to what changes an answer only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from judge.cache import SqliteCallCache, cache_key
from judge.providers.base import CallRequest, CallResult

BASE = CallRequest(item_id="i1", order="AB", sample=0, attempt=0,
                   messages=[{"role": "user", "content": "Which is better?"}], model="m", temperature=0.0,
                   max_tokens=64)


def test_key_is_stable_and_ignores_item_id_and_headers() -> None:
    key = cache_key("openai", "persona-certainty@1#abc", BASE)
    assert key == cache_key("openai", "persona-certainty@1#abc", replace(BASE, item_id="other", extra={"x": "1"}))
    assert len(key) == 64


def test_key_changes_with_everything_that_changes_an_answer() -> None:
    key = cache_key("openai", "t@1#a", BASE)
    variants = [
        cache_key("anthropic", "t@1#a", BASE),
        cache_key("openai", "t@2#a", BASE),
        cache_key("openai", "t@1#b", BASE),
        cache_key("openai", "t@1#a", replace(BASE, model="m2")),
        cache_key("openai", "t@1#a", replace(BASE, sample=1)),
        cache_key("openai", "t@1#a", replace(BASE, attempt=1)),
        cache_key("openai", "t@1#a", replace(BASE, temperature=0.7)),
        cache_key("openai", "t@1#a", replace(BASE, max_tokens=65)),
        cache_key("openai", "t@1#a", replace(BASE, messages=[{"role": "user", "content": "Which is worse?"}])),
    ]
    assert key not in variants and len(set(variants)) == len(variants)


def test_sqlite_cache_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    cache = SqliteCallCache(path)
    assert cache.get("k") is None
    cache.put("k", CallResult(text="[[A]] [[80]]", input_tokens=10, output_tokens=3))
    again = SqliteCallCache(path)
    assert again.get("k") == CallResult(text="[[A]] [[80]]", input_tokens=10, output_tokens=3)
    assert len(again) == 1
