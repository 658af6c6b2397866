"""The calibration tests' builders of verdicts (tests/support/verdicts.py)."""

from __future__ import annotations

from tests.support.verdicts import synthetic, verdict


def test_helpers_build_consistent_verdicts() -> None:
    v = verdict("B", "A")
    assert (v.p_a, v.certainty, v.human_label) == (0.25, 0.5, "A")
    s = synthetic(50, seed=1)
    assert len(s) == 50 and all(x.winner in ("A", "B", "tie") for x in s)
