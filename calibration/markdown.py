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


def fmt_usd(value: object) -> str:
    return fmt(value, 6)


def fmt_interval(ci: list[float] | None) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "—"


def cascade_summary(cs: dict[str, Any]) -> list[str]:
    """The sentences of a `cascade_stages` section (calibration.stages), shared with the HTML page."""
    esc = cs["escalated"]
    cost, alone = cs["cost"], cs["cost"]["last_stage_alone"]
    waiting = (f"{esc['awaiting_label']} await a label" if cs["then"] == "human"
               else "not queued: the cascade's `then` is abstain")
    return [
        f"Items judged by the cascade: {cs['items']}; accepted by a stage: {cs['accepted']} "
        f"(coverage {fmt(cs['coverage'])}); accuracy of the accepted labelled items {fmt(cs['accuracy'])} "
        f"({fmt_share(cs['correct'], cs['labelled'])}, 95% CI {fmt_interval(cs['ci95'])}).",
        f"Escalated (no stage accepted): {esc['items']} items, {esc['labelled']} labelled, {waiting}.",
        f"Cost per item: {fmt_usd(cost['per_item'])} USD for the cascade "
        f"({fmt_usd(cost['total_usd'])} USD in all) "
        f"against an estimated {fmt_usd(alone['per_item'])} USD for the last stage alone on every item "
        f"({fmt_usd(alone['total_usd'])} USD; estimate: {alone['basis']}).",
    ]


def cascade_stage_rows(cs: dict[str, Any]) -> list[list[str]]:
    return [[str(s["stage"]), fmt(s["profile"]), fmt(s["model"]), fmt(s["reached"]), fmt(s["accepted"]),
             fmt(s["accuracy"]), fmt_share(s["correct"], s["labelled"]), fmt_interval(s["ci95"]),
             fmt_usd(s["cost_usd"]), fmt_usd(s["cost_per_item"])] for s in cs["stages"]]


CASCADE_HEADER = ["stage", "profile", "model", "reached", "accepted", "accuracy", "correct",
                  "95% CI (Clopper–Pearson)", "cost (USD)", "cost per item reached"]
QUEUE_HEADER = ["rank", "id", "BPDE", "winner", "p_a", "certainty"]


def queue_rows(cs: dict[str, Any]) -> list[list[str]]:
    return [[str(rank), str(e["id"]), fmt(e["bpde"]), fmt(e["winner"]), fmt(e["p_a"]), fmt(e["certainty"])]
            for rank, e in enumerate(cs["queue"]["top"], start=1)]


def queue_sentence(cs: dict[str, Any]) -> str:
    q = cs["queue"]
    shown = f"; the first {len(q['top'])} by BPDE (a null BPDE first, ties in input order)" if q["top"] else ""
    return f"{q['waiting']} item(s) wait for a human label{shown}."


def _cascade(cs: dict[str, Any]) -> list[str]:
    lines = ["## Cascade stages", ""]
    for sentence in cascade_summary(cs):
        lines += [sentence, ""]
    lines += table(CASCADE_HEADER, [[cell.replace("|", "\\|") for cell in row] for row in cascade_stage_rows(cs)])
    lines += ["### Human queue", "", queue_sentence(cs), ""]
    if cs["queue"]["top"]:
        lines += table(QUEUE_HEADER, [[cell.replace("|", "\\|") for cell in row] for row in queue_rows(cs)])
    return lines


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
    if "cascade_stages" in report:
        lines += _cascade(report["cascade_stages"])
    if "cost" in report:
        lines += _cost(report["cost"])
    return "\n".join(lines).rstrip() + "\n"


def _cost(cost: dict[str, Any]) -> list[str]:
    from calibration.cost import COST_HEADER, cost_rows

    digits = (0, 0, 2, 6, 3, 6, 6)  # items, calls, calls per item, USD, share, USD, USD
    rows = [[str(row[0]).replace("|", "\\|"), *(fmt(v, d) for v, d in zip(row[1:], digits, strict=True))]
            for row in cost_rows(cost)]
    return ["## Cost", ""] + table(list(COST_HEADER), rows)
