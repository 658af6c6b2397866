"""A package's public names loaded on first use (PEP 562 `__getattr__` and `__dir__`), for the
`__init__` of `judge` and `calibration`: importing the package, or any of its modules, pulls in
nothing more than it did; `from judge import evaluate` imports `judge._evaluate` then."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str], public: Sequence[str]
               ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The package's `__getattr__` (a name of `homes` from its home module, then kept in the
    package) and `__dir__` (its loaded names and `public`)."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
