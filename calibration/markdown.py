"""A report (calibration.report.build_report) as Markdown tables, for a terminal or a pull request."""

from __future__ import annotations

from typing import Any

SIMULATED_WARNING = (
    "> **Warning: simulated verdicts.** These verdicts come from a simulated judge (a `sim-` model): "
    "the numbers test the pipeline and say nothing about any real model."
)


def fmt(value: object, digits: int = 3) -> str:
    """A number for a table cell; an em dash for null."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ci(stat: dict[str, Any] | None) -> tuple[str, str]:
    """(value, "[lo, hi]") of a {"value", "ci95"} statistic."""
    if not stat:
        return "—", "—"
    ci = stat.get("ci95")
    return fmt(stat.get("value")), (f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "—")


def fmt_share(part: int | None, whole: int | None) -> str:
    return f"{part}/{whole}" if part is not None and whole else "—"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _agreement(r: dict[str, Any]) -> list[str]:
    c = r["counts"]
    kappa, kappa_ci = fmt_ci(r.get("cohen_kappa"))
    alpha, alpha_ci = fmt_ci(r.get("krippendorff_alpha"))
    rows = [
        ["accuracy", fmt(r.get("accuracy")), fmt_share(c["correct"], c["labelled"])],
        ["accuracy, no tie", fmt(r.get("accuracy_no_tie")), fmt_share(c["correct_no_tie"], c["decided"])],
        ["Cohen's kappa", kappa, f"95% CI {kappa_ci}"],
        ["Krippendorff's alpha (nominal)", alpha, f"95% CI {alpha_ci}"],
        ["Brier score (lower is better)", fmt(r.get("brier")), ""],
        ["ECE (lower is better)", fmt(r.get("ece")), ""],
        ["area under accuracy-coverage", fmt(r.get("coverage_auc")), ""],
    ]
    return ["## Agreement with human labels", ""] + table(["statistic", "value", "detail"], rows)


def _certainty(r: dict[str, Any]) -> list[str]:
    lines = ["## Certainty", ""]
    high, low = r["high_certainty"], r["low_certainty"]
    rows = [
        [f"certainty ≥ {fmt(high['threshold'], 2)}", fmt(high["n"]), fmt_share(high["correct"], high.get("labelled")), fmt(high["accuracy"])],
        [f"certainty < {fmt(low['threshold'], 2)}", fmt(low["n"]), fmt_share(low["correct"], low.get("labelled")), fmt(low["accuracy"])],
    ]
    lines += table(["items", "n", "correct", "accuracy"], rows)
    curve = [
        [fmt(p["threshold"], 1), fmt(p["coverage"]), fmt(p["accuracy"]), fmt(p.get("n"))]
        for p in r["coverage_curve"]
    ]
    lines += ["Coverage (decided items kept at each certainty threshold):", ""]
    lines += table(["certainty ≥", "coverage", "accuracy", "n"], curve)
    if r.get("reliability"):
        rel = [
            [f"{b['lo']:.2f}–{b['hi']:.2f}", fmt(b["n"]), fmt(b["confidence"]), fmt(b["accuracy"])]
            for b in r["reliability"]
        ]
        lines += ["Reliability (confidence max(p_a, 1 − p_a) against observed accuracy):", ""]
        lines += table(["confidence", "n", "mean confidence", "accuracy"], rel)
    return lines


def _bias(r: dict[str, Any]) -> list[str]:
    first = r.get("first_position") or {}
    length = r.get("length") or {}
    rows = [
        ["position consistency (both orders agree)", fmt(r.get("position_consistency")), ""],
        [
            "first-position rate (0.5 = no bias)",
            fmt(r.get("first_position_rate")),
            f"{first.get('first', 0)} first / {first.get('second', 0)} second / {first.get('tie', 0)} tie calls",
        ],
        [
            "prefers the longer answer (> 30 chars longer)",
            fmt(r.get("prefers_longer")),
            f"humans: {fmt(length.get('human_prefers_longer'))}",
        ],
    ]
    return ["## Position and length bias", ""] + table(["statistic", "value", "detail"], rows)


def _hitl(r: dict[str, Any]) -> list[str]:
    h = r["hitl"]
    kappa, kappa_ci = fmt_ci(h.get("cohen_kappa"))
    rows = [[fmt(h["beta"], 2), fmt(h["n_sent"]), fmt(h["accuracy"]), f"{kappa} {kappa_ci}"]]
    return [
        "## Human in the loop (highest BPDE sent to humans)",
        "",
    ] + table(["beta", "sent", "accuracy", "Cohen's kappa (95% CI)"], rows)


def _risk(rc: dict[str, Any]) -> list[str]:
    lines = [
        "## Risk control (fixed-sequence testing, Clopper–Pearson)",
        "",
        f"Target accuracy {fmt(rc['target'])} with probability ≥ {fmt(1 - rc['delta'], 2)}.",
        "",
    ]
    if rc.get("threshold") is None:
        reason = rc.get("reason", "no threshold passes")
        lines += [f"**No threshold guarantees the target** ({reason}; bound {fmt(rc.get('bound'))}): "
                  "every item goes to humans (coverage 0).", ""]
        return lines
    row = [
        fmt(rc["threshold"], 4),
        fmt(rc["accepted"]),
        fmt(rc["errors"]),
        fmt(rc["bound"]),
        fmt(rc["coverage"]),
        fmt(rc["accuracy"]),
    ]
    return lines + table(
        ["confidence ≥", "accepted", "errors", "error bound", "coverage", "accuracy"], [row]
    )


def _groups(r: dict[str, Any]) -> list[str]:
    rows = []
    for key, g in r["by_group"].items():
        kappa, _ = fmt_ci(g.get("cohen_kappa"))
        rows.append(
            [
                key.replace("|", "\\|"),
                fmt(g["counts"]["items"]),
                fmt(g["counts"]["labelled"]),
                fmt(g.get("accuracy")),
                fmt(g.get("accuracy_no_tie")),
                kappa,
                fmt(g["high_certainty"].get("accuracy")),
                fmt(g.get("position_consistency")),
            ]
        )
    header = ["group", "items", "labelled", "accuracy", "no tie", "kappa", "high-cert. acc.", "consistency"]
    return [f"## By `{r.get('group_by', 'group')}`", ""] + table(header, rows)


def render_markdown(report: dict[str, Any], title: str = "persona-judge report") -> str:
    c = report["counts"]
    lines = [f"# {title}", ""]
    if report.get("simulated"):
        lines += [SIMULATED_WARNING, ""]
    models = ", ".join(f"`{m}`" for m in report.get("models", [])) or "—"
    lines += [
        f"Judge: {models}. Items: {c['items']}, labelled: {c['labelled']}, "
        f"decided (labelled, winner A or B): {c['decided']}.",
        "",
    ]
    if c["labelled"] == 0:
        lines += ["No human labels: agreement statistics are empty (join labels with `--labels FILE`).", ""]
    lines += _agreement(report) + _certainty(report) + _bias(report) + _hitl(report)
    if "risk_control" in report:
        lines += _risk(report["risk_control"])
    if "by_group" in report:
        lines += _groups(report)
    if "cost" in report:
        lines += _cost(report["cost"])
    return "\n".join(lines).rstrip() + "\n"


def _cost(cost: dict[str, Any]) -> list[str]:
    from calibration.cost import COST_HEADER, cost_rows

    digits = (0, 0, 2, 6, 3, 6, 6)  # items, calls, calls per item, USD, share, USD, USD
    rows = [[str(row[0]).replace("|", "\\|"), *(fmt(v, d) for v, d in zip(row[1:], digits, strict=True))]
            for row in cost_rows(cost)]
    return ["## Cost", ""] + table(list(COST_HEADER), rows)
