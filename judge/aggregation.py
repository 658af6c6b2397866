"""Balanced position calibration, BPDE and abstention, exactly as SPEC section 3."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from judge.records import Call, Choice

Mode = Literal["choice", "scores"]
DECIMALS = 9
MISSING_CERTAINTY = 0.5


@dataclass(frozen=True)
class Aggregate:
    winner: Choice | None
    p_a: float | None
    certainty: float | None
    consistent: bool | None
    abstained: bool
    bpde: float | None


def vote(call: Call) -> float:
    """v = 0.5 + u/2 for A, 0.5 - u/2 for B, 0.5 for a tie (SPEC 3.1)."""
    if call.choice == "tie":
        return 0.5
    u = MISSING_CERTAINTY if call.certainty is None else call.certainty
    return 0.5 + u / 2 if call.choice == "A" else 0.5 - u / 2


def outcome(call: Call) -> Literal["win", "tie", "lose"]:
    """A parsed call as win/tie/lose for A (SPEC 3.3)."""
    if call.scores is not None:
        a, b = call.scores
        return "win" if a > b else "lose" if a < b else "tie"
    return "win" if call.choice == "A" else "lose" if call.choice == "B" else "tie"


def bpde(calls: Sequence[Call]) -> float | None:
    parsed = [c for c in calls if c.parsed]
    if not parsed:
        return None
    counts: dict[str, int] = {}
    for call in parsed:
        key = outcome(call)
        counts[key] = counts.get(key, 0) + 1
    n = len(parsed)
    entropy = -sum((k / n) * math.log(k / n) for k in counts.values())
    return round(entropy, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _winner(p_a: float) -> Choice:
    return "A" if p_a > 0.5 else "B" if p_a < 0.5 else "tie"


def _consistent(calls: Sequence[Call], swapped: bool) -> bool | None:
    if not swapped:
        return None
    firsts = {c.order: c for c in calls if c.sample == 0}
    ab, ba = firsts.get("AB"), firsts.get("BA")
    if ab is None or ba is None or not ab.parsed or not ba.parsed:
        return False
    return outcome(ab) == outcome(ba)


def aggregate(
    calls: Sequence[Call],
    mode: Mode,
    swapped: bool,
    certainty_threshold: float | None = None,
) -> Aggregate:
    """Turn the calls of one item (already in the item's own A/B labels) into a verdict."""
    parsed = [c for c in calls if c.parsed]
    p_a: float | None = None
    certainty: float | None = None
    winner: Choice | None = None
    if parsed and mode == "choice":
        by_order: dict[str | None, list[float]] = {}
        for call in parsed:
            by_order.setdefault(call.order, []).append(vote(call))
        p_a = round(sum(sum(v) / len(v) for v in by_order.values()) / len(by_order), DECIMALS)
        certainty = round(abs(2 * p_a - 1), DECIMALS)
        winner = _winner(p_a)
    elif parsed and mode == "scores":
        scored = [c.scores for c in parsed if c.scores is not None]
        cs_a = sum(s[0] for s in scored) / len(scored)
        cs_b = sum(s[1] for s in scored) / len(scored)
        # The winner compares the means rounded (float noise in a sum is no preference); certainty
        # and p_a come from the exact difference, rounded once at the end as SPEC 3.1 says.
        rounded_a, rounded_b = round(cs_a, DECIMALS), round(cs_b, DECIMALS)
        winner = "A" if rounded_a > rounded_b else "B" if rounded_a < rounded_b else "tie"
        difference = 0.0 if winner == "tie" else cs_a - cs_b
        certainty = round(abs(difference) / 9, DECIMALS)
        p_a = round(0.5 + difference / 18, DECIMALS)
    abstained = certainty_threshold is not None and (certainty is None or certainty < certainty_threshold)
    return Aggregate(
        winner=winner,
        p_a=p_a,
        certainty=certainty,
        consistent=_consistent(calls, swapped),
        abstained=abstained,
        bpde=bpde(calls),
    )


# ---------------------------------------------------------------- adaptive sampling (profile `adaptive`)
def _opposite(x: Choice | None, y: Choice | None) -> bool:
    return {x, y} == {"A", "B"}


def settled(calls: Sequence[Call], mode: Mode, swapped: bool, margin: float,
            previous_winner: Choice | None = None) -> bool:
    """Whether adaptive sampling stops after a round (`calls`: every call of the item so far, r
    samples per order; `previous_winner`: the balanced winner after round r - 1, None after the
    first round). Settled when the balanced verdict (section 3.1/3.2, unchanged) has a winner and
    either
      (1) no two orders contradict each other (each order's own verdict, the same aggregation over
          that order's calls alone, has a winner, and none is A while another is B; a tie
          contradicts nothing) and the balanced certainty is at least `margin`; or
      (2) the last round left the balanced winner as it was (r >= 2, same winner as after r - 1).
    Without swapping (1) is the certainty alone."""
    verdict = aggregate(calls, mode, swapped)
    if verdict.winner is None or verdict.certainty is None:
        return False
    if previous_winner is not None and verdict.winner == previous_winner:
        return True
    if verdict.certainty < margin:
        return False
    orders = sorted({c.order for c in calls}, key=str) if swapped else []
    own = [aggregate([c for c in calls if c.order == order], mode, False).winner for order in orders]
    if any(winner is None for winner in own):
        return False
    return not any(_opposite(x, y) for x in own for y in own)
