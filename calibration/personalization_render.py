"""Markdown and HTML views of the `pjudge personalization` JSON document (PerSEval family + persona fit).

Both read the document (`PersonalizationReport.to_dict()` with the persona-fit keys merged in), so
every format shows the same numbers.
"""

from __future__ import annotations

from html import escape
from typing import Any

TEXT_METRICS = (("degress", "DEGRESS"), ("egises", "EGISES"), ("edp", "EDP"), ("perseval", "PerSEval"),
                ("distance_to_reference", "σ(response, reference)"))
SIMULATED_NOTE = "These judgments come from a simulated judge (model sim-*), not a real LLM."
FIT_NOTE = ("Persona-fit win rate: mean over the judged ordered persona pairs (p, q) of every prompt of the judge's "
            "position-debiased probability that persona p prefers r_p to r_q (0.5 = no personalization). "
            "Pairwise difference: mean of F_pq + F_qp − 1 over pairs judged both ways (a response better "
            "for everyone cancels). 95% intervals: percentile bootstrap over prompts.")


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(bounds: list[float] | None) -> str:
    return "–" if bounds is None else f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _judge_title(judge: dict[str, Any]) -> str:
    return f"judge {judge['profile']} ({judge['provider']}, {judge['model']})"


def _fit_cells(scores: dict[str, Any]) -> list[str]:
    return [
        _number(scores.get("persona_fit_win_rate")), _interval(scores.get("persona_fit_ci95")),
        _number(scores.get("pairwise_difference")), _interval(scores.get("pairwise_difference_ci95")),
        str(scores.get("n_pairs", 0)), str(scores.get("n_missing", 0)),
        f"${scores.get('judge_cost_usd') or 0.0:.4f}",
    ]


FIT_HEADERS = ["win rate", "95% CI", "pairwise difference", "95% CI", "pairs", "missing", "cost"]


def persona_fit_markdown(document: dict[str, Any]) -> str:
    """The persona-fit table (empty when the document has no judge section)."""
    judge = document.get("judge")
    if not judge:
        return ""
    lines = [f"## Persona fit ({_judge_title(judge)})", "",
             "| system | " + " | ".join(FIT_HEADERS) + " |",
             "|---|" + "---:|" * len(FIT_HEADERS)]
    for name, scores in document["systems"].items():
        lines.append(f"| {name} | " + " | ".join(_fit_cells(scores)) + " |")
    lines += ["", FIT_NOTE, "",
              f"{judge['calls']} judge calls ({judge['cached_calls']} cached, {judge['failed_calls']} failed), "
              f"cost ${judge['cost_usd']:.4f}."]
    if judge.get("simulated"):
        lines += ["", f"**Note:** {SIMULATED_NOTE}"]
    return "\n".join(lines) + "\n"


def render_html(document: dict[str, Any]) -> str:
    """A self-contained page: one table of every system, ranked by PerSEval as the Markdown view."""
    judge = document.get("judge")
    headers = ["rank", "system", "prompts", "skipped", *(label for _, label in TEXT_METRICS)]
    if judge:
        headers += [f"persona fit {h}" if i == 0 else h for i, h in enumerate(FIT_HEADERS)]
    ranked = sorted(document["systems"].items(),
                    key=lambda item: (item[1]["perseval"] is None, -(item[1]["perseval"] or 0.0)))
    rows = []
    for rank, (name, scores) in enumerate(ranked, start=1):
        cells = [str(rank), name, str(scores["n_prompts"]), str(scores["n_skipped"]),
                 *(_number(scores[key]) for key, _ in TEXT_METRICS)]
        if judge:
            cells += _fit_cells(scores)
        rows.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + "</tr>")
    title = f"Degree of personalization ({document['distance']}, {document['variant']}"
    title += f", anchor system '{document['anchor_system']}')" if document.get("anchor_system") else ")"
    notes = ["Ranked by PerSEval. Means over prompts of per-prompt means over personas; prompts with "
             "fewer than 2 personas with a reference are skipped."]
    if judge:
        notes += [f"{_judge_title(judge)}. {FIT_NOTE}",
                  f"{judge['calls']} judge calls ({judge['cached_calls']} cached, {judge['failed_calls']} "
                  f"failed), cost ${judge['cost_usd']:.4f}."]
        if judge.get("simulated"):
            notes.append(SIMULATED_NOTE)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}"
        "td:nth-child(2),th:nth-child(2){text-align:left}th{background:#f3f3f3}</style>",
        "</head><body>",
        f"<h1>{escape(title)}</h1>",
        "<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>",
        "<tbody>", *rows, "</tbody></table>",
        *(f"<p>{escape(note)}</p>" for note in notes),
        "</body></html>",
    ]) + "\n"
