"""Random stored verdicts for the store's tests: ties, null winners, unlabelled items, missing
orders, unparsed calls, metadata of every JSON kind."""

from __future__ import annotations

import random
from typing import Any

from judge.records import Call, JudgeInfo, PairItem, Verdict

BPDES = (None, 0.0, -0.0, 0.6931471805599453, 1.0986122886681098, 0.6365141682948128)


def make_items(rng: random.Random, n: int) -> list[PairItem]:
    items = []
    for i in range(n):
        metadata: dict[str, Any] = {"dataset": rng.choice(["prism", "ec", "(missing)", "ap"]),
                                    "group": rng.choice([0, 1, 2.5, True]),
                                    "maybe": rng.choice([None, "x", "y"])}
        if rng.random() < 0.3:
            del metadata["maybe"]
        if rng.random() < 0.2:
            metadata["nested"] = {"k": rng.choice([1, 2])}
        items.append(PairItem(id=f"it-{i:04d}", prompt="p", response_a="a" * rng.randint(1, 120),
                              response_b="b" * rng.randint(1, 120),
                              human_label=rng.choice(["A", "B", "tie", None, "A", "B"]), metadata=metadata))
    return items


def random_call(rng: random.Random, order: str | None, sample: int) -> Call:
    kind = rng.random()
    if kind < 0.12:
        return Call(order=order, sample=sample, error="unparsed")  # type: ignore[arg-type]
    if kind < 0.22:
        return Call(order=order, sample=sample, scores=[rng.randint(1, 10), rng.randint(1, 10)])  # type: ignore[arg-type]
    return Call(order=order, sample=sample, choice=rng.choice(["A", "B", "tie"]),  # type: ignore[arg-type]
                certainty=rng.choice([None, 0.8, rng.randint(1, 100) / 100]))


def random_verdict(rng: random.Random, item: PairItem, profile: str, model: str) -> Verdict:
    winner = rng.choice(["A", "B", "A", "B", "tie", None])
    if winner is None:
        p_a = certainty = None
    else:
        step = rng.randint(0, 100) / 200  # 0 .. 0.5
        p_a = {"A": 0.5 + step, "B": 0.5 - step, "tie": 0.5}[winner]
        p_a = round(p_a, 9)
        certainty = rng.choice([None, round(abs(2 * p_a - 1), 9), 0.8, 0.7, rng.random()])
        if rng.random() < 0.1:
            p_a = None  # confidence falls back on the certainty
    orders = rng.choice([["AB", "BA"], ["AB", "BA"], ["AB"], ["BA"], [None], []])
    calls = [random_call(rng, order, sample) for order in orders for sample in range(rng.randint(1, 2))]
    rng.shuffle(calls)
    return Verdict(id=item.id, winner=winner, p_a=p_a, certainty=certainty,  # type: ignore[arg-type]
                   consistent=None, abstained=rng.random() < 0.2, bpde=rng.choice(BPDES),
                   human_label=item.human_label, judge=JudgeInfo(profile=profile, provider="openai", model=model),
                   calls=calls, len_a=None if rng.random() < 0.1 else len(item.response_a),
                   len_b=len(item.response_b), metadata=dict(item.metadata))
