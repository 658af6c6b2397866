"""Small builders of verdicts for the calibration tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from judge.records import Call, JudgeInfo, StageVerdict, Verdict

DEFAULT_P_A = {"A": 0.75, "B": 0.25, "tie": 0.5, None: None}


def call(order: str | None = "AB", choice: str | None = "A", sample: int = 0, **fields: Any) -> Call:
    return Call(order=order, sample=sample, choice=choice, **fields)


def verdict(
    winner: str | None = "A",
    label: str | None = "A",
    p_a: float | None = None,
    certainty: float | None = None,
    bpde: float | None = 0.0,
    calls: list[Call] | None = None,
    model: str = "gpt-test",
    **fields: Any,
) -> Verdict:
    """A verdict whose p_a defaults to 0.75 / 0.25 / 0.5 for A / B / tie and certainty to |2 p_a - 1|."""
    if p_a is None:
        p_a = DEFAULT_P_A[winner]
    if certainty is None and p_a is not None:
        certainty = round(abs(2 * p_a - 1), 9)
    fields.setdefault("id", f"v{np.random.default_rng().integers(1 << 62)}")
    return Verdict(
        winner=winner,
        p_a=p_a,
        certainty=certainty,
        consistent=None,
        abstained=fields.pop("abstained", False),
        bpde=bpde,
        human_label=label,
        judge=JudgeInfo(profile="persona-certainty", provider="openai", model=model),
        calls=calls or [],
        **fields,
    )


def synthetic(n: int, seed: int = 0, skill: float = 0.8) -> list[Verdict]:
    """n verdicts judged in both orders by a judge that is right with probability rising with its
    certainty (mean accuracy about `skill`), labels A/B/tie, lengths and a `g` metadata key."""
    rng = np.random.default_rng(seed)
    label = rng.choice(np.array(["A", "B", "tie"]), size=n, p=[0.47, 0.47, 0.06])
    certainty = np.round(rng.uniform(0.0, 1.0, size=n), 2)
    right = rng.uniform(size=n) < (skill - 0.2 + 0.4 * certainty)
    truth_a = np.where(label == "tie", rng.uniform(size=n) < 0.5, label == "A")
    says_a = np.where(right, truth_a, ~truth_a)
    p_a = np.round(np.where(says_a, 0.5 + certainty / 2, 0.5 - certainty / 2), 9)
    flip = rng.uniform(size=n) < 0.2  # second order disagrees
    len_a = rng.integers(10, 600, size=n)
    len_b = rng.integers(10, 600, size=n)
    groups = rng.integers(0, 3, size=n)
    judge = JudgeInfo(profile="persona-certainty", provider="openai", model="gpt-test")
    out = []
    for i in range(n):
        first = "A" if says_a[i] else "B"
        second = ("B" if says_a[i] else "A") if flip[i] else first
        winner = "A" if p_a[i] > 0.5 else "B" if p_a[i] < 0.5 else "tie"
        out.append(
            Verdict(
                id=f"s{i}",
                winner=winner,
                p_a=float(p_a[i]),
                certainty=float(round(abs(2 * p_a[i] - 1), 9)),
                consistent=not flip[i],
                abstained=bool(certainty[i] < 0.3),
                bpde=0.693147181 if flip[i] else 0.0,
                human_label=str(label[i]),
                judge=judge,
                calls=[
                    Call(order="AB", sample=0, choice=first, certainty=float(certainty[i])),
                    Call(order="BA", sample=0, choice=second, certainty=float(certainty[i])),
                ],
                len_a=int(len_a[i]),
                len_b=int(len_b[i]),
                metadata={"g": int(groups[i])},
            )
        )
    return out


CASCADE_MODELS = ("gpt-mini", "gpt-mid", "gpt-big")


def cascade_verdict(item_id: str, stages: list[tuple[str | None, float | None, float]], accepted: int | None,
                    label: str | None = None, bpde: float | None = 0.0, then_abstains: bool = True) -> Verdict:
    """A cascade's verdict (SPEC 2.1) built by hand: `stages` = (winner, p_a, cost_usd) of each stage
    that judged the item, stage k by CASCADE_MODELS[k]; `accepted` = the accepting stage (None:
    escalated, so abstained). The top-level fields are the deciding stage's."""
    judged = [StageVerdict(profile=f"stage-{k}", provider="openai", model=CASCADE_MODELS[k],
                           winner=winner,  # type: ignore[arg-type]  # a str standing for a Choice
                           p_a=p_a, certainty=None if p_a is None else round(abs(2 * p_a - 1), 9), cost_usd=cost)
              for k, (winner, p_a, cost) in enumerate(stages)]
    deciding = judged[-1] if accepted is None else judged[accepted]
    return Verdict(
        id=item_id, winner=deciding.winner, p_a=deciding.p_a, certainty=deciding.certainty, consistent=None,
        abstained=accepted is None and then_abstains, bpde=bpde, human_label=label,  # type: ignore[arg-type]
        judge=JudgeInfo(profile="three-stage", provider="cascade", model=" > ".join(CASCADE_MODELS[:len(stages)])),
        calls=[Call(order="AB", sample=0, choice=deciding.winner, cost_usd=0.0,
                    stage=len(stages) - 1 if accepted is None else accepted)],
        stage=accepted, stages=judged,
    )


def small_cascade() -> list[Verdict]:
    """Nine items through three stages costing 0.001, 0.01 and 0.1 USD an item (the numbers of
    tests/test_cascade_stages.py are computed by hand from these)."""
    c0, c1, c2 = 0.001, 0.01, 0.1
    return [
        cascade_verdict("i0", [("A", 0.9, c0)], 0, "A"),
        cascade_verdict("i1", [("B", 0.1, c0)], 0, "A"),
        cascade_verdict("i2", [("A", 0.6, c0), ("B", 0.05, c1)], 1, "B"),
        cascade_verdict("i3", [("B", 0.45, c0), ("A", 0.97, c1)], 1, None),
        cascade_verdict("i4", [("A", 0.6, c0), ("A", 0.7, c1), ("A", 0.99, c2)], 2, "A"),
        cascade_verdict("i5", [("A", 0.6, c0), ("B", 0.4, c1), ("A", 0.55, c2)], None, None, bpde=0.693147181),
        cascade_verdict("i6", [("A", 0.6, c0), ("B", 0.4, c1), ("B", 0.45, c2)], None, "B", bpde=1.0),
        cascade_verdict("i7", [("A", 0.6, c0), ("B", 0.4, c1), (None, None, c2)], None, None, bpde=None),
        cascade_verdict("i8", [("A", 0.6, c0), ("B", 0.4, c1), ("A", 0.52, c2)], None, None, bpde=0.693147181),
    ]
