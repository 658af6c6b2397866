"""persona-judge domain: items, templates, parsers, providers, aggregation (no Flask, no Celery).

The public API is `__all__` below (`from judge import evaluate`); every other module and name stays
importable but is internal and may change. The names load on first use, so that importing any
`judge.*` module (the API, the workers) pulls in nothing more than it did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from judge._exports import lazy_names

if TYPE_CHECKING:
    from judge._evaluate import EvaluationResult, evaluate, evaluate_async
    from judge.cache import CallCache, SqliteCallCache
    from judge.jsonl import InputError
    from judge.profiles import CascadeProfile, JudgeProfile, ProfileError, load_judging
    from judge.providers.base import CallRequest, CallResult, Provider, ProviderError
    from judge.records import Call, PairItem, Verdict

__version__ = "0.1.0"

_HOMES = {
    "evaluate": "judge._evaluate", "evaluate_async": "judge._evaluate", "EvaluationResult": "judge._evaluate",
    "PairItem": "judge.records", "Verdict": "judge.records", "Call": "judge.records",
    "JudgeProfile": "judge.profiles", "CascadeProfile": "judge.profiles", "load_judging": "judge.profiles",
    "ProfileError": "judge.profiles",
    "Provider": "judge.providers.base", "CallRequest": "judge.providers.base",
    "CallResult": "judge.providers.base", "ProviderError": "judge.providers.base",
    "CallCache": "judge.cache", "SqliteCallCache": "judge.cache",
    "InputError": "judge.jsonl",
}

__all__ = [
    "Call", "CallCache", "CallRequest", "CallResult", "CascadeProfile", "EvaluationResult", "InputError",
    "JudgeProfile", "PairItem", "ProfileError", "Provider", "ProviderError", "SqliteCallCache", "Verdict",
    "__version__", "evaluate", "evaluate_async", "load_judging",
]


__getattr__, __dir__ = lazy_names(__name__, _HOMES, __all__)
