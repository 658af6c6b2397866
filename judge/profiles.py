"""Judge profiles: a judge is data (provider, model, template, k, swap, ...), not code.

A profile is found as a path to a .toml/.json/.yaml file, in the folders of `PJUDGE_PROFILES`,
in `<user data dir>/profiles`, or among the built-ins in `judge/profiles/`. A JSON object (for
example in an API job) names a base profile (`profile`/`name`, else the one named like its
`template`, else `persona-certainty`) and overrides its fields.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from judge.jsonl import decode_json
from judge.paths import user_data_dir
from judge.settings import settings
from judge.templates import Template, get_template

BUILTIN_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "persona-certainty"
PROVIDER_NAMES = ("openai", "anthropic", "openai-compatible", "replay")


class ProfileError(ValueError):
    pass


# Stages run one call at a time (the service's workers, pjudge judge and evaluate alike): the
# provider batch APIs drive a single judge only, so a stage asking for one would run at another
# price and pace than asked.
BATCH_STAGE = "a cascade's stages run interactively: mode 'batch' (the provider's batch API) is for a single judge profile"


class BatchStageError(ProfileError):
    """A cascade stage whose profile is in batch mode (`BATCH_STAGE`); `index`: the stage's."""

    def __init__(self, source: str, index: int):
        super().__init__(f"profile {source}: field 'cascade.{index}.profile.mode': {BATCH_STAGE}")
        self.index = index


def check_stage(judge: JudgeProfile, source: str, index: int) -> None:
    """BatchStageError when stage `index` of a cascade (from `source`) would ask in batch mode."""
    if judge.mode == "batch":
        raise BatchStageError(source, index)


class ProfileFileError(ProfileError):
    """A profile file that cannot be read or parsed. The message quotes the parser, which may quote
    the file (YAML shows the offending lines): a server shows its clients only that it failed."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"profile {path}: {reason}")
        self.path = path


BATCH_DISCOUNT = 0.5  # both providers' batch APIs: half price
# The highest price per million tokens a profile may give: three orders of magnitude above the
# dearest model sold (600 USD), and low enough that no job's cost sum can overflow to infinity,
# which no JSON answer, budget or quota could then hold.
MAX_PRICE_PER_MTOK = 1_000_000.0
# Far above any provider's limit; the rate limiter's Redis counters must stay 64-bit integers.
MAX_RATE_PER_MINUTE = 1_000_000_000


class Price(BaseModel):
    """USD per million tokens. `input_tokens` counts every input token of a call, those read from
    or written to the provider's prompt cache included; the cache fields price those parts."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_MTOK)
    output_per_mtok: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_MTOK)
    # Unset fields are left out of the profile's JSON (a price without them reads as before).
    cached_input_per_mtok: float | None = Field(
        default=None, ge=0, le=MAX_PRICE_PER_MTOK, exclude_if=lambda value: value is None,
        description="Input tokens read from the provider's prompt cache. Unset: 0.1 x input for anthropic "
                    "(Anthropic's cache reads); the input price otherwise (OpenAI's discount differs by model: "
                    "set it from their price table, e.g. 1.25 for gpt-4o-2024-08-06).")
    cache_write_per_mtok: float | None = Field(
        default=None, ge=0, le=MAX_PRICE_PER_MTOK, exclude_if=lambda value: value is None,
        description="Input tokens written to the provider's prompt cache (Anthropic only). Unset: 1.25 x input "
                    "for anthropic (5-minute cache writes); the input price otherwise (OpenAI bills no writes).")
    batch_discount: float | None = Field(
        default=None, ge=0, le=1, exclude_if=lambda value: value is None,
        description="The fraction of the price that batch mode takes off (both providers' batch APIs: 0.5, "
                    "half price). Unset: 0.5. Applied to batch-mode calls only.")

    def for_provider(self, provider: str) -> Price:
        """This price with its unset cache prices filled in by the provider's rule."""
        anthropic = provider == "anthropic"
        cached = self.cached_input_per_mtok
        written = self.cache_write_per_mtok
        return self.model_copy(update={
            "cached_input_per_mtok": cached if cached is not None else
            (0.1 * self.input_per_mtok if anthropic else self.input_per_mtok),
            "cache_write_per_mtok": written if written is not None else
            (1.25 * self.input_per_mtok if anthropic else self.input_per_mtok),
        })

    def cost(self, input_tokens: int | None, output_tokens: int | None, cached_input_tokens: int | None = None,
             cache_write_tokens: int | None = None, batch: bool = False) -> float:
        """One call's cost. `cached_input_tokens` and `cache_write_tokens` are parts of
        `input_tokens` (unset cache prices: the input price; see `for_provider`). Without them: the
        cost of the same tokens without prompt caching. `batch`: through a provider's batch API
        (`batch_discount` off)."""
        cached, written = cached_input_tokens or 0, cache_write_tokens or 0
        fresh = max(0, (input_tokens or 0) - cached - written)
        cached_price = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        write_price = self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        total = (fresh * self.input_per_mtok + cached * cached_price + written * write_price
                 + (output_tokens or 0) * self.output_per_mtok)
        if batch:
            total *= 1 - (BATCH_DISCOUNT if self.batch_discount is None else self.batch_discount)
        return round(total / 1e6, 9)


class JudgeProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = DEFAULT_PROFILE
    provider: Literal["openai", "anthropic", "openai-compatible", "replay"] = "openai"
    model: str = "gpt-4o-2024-08-06"
    template: str = "persona-certainty"
    samples: int = Field(default=1, ge=1, le=32, description="Samples k in each order; with `adaptive`, the most.")
    adaptive: bool = Field(
        default=False,
        description="Adaptive sampling: round 1 asks sample 0 in every order (both when swap is on), round r "
                    "sample r - 1, up to `samples` rounds, while the balanced verdict (SPEC 3.1/3.2, unchanged, "
                    "over the calls so far) is unsettled. After round r it is settled when it has a winner and "
                    "either (1) every order's own verdict (the same aggregation over that order's calls) has a "
                    "winner, none is A while another is B (a tie contradicts nothing), and the certainty is at "
                    "least `adaptive_margin`; or (2) r >= 2 and round r left the winner as it was. The calls "
                    "are those of fixed k = `samples` (same cache entries), fewer of them.")
    adaptive_margin: float = Field(
        default=0.05, ge=0, le=1,
        description="Adaptive sampling: the least certainty (|2 p_a - 1|, or |CS_A - CS_B| / 9 for scores) that "
                    "settles a verdict whose orders do not contradict each other. 0.05: p_a >= 0.525 or <= 0.475; "
                    "mean scores 0.45 points apart (half a point is the least nonzero gap of one sample per "
                    "order), so a tie is never settled by it. Chosen on the FairEval 2025 re-runs "
                    "(python -m bench cost).")
    swap: bool = True
    mode: Literal["interactive", "batch"] = Field(
        default="interactive",
        description="'batch': the calls go through the provider's batch API (OpenAI Batch, Anthropic Message "
                    "Batches; half price, answers within 24 h): each round of requests is one provider batch, "
                    "re-asks and adaptive extra samples follow in later batches (judge/batching.py). "
                    "'interactive': one HTTP call each.")
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=64, ge=1, le=32768)
    certainty_threshold: float | None = Field(default=None, ge=0, le=1)
    price: Price = Field(default_factory=Price)
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable holding the key (never the key itself)."
    )
    credential: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        description="Service only: the name of a provider key the job's owner stored with POST /v1/credentials "
                    "(only the name is kept in the job).")
    max_retries: int = Field(default=6, ge=0, le=20, description="HTTP retries on 429/5xx/timeouts.")
    max_reasks: int = Field(default=2, ge=0, le=10, description="Re-asks after an unparseable answer.")
    timeout_s: float = Field(default=120.0, gt=0)
    replay_path: str | None = Field(default=None, description="Recorded outputs, for provider 'replay'.")
    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_RATE_PER_MINUTE, description="Shared by all workers (service).")
    tokens_per_minute: int | None = Field(default=None, ge=1, le=MAX_RATE_PER_MINUTE, description="Shared by all workers (service).")
    transport: Literal["sdk", "direct"] | None = Field(
        default=None, description="'direct' (openai-compatible only): the same JSON and retry rules as the SDK on "
        "a lean aiohttp client, for high-throughput servers. 'sdk': the official SDK's client. Unset: "
        "'direct' for openai-compatible, 'sdk' for the official endpoints (openai, anthropic); a loaded "
        "profile always names the one it uses.")

    prompt_caching: bool | None = Field(
        default=None,
        description="Mark the prompt's shared prefix (everything before the item's question and answers: the "
        "system prompt, the rubric and the persona, the same in both orders and for every item of a persona) "
        "for the provider's prompt cache: Anthropic `cache_control` on it, OpenAI `prompt_cache_key` (a hash of "
        "it). Unset: on for openai and anthropic, off for openai-compatible (a server may refuse unknown "
        "fields; automatic prefix caching, as in vLLM, needs nothing). Anthropic bills the first use of a "
        "prefix at 1.25 x input and reads at 0.1 x: with swap off and a persona of its own per item, turn it "
        "off. A loaded profile always names the one it uses.")

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_a_variable(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError("must be the name of an environment variable, not a key")
        return value

    @model_validator(mode="after")
    def _direct_needs_openai_compatible(self) -> JudgeProfile:
        if self.transport is None:
            # The fastest client that sends the same requests: the SDK costs about 1 ms of CPU per
            # call, most of a worker's core against a fast server (issue 18). The official
            # endpoints keep their SDKs.
            self.transport = "direct" if self.provider == "openai-compatible" else "sdk"
        if self.prompt_caching is None:
            self.prompt_caching = self.provider in ("openai", "anthropic")
        if self.transport == "direct" and self.provider != "openai-compatible":
            raise ValueError("transport 'direct' is for provider 'openai-compatible' only")
        return self

    def load_template(self) -> Template:
        return get_template(self.template)

    @property
    def answer_kind(self) -> Literal["choice", "scores"]:
        """What the template's parser reads: a choice (with a certainty) or two scores."""
        return "scores" if self.load_template().parser == "scores" else "choice"


def profile_dirs() -> list[Path]:
    dirs = [Path(p) for p in settings().profiles.split(os.pathsep) if p]
    dirs += [user_data_dir() / "profiles", BUILTIN_DIR]
    return dirs


def available_profiles() -> list[str]:
    names: set[str] = set()
    for folder in profile_dirs():
        if folder.is_dir():
            names.update(p.stem for p in folder.iterdir() if p.suffix in (".toml", ".json", ".yaml", ".yml"))
    return sorted(names)


def read_profile_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is no error, as in any input
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = decode_json(text)
        else:
            import yaml  # only needed for YAML profiles

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse problem is the user's file
        raise ProfileFileError(path, str(exc)) from exc
    if not isinstance(data, dict):
        raise ProfileFileError(path, "expected a table/object of fields")
    data.setdefault("name", path.stem)
    return data


def _find_profile_file(name_or_path: str) -> Path | None:
    candidate = Path(name_or_path)
    if candidate.suffix in (".toml", ".json", ".yaml", ".yml") and candidate.is_file():
        return candidate
    for folder in profile_dirs():
        for suffix in (".toml", ".json", ".yaml", ".yml"):
            path = folder / f"{name_or_path}{suffix}"
            if path.is_file():
                return path
    return None


def _invalid(source: str, exc: ValidationError) -> ProfileError:
    """One error for all of a profile's invalid fields, each named by its path."""
    problems = "; ".join(f"field '{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors())
    return ProfileError(f"profile {source}: {problems}")


def _validate(data: dict[str, Any], source: str) -> JudgeProfile:
    try:
        profile = JudgeProfile.model_validate(data)
    except ValidationError as exc:
        raise _invalid(source, exc) from exc
    try:
        profile.load_template()
    except ValueError as exc:
        raise ProfileError(f"profile {source}: {exc}") from exc
    return profile


def load_profile(spec: str | dict[str, Any] | None = None, **overrides: Any) -> JudgeProfile:
    """A profile by name, path or override object, then `overrides` (None values are ignored)."""
    if spec is None:
        spec = DEFAULT_PROFILE
    if isinstance(spec, str):
        path = _find_profile_file(spec)
        if path is None:
            raise ProfileError(
                f"unknown profile '{spec}' (available: {', '.join(available_profiles())}; or give a path)"
            )
        data = read_profile_file(path)
        source = str(path)
    else:
        fields = dict(spec)
        base_name = fields.pop("profile", None) or fields.get("name")
        base = _find_profile_file(str(base_name)) if base_name else None
        if base is None:
            template = fields.get("template")
            base = _find_profile_file(str(template)) if template else None
        if base is None:
            base = _find_profile_file(DEFAULT_PROFILE)
        if base is None:
            raise ProfileError(f"the default profile '{DEFAULT_PROFILE}' is missing (available: "
                               f"{', '.join(available_profiles())})")
        data = read_profile_file(base)
        data.update(fields)
        source = "object"
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(data, source)


# ---------------------------------------------------------------- cascades (SPEC 2.1)
class CascadeStage(BaseModel):
    """One stage as written: a profile name or an object of profile fields, and its threshold on
    the confidence max(p_a, 1 - p_a). No threshold (null, or the key left out: TOML has no null)
    means the stage accepts nothing."""

    model_config = ConfigDict(extra="forbid")

    profile: str | dict[str, Any]
    threshold: float | None = Field(default=None, ge=0.5, le=1)


class CascadeProfile(BaseModel):
    """Judges chained cheap to strong, then humans (SPEC 2.1). `judges` holds each stage's loaded
    profile (same order as `cascade`); a stored cascade keeps them whole, so that a job runs the
    stages it was posted with."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    cascade: list[CascadeStage] = Field(min_length=1, max_length=8)
    then: Literal["human", "abstain"] = "human"
    judges: list[JudgeProfile] = Field(default_factory=list, exclude=True)

    @property
    def thresholds(self) -> list[float | None]:
        return [stage.threshold for stage in self.cascade]

    def stored(self) -> dict[str, Any]:
        """The self-contained form kept with a job: each stage's profile as its full fields."""
        return {"name": self.name, "then": self.then,
                "cascade": [{"profile": judge.model_dump(mode="json"), "threshold": stage.threshold}
                            for stage, judge in zip(self.cascade, self.judges, strict=True)]}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> CascadeProfile:
        """The cascade of `stored()`: each stage's fields are the whole profile (no file is read)."""
        cascade = cls.model_validate(data)
        judges = []
        for stage in cascade.cascade:
            if not isinstance(stage.profile, dict):
                raise ProfileError(f"cascade '{cascade.name}': a stored stage must hold its profile's fields")
            judges.append(JudgeProfile.model_validate(stage.profile))
        cascade.judges = judges
        return cascade


Judging = JudgeProfile | CascadeProfile


def stored_judging(judging: Judging) -> dict[str, Any]:
    """What a job keeps of its profile (jobs.profile_json): a judge profile's fields, or a
    cascade's self-contained form (CascadeProfile.stored)."""
    if isinstance(judging, CascadeProfile):
        return judging.stored()
    data: dict[str, Any] = json.loads(judging.model_dump_json())
    return data


def judging_from_stored(text: str) -> Judging:
    """The inverse of stored_judging, from its JSON text."""
    data = json.loads(text)
    if is_cascade(data):
        return CascadeProfile.from_stored(data)
    return JudgeProfile.model_validate(data)


def is_cascade(data: Any) -> bool:
    return isinstance(data, dict) and "cascade" in data


def names_cascade(name: str) -> bool:
    """`name` (a profile name or path) is a cascade's file (a file that cannot be read is none: loading
    it reports why)."""
    path = _find_profile_file(name)
    try:
        return path is not None and is_cascade(read_profile_file(path))
    except ProfileError:
        return False


def _load_cascade(data: dict[str, Any], source: str) -> CascadeProfile:
    try:
        cascade = CascadeProfile.model_validate(data)
    except ValidationError as exc:
        raise _invalid(source, exc) from exc
    judges = []
    for index, stage in enumerate(cascade.cascade):
        where = f"field 'cascade.{index}.profile'"
        spec = stage.profile
        if isinstance(spec, dict) and is_cascade(spec):
            raise ProfileError(f"profile {source}: {where}: a stage must be a judge profile, not a cascade")
        if isinstance(spec, str):
            path = _find_profile_file(spec)
            if path is not None and is_cascade(read_profile_file(path)):
                raise ProfileError(f"profile {source}: {where}: '{spec}' is a cascade; a stage must be a judge "
                                   "profile")
        try:
            judges.append(load_profile(spec))
        except ProfileError as exc:
            raise ProfileError(f"profile {source}: {where}: {exc}") from exc
        check_stage(judges[-1], source, index)
    cascade.judges = judges
    return cascade


def load_judging(spec: str | dict[str, Any] | None = None, **overrides: Any) -> Judging:
    """A judge profile or a cascade (SPEC 2.1), by name, path or object: what every entry point that
    judges takes. `overrides` (CLI flags such as --model) apply to a single judge only."""
    data: dict[str, Any] | None = None
    source = "object"
    if isinstance(spec, dict):
        data = dict(spec)
    elif isinstance(spec, str):
        path = _find_profile_file(spec)
        if path is not None:
            data = read_profile_file(path)
            source = str(path)
    if data is None or not is_cascade(data):
        return load_profile(spec, **overrides)
    given = sorted(k for k, v in overrides.items() if v is not None)
    if given:
        raise ProfileError(f"profile {source}: {', '.join(given)} cannot override a cascade; set them in its stages")
    return _load_cascade(data, source)
