"""Typed records that flow through the project: item -> call -> verdict (SPEC section 1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

Label = Literal["A", "B", "tie"]
Choice = Literal["A", "B", "tie"]
Order = Literal["AB", "BA"]


class PairItem(BaseModel):
    """One pairwise judgment to make (SPEC 1.1). Unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    response_a: str = Field(min_length=1)
    response_b: str = Field(min_length=1)
    persona: str | dict[str, Any] | None = None
    human_label: Label | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "prompt", "response_a", "response_b")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_default(cls, value: Any) -> Any:
        return {} if value is None else value

    def has_persona(self) -> bool:
        if self.persona is None:
            return False
        if isinstance(self.persona, str):
            return bool(self.persona.strip())
        return any(v not in (None, "", [], {}) for v in self.persona.values())


class JudgeInfo(BaseModel):
    profile: str
    provider: str
    model: str


class Call(BaseModel):
    """One judge call in one order, parsed back into the item's own A/B labels."""

    order: Order | None
    sample: int = 0
    raw: str | None = None
    raw_truncated_from: int | None = Field(
        default=None, description="Set when `raw` holds only the first characters of the answer (the cap, "
        "PJUDGE_RAW_MAX_CHARS): the answer's full length in characters; absent or null when raw is whole.")
    choice: Choice | None = None
    certainty: float | None = None
    scores: list[float] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # Prompt caching (additive to SPEC 1.2; absent where no provider said): parts of input_tokens.
    cached_input_tokens: int | None = Field(
        default=None, ge=0, exclude_if=lambda value: value is None,
        description="Input tokens the provider read from its prompt cache (OpenAI usage.prompt_tokens_details."
        "cached_tokens, Anthropic usage.cache_read_input_tokens), part of input_tokens and priced at the "
        "cached-input price. Summed over the attempts sent to the provider; absent when none reported it, "
        "as for a call replayed from the call cache (`cached`), which was not sent and cost nothing.")
    cache_write_tokens: int | None = Field(
        default=None, ge=0, exclude_if=lambda value: value is None,
        description="Input tokens the provider wrote to its prompt cache (Anthropic usage."
        "cache_creation_input_tokens), part of input_tokens and priced at the cache-write price.")
    saved_cache_usd: float | None = Field(
        default=None, exclude_if=lambda value: value is None,
        description="What prompt caching saved on this call: its cost with every input token at the input "
        "price, less cost_usd (negative when cache writes cost more than reads saved). Absent where no "
        "provider reported cache tokens.")
    saved_batch_usd: float | None = Field(
        default=None, exclude_if=lambda value: value is None,
        description="What batch mode saved on this call: its cost at the interactive price, less cost_usd. "
        "Absent for interactive calls.")
    cost_usd: float | None = None
    latency_s: float | None = None
    cached: bool = False
    error: str | None = None
    attempts: int = 1
    # A single judge's calls keep SPEC 1.2's exact fields: `stage` appears only in cascades.
    stage: int | None = Field(default=None, ge=0, exclude_if=lambda stage: stage is None,
                              description="Cascades only (SPEC 2.1): the 0-based index of the stage whose judge "
                              "made this call; absent for a single judge.")


    @property
    def parsed(self) -> bool:
        return self.error is None and (self.choice is not None or self.scores is not None)


class StageVerdict(BaseModel):
    """One cascade stage's judgment of an item (SPEC 2.1 `stages`)."""

    profile: str
    provider: str
    model: str
    winner: Choice | None
    p_a: float | None
    certainty: float | None
    cost_usd: float = 0.0


class Verdict(BaseModel):
    """The aggregated judgment of one item (SPEC 1.2); a cascade's (SPEC 2.1) also carries `stage`
    and `stages`."""

    id: str
    winner: Choice | None
    p_a: float | None
    certainty: float | None
    consistent: bool | None
    abstained: bool
    bpde: float | None
    human_label: Label | None = None
    judge: JudgeInfo
    calls: list[Call] = Field(default_factory=list)
    len_a: int | None = None
    len_b: int | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # A single judge's verdict keeps SPEC 1.2's exact fields: `stages` appears only in cascades,
    # and `stage` with it (null there when the item was escalated).
    stage: int | None = Field(default=None, ge=0, description="Cascades only: the 0-based index of the stage that "
                              "accepted the item; null when it was escalated; absent for a single judge.")
    stages: list[StageVerdict] | None = Field(default=None, exclude_if=lambda stages: stages is None,
                                              description="Cascades only: one entry per stage that judged the item, "
                                              "in order; absent for a single judge.")

    @model_serializer(mode="wrap")
    def _stage_with_stages(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]  # unannotated: pydantic keeps the fields' schema
        # An annotated serializer's schema would be its return type's, hiding every field from
        # the OpenAPI document.
        data = handler(self)
        if self.stages is None and isinstance(data, dict):
            data.pop("stage", None)
        return data


    @property
    def deciding_stage(self) -> int | None:
        """The stage whose judgment the top-level fields are (the accepting one, else the last);
        None for a single judge."""
        if self.stages is None:
            return None
        return self.stage if self.stage is not None else len(self.stages) - 1

    def deciding_calls(self) -> list[Call]:
        """The calls behind the top-level fields: all of a single judge's, the deciding stage's of
        a cascade (position statistics must not mix judges)."""
        stage = self.deciding_stage
        if stage is None:
            return self.calls
        return [call for call in self.calls if call.stage == stage]

    @property
    def decided(self) -> bool:
        return self.winner in ("A", "B")
