"""Typed records that flow through the project: item -> call -> verdict (SPEC section 1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    cost_usd: float | None = None
    latency_s: float | None = None
    cached: bool = False
    error: str | None = None
    attempts: int = 1

    @property
    def parsed(self) -> bool:
        return self.error is None and (self.choice is not None or self.scores is not None)


class Verdict(BaseModel):
    """The aggregated judgment of one item (SPEC 1.2)."""

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

    @property
    def decided(self) -> bool:
        return self.winner in ("A", "B")
