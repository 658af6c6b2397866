"""SPEC 4 statistics of verdicts: agreement, calibration, bias, human-in-the-loop, risk control.

The public API is `__all__` below; every other module and name stays importable but is internal
and may change. The names load on first use (numpy and scipy only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from judge._exports import lazy_names

if TYPE_CHECKING:
    from calibration.html import render_html
    from calibration.markdown import render_markdown
    from calibration.report import build_report
    from calibration.risk import risk_control

_HOMES = {
    "build_report": "calibration.report", "render_markdown": "calibration.markdown",
    "render_html": "calibration.html", "risk_control": "calibration.risk",
}

__all__ = ["build_report", "render_html", "render_markdown", "risk_control"]


__getattr__, __dir__ = lazy_names(__name__, _HOMES, __all__)
