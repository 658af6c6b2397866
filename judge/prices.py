"""Server-side prices: what a job that runs on the server's provider keys costs, by model.

A profile's `price` is the client's word; on a shared server it must not be what a job costs (a
client sending 0 would make every call free, and cost quotas meaningless). The service prices
such jobs from this table instead: the built-in prices (each built-in profile's model at that
profile's price, and the simulator's models at the default profile's) under the operator's
PJUDGE_PRICES, inline JSON or a .json/.toml file of {model: {input_per_mtok, output_per_mtok}}
(optionally `cached_input_per_mtok`, `cache_write_per_mtok`, `batch_discount`: judge.profiles.Price).
The key "*" prices every model the table does not name; without it such a model has no price.

Where the prices come from: gpt-4o-2024-08-06 (the built-in profiles' model) at OpenAI's price
table, $2.50 input, $1.25 cached input, $10.00 output per million tokens. Unset cache prices follow
the provider's rule (judge.profiles.Price.for_provider): Anthropic's price list bills cache reads at
0.1x and 5-minute cache writes at 1.25x the input price; an OpenAI model without a cached price is
billed the input price (its discount differs by model, 50 to 90%: the operator sets it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from judge.jsonl import decode_json, json_problem
from judge.profiles import BUILTIN_DIR, DEFAULT_PROFILE, Price, read_profile_file

ANY_MODEL = "*"
# llm_sim's models (llm_sim.server.MODELS): priced like the default profile's model, so that the
# demo and the tests show what the same tokens would cost on a real judge.
SIMULATOR_MODELS = ("sim-judge", "sim-judge-large")


class PriceError(ValueError):
    """PJUDGE_PRICES cannot be read (the message says where and why)."""


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, Price]

    def price_for(self, model: str) -> Price | None:
        """The model's price, else the "*" price, else None (no price: the job is refused)."""
        return self.prices.get(model, self.prices.get(ANY_MODEL))


@cache
def builtin_prices() -> dict[str, Price]:
    prices: dict[str, Price] = {}
    default: Price | None = None
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        data = read_profile_file(path)
        price = Price.model_validate(data.get("price", {}))
        prices.setdefault(str(data["model"]), price)
        if path.stem == DEFAULT_PROFILE:
            default = price
    for model in SIMULATOR_MODELS:
        prices[model] = default or Price()
    return prices


def _read(text: str) -> Any:
    text = text.strip()
    if text.startswith("{"):
        try:
            return decode_json(text)
        except ValueError as exc:
            raise PriceError(f"PJUDGE_PRICES is not valid JSON: {json_problem(exc)}") from None
    path = Path(text).expanduser()
    try:
        content = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PriceError(f"PJUDGE_PRICES: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(content) if path.suffix == ".toml" else decode_json(content)
    except tomllib.TOMLDecodeError as exc:
        raise PriceError(f"PJUDGE_PRICES: {path}: {exc}") from None
    except ValueError as exc:
        raise PriceError(f"PJUDGE_PRICES: {path}: {json_problem(exc)}") from None


def parse_prices(text: str) -> dict[str, Price]:
    """The operator's prices: inline JSON (starts with "{") or a path to a .json/.toml file."""
    if not text.strip():
        return {}
    data = _read(text)
    if not isinstance(data, dict):
        raise PriceError("PJUDGE_PRICES must be an object {model: {input_per_mtok, output_per_mtok}}")
    prices: dict[str, Price] = {}
    for model, value in data.items():
        try:
            prices[str(model)] = Price.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                                 for e in exc.errors(include_url=False))
            raise PriceError(f"PJUDGE_PRICES: model {model!r}: {problems}") from None
    return prices


def price_table(text: str = "") -> PriceTable:
    """The built-in prices under the operator's (PJUDGE_PRICES text)."""
    return PriceTable({**builtin_prices(), **parse_prices(text)})
