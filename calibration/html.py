"""A report (calibration.report.build_report) as one self-contained HTML file.

Everything the page shows is inside the file: plots are PNGs drawn with matplotlib's Agg canvas
(no display, no pyplot global state, safe in a server) and embedded as base64 data URIs; the styles
and the one small script are inline; a Content-Security-Policy forbids fetching anything else, so
the file opens the same offline, from an e-mail attachment or from a CI artifact. Every piece of
text that comes from the data (ids, model names, group values, file names) goes through `esc`:
verdict files are user input and must not be able to inject markup.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calibration.compare import LOWER_IS_BETTER, Side, compare
from calibration.hitl import hitl_selection
from calibration.markdown import (
    CASCADE_HEADER,
    QUEUE_HEADER,
    cascade_stage_rows,
    cascade_summary,
    fmt,
    queue_rows,
    queue_sentence,
)
from calibration.table import NAMES, NONE, VerdictTable, build_table
from judge.records import Verdict

# One colour per compared side; the first is matplotlib's default blue, which nothing else on the
# page uses, so a screenshot test can tell plot pixels from text pixels.
SIDE_COLORS = ("#1f77b4", "#d62728")
FIGSIZE = (6.4, 4.0)
DPI = 100
QUEUE_ROWS = 200  # a 100k-item job would queue 20k items; the page lists the first ones

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

# Records, on load, the decoded size of every image and any script error as data attributes, so a
# headless browser's --dump-dom shows whether the plots rendered (tests/test_report_html.py reads them).
LOAD_SCRIPT = """
window.addEventListener('error', function (e) {
  document.body.setAttribute('data-errors', (document.body.getAttribute('data-errors') || '') + e.message + ';');
});
window.addEventListener('load', function () {
  var ok = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    img.setAttribute('data-natural-width', img.naturalWidth);
    img.setAttribute('data-natural-height', img.naturalHeight);
    if (img.complete && img.naturalWidth > 0 && img.naturalHeight > 0) { ok += 1; }
  }
  document.body.setAttribute('data-images', document.images.length);
  document.body.setAttribute('data-images-rendered', ok);
});
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warning { background: #fff3cd; border: 1px solid #e0c36a; padding: 0.6rem 1rem; }
.note { color: #555; font-size: 0.9rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; } figcaption { font-size: 0.85rem; color: #555; max-width: 640px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { font-size: 0.85rem; }
"""

Row = Sequence[object]  # cells: text, numbers, None


# ----------------------------------------------------------------------------- escaping, tables


def esc(value: object) -> str:
    """Text for HTML content or a quoted attribute."""
    return html.escape(str(value), quote=True)


def _cell_text(value: object) -> str:
    # Numbers and null through the Markdown formatter, so both formats print a value the same way.
    return value if isinstance(value, str) else fmt(value)


def html_table(header: Sequence[str], rows: Sequence[Row], numeric: Collection[int] | None = None) -> str:
    """A table of plain values; every cell is escaped. Columns in `numeric` (default: all but the
    first) are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    right = set(range(1, len(header))) if numeric is None else set(numeric)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            cls = ' class="num"' if i in right else ""
            cells.append(f"<td{cls}>{esc(_cell_text(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _ci(stat: dict[str, Any] | None) -> str:
    ci = (stat or {}).get("ci95")
    return f"95% CI [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""


def _signed(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:+d}" if isinstance(value, int) else f"{value:+.3f}"


# ----------------------------------------------------------------------------- plots


def figure_png(draw: Callable[[Figure], None]) -> str:
    """Draw on a fresh Agg figure and return it as a data URI."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def accuracy_coverage(table: VerdictTable) -> tuple[np.ndarray, np.ndarray]:
    """The full accuracy-coverage curve of decided items: accept from the most certain down, one
    point per distinct certainty level (ties enter together), as calibration.certainty.coverage_auc."""
    pool = table.decided & np.isfinite(table.certainty)
    total = int(table.decided.sum())
    if not pool.any():
        return np.empty(0), np.empty(0)
    order = np.argsort(-table.certainty[pool], kind="stable")
    certainty = table.certainty[pool][order]
    cum_correct = np.cumsum(table.correct[pool][order])
    ends = np.flatnonzero(np.r_[certainty[1:] != certainty[:-1], True])
    return (ends + 1) / total, cum_correct[ends] / (ends + 1)


def _draw_reliability(fig: Figure, sides: Sequence[Side]) -> None:
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    bins = [[b for b in s.report.get("reliability", []) if b["n"]] for s in sides]
    if not any(bins):
        _empty(top, "no labelled decided items with a confidence")
        _empty(bottom, "")
        return
    top.plot([0.5, 1.0], [0.5, 1.0], ls="--", color="#888", lw=1, label="perfect calibration")
    width = 0.05 / len(sides)
    for i, (side, side_bins) in enumerate(zip(sides, bins, strict=True)):
        color = SIDE_COLORS[i]
        conf = [b["confidence"] for b in side_bins]
        top.plot(conf, [b["accuracy"] for b in side_bins], marker="o", color=color,
                 label=f"{side.name} (ECE {fmt(side.report.get('ece'))})")
        left = [b["lo"] + i * width for b in side_bins]
        bottom.bar(left, [b["n"] for b in side_bins], width=width, align="edge", color=color, alpha=0.8)
    top.set_xlim(0.5, 1.0)
    top.set_ylim(0.0, 1.02)
    top.set_ylabel("observed accuracy")
    top.set_title("Reliability: confidence max(p_a, 1 − p_a) vs accuracy")
    _legend(top, loc="best")
    bottom.set_ylabel("items")
    bottom.set_xlabel("confidence (10 bins over [0.5, 1])")


def _draw_coverage(fig: Figure, sides: Sequence[Side]) -> None:
    ax = fig.subplots()
    drawn = False
    for i, side in enumerate(sides):
        color = SIDE_COLORS[i]
        coverage, accuracy = accuracy_coverage(build_table(side.verdicts))
        if coverage.size == 0:
            continue
        drawn = True
        ax.plot(coverage, accuracy, color=color, lw=1.5, label=f"{side.name} (AUC {fmt(side.report.get('coverage_auc'))})")
        points = [p for p in side.report.get("coverage_curve", []) if p["coverage"] and p["accuracy"] is not None]
        ax.scatter([p["coverage"] for p in points], [p["accuracy"] for p in points], color=color, s=14, zorder=3)
        rc = side.report.get("risk_control")
        if rc:
            ax.axhline(rc["target"], color=color, ls=":", lw=1)
            if rc.get("threshold") is not None:
                ax.scatter([rc["coverage"]], [rc["accuracy"]], marker="*", s=160, color=color, zorder=4,
                           edgecolor="black", label=f"{side.name}: risk control, target {fmt(rc['target'], 2)}")
    if not drawn:
        _empty(ax, "no labelled decided items")
        return
    ax.set_xlim(0.0, 1.02)
    ax.set_xlabel("coverage (share of decided items kept, most certain first)")
    ax.set_ylabel("accuracy of the kept items")
    ax.set_title("Accuracy–coverage (dots: certainty ≥ 0, 0.1, …, 0.9)")
    _legend(ax, loc="best")


POSITION_METRICS: tuple[tuple[str, Callable[[dict[str, Any]], Any]], ...] = (
    ("first-position rate (ties excluded)", lambda r: (r.get("first_position") or {}).get("rate_no_tie")),
    ("position consistency", lambda r: r.get("position_consistency")),
    ("judge prefers the longer answer", lambda r: r.get("prefers_longer")),
    ("humans prefer the longer answer", lambda r: (r.get("length") or {}).get("human_prefers_longer")),
)


def _legend(ax: Axes, loc: Literal["best", "lower right"]) -> None:
    """A legend when something is labelled (a report without the numbers draws no series, and
    matplotlib warns on stderr about an empty legend)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize=8)


def _draw_position(fig: Figure, sides: Sequence[Side]) -> None:
    ax = fig.subplots()
    y = np.arange(len(POSITION_METRICS))
    height = 0.8 / len(sides)
    for i, side in enumerate(sides):
        values = [get(side.report) for _, get in POSITION_METRICS]
        offsets = y + (i - (len(sides) - 1) / 2) * height
        known = [(o, v) for o, v in zip(offsets, values, strict=True) if v is not None]
        if known:
            ax.barh([o for o, _ in known], [v for _, v in known], height=height, color=SIDE_COLORS[i],
                    label=side.name)
        for offset, value in zip(offsets, values, strict=True):
            ax.text(0.01 if value is None else value + 0.01, offset, "n/a" if value is None else fmt(value),
                    va="center", fontsize=8)
    ax.axvline(0.5, color="#888", ls="--", lw=1)
    ax.set_yticks(y, [name for name, _ in POSITION_METRICS])
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.1)
    ax.set_xlabel("share (dashed: 0.5, no first-position bias)")
    ax.set_title("Position and length bias")
    _legend(ax, loc="lower right")


PLOTS: tuple[tuple[str, str, Callable[[Figure, Sequence[Side]], None]], ...] = (
    ("reliability", "Reliability diagram: a calibrated judge's points lie on the diagonal; bars count items per bin.",
     _draw_reliability),
    ("accuracy-coverage", "Accuracy–coverage curve: the accuracy left when only the most certain items are kept; "
     "stars mark the risk-controlled threshold, dotted lines its target.", _draw_coverage),
    ("position-bias", "Position and length bias: without bias the first-position rate is 0.5 and consistency is 1; "
     "compare the judge's length preference with the humans'.", _draw_position),
)


def _on(draw: Callable[[Figure, Sequence[Side]], None], sides: Sequence[Side]) -> Callable[[Figure], None]:
    return lambda fig: draw(fig, sides)


def _plots(sides: Sequence[Side]) -> str:
    figures = []
    for name, caption, draw in PLOTS:
        uri = figure_png(_on(draw, sides))
        figures.append(
            f'<figure><img class="plot" id="plot-{name}" src="{uri}" alt="{esc(caption)}" '
            f'width="{int(FIGSIZE[0] * DPI)}" height="{int(FIGSIZE[1] * DPI)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )
    return '<h2>Plots</h2><div class="plots">' + "".join(figures) + "</div>"


# ----------------------------------------------------------------------------- sections


def _summary_rows(r: dict[str, Any]) -> list[Row]:
    c = r["counts"]
    high, low, h = r["high_certainty"], r["low_certainty"], r["hitl"]
    return [
        ["accuracy", r.get("accuracy"), f"{c['correct']}/{c['labelled']} labelled"],
        ["accuracy, no tie", r.get("accuracy_no_tie"), f"{c['correct_no_tie']}/{c['decided']} decided"],
        ["Cohen's kappa", (r.get("cohen_kappa") or {}).get("value"), _ci(r.get("cohen_kappa"))],
        ["Krippendorff's alpha (nominal)", (r.get("krippendorff_alpha") or {}).get("value"),
         _ci(r.get("krippendorff_alpha"))],
        [f"accuracy at certainty ≥ {fmt(high['threshold'], 2)}", high.get("accuracy"),
         f"{high['correct']}/{high.get('labelled', high['n'])} ({high['n']} items)"],
        [f"accuracy at certainty < {fmt(low['threshold'], 2)}", low.get("accuracy"),
         f"{low['correct']}/{low.get('labelled', low['n'])} ({low['n']} items)"],
        ["ECE (lower is better)", r.get("ece"), ""],
        ["Brier score (lower is better)", r.get("brier"), ""],
        ["area under accuracy–coverage", r.get("coverage_auc"), ""],
        ["position consistency", r.get("position_consistency"), "both orders' first samples agree"],
        ["first-position rate", r.get("first_position_rate"), "share of parsed calls choosing the first shown"],
        ["prefers the longer answer", r.get("prefers_longer"), "pairs differing by > 30 characters"],
        [f"human in the loop: accuracy (β = {fmt(h['beta'], 2)})", h.get("accuracy"), f"{h['n_sent']} sent to humans"],
        ["human in the loop: Cohen's kappa", (h.get("cohen_kappa") or {}).get("value"), _ci(h.get("cohen_kappa"))],
    ]


def _summary(report: dict[str, Any]) -> str:
    return "<h2>Summary</h2>" + html_table(["statistic", "value", "detail"], _summary_rows(report), numeric={1})


def _comparison(comparison: dict[str, Any]) -> str:
    rows = []
    for name, cell in comparison["differences"].items():
        label = name + (" (lower is better)" if name in LOWER_IS_BETTER else "")
        rows.append([label, cell["a"], cell["b"], _signed(cell["difference"])])
    a, b = comparison["a"]["name"], comparison["b"]["name"]
    out = "<h2>Side by side</h2>" + html_table(["statistic", f"a: {a}", f"b: {b}", "b − a"], rows)
    p = comparison["paired"]
    paired_rows = [
        ["shared items (same id, once in each file)", p["shared"]],
        ["only in a / only in b", f"{p['only_in_a']} / {p['only_in_b']}"],
        ["ids repeated within a file (not paired)", p["duplicate_ids"]],
        ["same winner", p["same_winner"]],
        ["labelled, same label in both", p["labelled"]],
        ["labelled in both, labels differ (left out)", p["label_conflicts"]],
        ["both correct / only a / only b / neither",
         f"{p['both_correct']} / {p['only_a_correct']} / {p['only_b_correct']} / {p['neither_correct']}"],
        ["accuracy a → b", f"{fmt(p['accuracy_a'])} → {fmt(p['accuracy_b'])} ({_signed(p['difference'])})"],
        ["McNemar exact p (discordant pairs)", fmt(p["mcnemar_p"], 4)],
    ]
    return out + "<h2>Paired: items judged in both files</h2>" + html_table(["paired", "value"], paired_rows)


def _risk(side: Side) -> str:
    rc = side.report.get("risk_control")
    if not rc:
        return ""
    intro = (f"<p>{esc(side.name)}: target accuracy {esc(fmt(rc['target']))} with probability ≥ "
             f"{esc(fmt(1 - rc['delta'], 2))} (fixed-sequence testing, Clopper–Pearson bound).</p>")
    if rc.get("threshold") is None:
        reason = rc.get("reason", "no threshold passes")
        return intro + (f'<p class="warning">No threshold guarantees the target ({esc(reason)}): '
                        "every item goes to humans (coverage 0).</p>")
    # certainty = |2 p_a - 1| = 2 confidence - 1: the number a profile's certainty_threshold takes
    # (`pjudge report --save-profile` writes it, rounded as SPEC 3.1 rounds).
    row = [rc["threshold"], 2 * rc["threshold"] - 1, rc["accepted"], rc["errors"], rc["bound"],
           rc["coverage"], rc["accuracy"]]
    return intro + html_table(
        ["confidence ≥", "= certainty ≥", "accepted", "errors", "error bound", "coverage", "accuracy"],
        [[fmt(row[0], 4), fmt(row[1], 4), *row[2:]]], numeric=range(7))


def _groups(side: Side) -> str:
    groups = side.report.get("by_group")
    if not groups:
        return ""
    rows = []
    for key, g in groups.items():
        rows.append([key, g["counts"]["items"], g["counts"]["labelled"], g.get("accuracy"), g.get("accuracy_no_tie"),
                     (g.get("cohen_kappa") or {}).get("value"), g["high_certainty"].get("accuracy"),
                     g.get("position_consistency"), g.get("first_position_rate")])
    header = ["group", "items", "labelled", "accuracy", "no tie", "kappa", "high-cert. acc.", "consistency",
              "first-position"]
    title = f"By {side.report.get('group_by', 'group')}" + (f" ({side.name})" if side.name else "")
    return f"<h2>{esc(title)}</h2>" + html_table(header, rows)


def bpde_queue(verdicts: Sequence[Verdict] | VerdictTable, beta: float) -> tuple[str, int, np.ndarray]:
    """(pool, pool size, rows) of the items to send to humans, highest BPDE first.

    Items without a human label are the ones a human should look at, so when there are any the queue
    ranks them; when every item is labelled it is SPEC 3.3's selection (calibration.hitl), the items
    whose labels the `hitl` statistics substituted. Same rule both ways: floor(beta * n + 0.5) items,
    a null BPDE first, ties in input order."""
    t = build_table(verdicts)
    unlabelled = np.flatnonzero(t.label == NONE)
    if unlabelled.size == 0:
        return "labelled", int(t.labelled.sum()), hitl_selection(t, beta)
    n_sent = math.floor(round(beta * unlabelled.size, 9) + 0.5)
    key = np.where(np.isnan(t.bpde[unlabelled]), np.inf, t.bpde[unlabelled])
    order = np.argsort(-key, kind="stable")
    return "unlabelled", int(unlabelled.size), unlabelled[order[:n_sent]]


def _queue(side: Side) -> str:
    beta = side.report["hitl"]["beta"]
    pool, size, rows = bpde_queue(side.verdicts, beta)
    what = ("unlabelled items" if pool == "unlabelled"
            else "labelled items (all are labelled: this is the selection behind the human-in-the-loop numbers)")
    note = (f"<p class=\"note\">{esc(side.name)}: the {rows.size} of {size} {esc(what)} with the highest BPDE "
            f"(entropy of the calls' win/tie/lose outcomes), β = {esc(fmt(beta, 2))}. "
            "An item no call could parse comes first.")
    if rows.size > QUEUE_ROWS:
        note += f" The first {QUEUE_ROWS} are listed."
    note += "</p>"
    table_rows = []
    for rank, row in enumerate(rows[:QUEUE_ROWS], start=1):
        v = side.verdicts[int(row)]
        table_rows.append([rank, v.id, v.bpde, v.winner, v.p_a, v.certainty, v.consistent, v.human_label])
    header = ["rank", "id", "BPDE", "winner", "p_a", "certainty", "consistent", "human label"]
    return note + (html_table(header, table_rows, numeric={0, 2, 4, 5}) if table_rows else "")


def _cascade(side: Side) -> str:
    """The per-stage table and the human queue of a cascade's verdicts (calibration.stages)."""
    cs = side.report.get("cascade_stages")
    if not cs:
        return ""
    title = "Cascade stages" + (f" ({side.name})" if side.name else "")
    parts = [f"<h2>{esc(title)}</h2>"]
    parts += [f"<p>{esc(sentence.replace('`', ''))}</p>" for sentence in cascade_summary(cs)]
    parts.append(html_table(CASCADE_HEADER, cascade_stage_rows(cs), numeric={0, 3, 4, 5, 8, 9}))
    parts.append(f"<h3>Human queue</h3><p class=\"note\">{esc(queue_sentence(cs))}</p>")
    if cs["queue"]["top"]:
        parts.append(html_table(QUEUE_HEADER, queue_rows(cs), numeric={0, 2, 4, 5}))
    return "".join(parts)


def _confusion(side: Side) -> str:
    confusion = side.report.get("confusion")
    if not confusion:
        return ""
    rows = [[f"judge {j}", *(confusion[j][h] for h in NAMES)] for j in NAMES]
    return (f"<p class=\"note\">{esc(side.name)}: judge winner (rows) × human label (columns).</p>"
            + html_table(["", *(f"human {h}" for h in NAMES)], rows))


def _header(title: str, sides: Sequence[Side]) -> str:
    parts = [f"<h1>{esc(title)}</h1>"]
    if any(s.report.get("simulated") for s in sides):
        parts.append('<p class="warning"><strong>Warning: simulated verdicts.</strong> These verdicts come from a '
                     "simulated judge (a <code>sim-</code> model): the numbers test the pipeline and say nothing "
                     "about any real model.</p>")
    for side in sides:
        c = side.report["counts"]
        models = ", ".join(side.report.get("models", [])) or "—"
        parts.append(f"<p><strong>{esc(side.name)}</strong>: judge {esc(models)}. Items {c['items']}, "
                     f"labelled {c['labelled']}, decided (labelled, winner A or B) {c['decided']}.</p>")
        if c["labelled"] == 0:
            parts.append('<p class="note">No human labels: agreement statistics are empty '
                         "(join labels with <code>--labels FILE</code>).</p>")
    return "".join(parts)


def _document(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style><script>{LOAD_SCRIPT}</script></head>"
        f"<body>{body}<p class=\"note\">Generated by persona-judge. Statistics as defined in SPEC section 4; "
        "self-contained file, nothing is loaded from elsewhere.</p></body></html>\n"
    )


def _cost(side: Side) -> str:
    from calibration.cost import COST_HEADER, cost_rows

    cost = side.report.get("cost")
    if not cost:
        return ""
    caption = f"<p>{esc(side.name)}</p>" if side.name else ""
    return caption + html_table(COST_HEADER, cost_rows(cost), numeric=range(1, len(COST_HEADER)))


def render_html(
    report: dict[str, Any],
    verdicts: Sequence[Verdict],
    title: str = "persona-judge report",
    name: str = "verdicts",
    other: Side | None = None,
) -> str:
    """The report as one HTML document: summary, reliability diagram, accuracy-coverage curve,
    position-bias chart, per-group table, risk control and the BPDE queue. With `other`, both files
    side by side: one differences table, both judges on each plot, each one's sections in turn."""
    sides = [Side(name=name, path="", verdicts=verdicts, report=report)]
    if other is not None:
        sides.append(other)
    body = [_header(title, sides)]
    body.append(_comparison(compare(sides[0], other)) if other is not None else _summary(report))
    body.append(_plots(sides))
    body.append("<h2>Risk control</h2>" + ("".join(_risk(s) for s in sides) or
                '<p class="note">Not computed; add <code>--target-accuracy T</code> (and <code>--delta</code>).</p>'))
    body.append("<h2>Judge × human</h2>" + "".join(_confusion(s) for s in sides))
    body.extend(_groups(s) for s in sides)
    body.extend(_cascade(s) for s in sides)
    body.append("<h2>Cost</h2>" + "".join(_cost(s) for s in sides))
    body.append("<h2>Send to humans: the BPDE queue</h2>" + "".join(_queue(s) for s in sides))
    return _document(title, "".join(body))
