"""`report.html`: the report with pictures, in one file that opens without a network.

It holds the verdicts with their intervals, the latency CDF and histogram per
configuration, the share above each threshold, latency over time per run (where spikes
show), first request of each user against later ones, and every table of report.md. The
figures are drawn by plotly, whose JavaScript is inlined once in the page head, so the
file is self-contained; every figure is computed from the raw tables, like the rest.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from proxylab import verdicts
from proxylab.results import write_text_atomic

logger = logging.getLogger(__name__)

# Enough points for a smooth curve; the top of the tail is kept point by point.
CDF_MAX_POINTS = 1500
CDF_TAIL_POINTS = 200
HISTOGRAM_BINS = 60
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}

SECTIONS = (
    ("verdicts", "Verdicts"),
    ("cdf", "Latency CDF"),
    ("histogram", "Histogram"),
    ("shares", "Share above thresholds"),
    ("timeline", "Latency over time"),
    ("first-vs-later", "First request vs later requests"),
    ("tables", "Tables"),
)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 1.5em;
       color: #1d1d1f; line-height: 1.45; }
nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ddd;
      padding: .5em 0; z-index: 10; }
nav a { margin-right: 1.2em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0 1.2em; display: block;
        overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; white-space: nowrap; }
th { background: #f4f4f6; }
tr.significant td { background: #fff3e0; }
code { font-size: .95em; }
.warning { color: #8a4b00; }
.note { color: #555; font-size: .9em; }
section { margin-bottom: 2.5em; }
"""

_OUTCOME_WORDS = {
    verdicts.OUTCOME_SIGNIFICANT: "significant",
    verdicts.OUTCOME_BELOW_FLOOR: "real, under the floor",
    verdicts.OUTCOME_UNCONFIRMED: "not after Holm's correction",
    verdicts.OUTCOME_EQUIVALENT: "no difference (within floor)",
    verdicts.OUTCOME_UNDETECTABLE: "no difference detectable",
    verdicts.OUTCOME_UNDEFINED: "not comparable",
}
_OUTCOME_COLOURS = {
    verdicts.OUTCOME_SIGNIFICANT: "#d9480f",
    verdicts.OUTCOME_BELOW_FLOOR: "#e8a33d",
    verdicts.OUTCOME_UNCONFIRMED: "#c9a86a",
    verdicts.OUTCOME_EQUIVALENT: "#2b8a3e",
    verdicts.OUTCOME_UNDETECTABLE: "#868e96",
    verdicts.OUTCOME_UNDEFINED: "#868e96",
}


# --- markdown to HTML (the subset report.md uses) ------------------------------------------


def _inline(text: str) -> str:
    """Escape, then `code` and **bold**: all the inline markup report.md uses."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def markdown_to_html(markdown: str) -> str:
    """Headings, bullet lists, pipe tables and paragraphs; nothing else is needed here.

    Kept small on purpose so the HTML report shows exactly the tables report.md holds,
    without another dependency.
    """
    out: list[str] = []
    block: list[str] = []
    kind = None

    def flush() -> None:
        nonlocal kind
        if kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block) + "</ul>")
        elif kind == "table":
            rows = [row for row in block if not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", row)]
            cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>"
                           for row in cells[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "paragraph":
            out.append(f"<p>{_inline(' '.join(block))}</p>")
        block.clear()
        kind = None

    for line in markdown.splitlines():
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        line_kind = ("list" if line.startswith("- ") else "table" if line.startswith("|")
                     else None if not line.strip() or heading else "paragraph")
        if line_kind != kind:
            flush()
        if heading:
            level = len(heading.group(1))
            out.append(f'<h{level} id="md-{_slug(heading.group(2))}">'
                       f"{_inline(heading.group(2))}</h{level}>")
        elif line_kind == "list":
            block.append(line[2:])
        elif line_kind is not None:
            block.append(line)
        kind = line_kind
    flush()
    return "\n".join(out)


# --- figures -------------------------------------------------------------------------------


def _figure_html(figure: go.Figure, div_id: str) -> str:
    figure.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                          config=FIGURE_CONFIG)


def _pooled_ms(runs: Sequence[verdicts.Run], split: str = "all") -> np.ndarray:
    parts = [run.latency_ms(split) for run in runs]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0)


def _cdf_points(ordered_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points of the empirical CDF, thinned in the body and complete in the far tail."""
    n = ordered_ms.size
    if n <= CDF_MAX_POINTS:
        ranks = np.arange(n)
    else:
        ranks = np.unique(np.concatenate([
            np.linspace(0, n - 1, CDF_MAX_POINTS).astype(int), np.arange(n - CDF_TAIL_POINTS, n)]))
    return ordered_ms[ranks] / 1000.0, (ranks + 1) / n


def cdf_figure(groups: dict[str, list[verdicts.Run]], split: str) -> go.Figure:
    figure = go.Figure()
    for label, runs in groups.items():
        x, y = _cdf_points(_pooled_ms(runs, split))
        figure.add_trace(go.Scatter(x=x, y=100 * y, mode="lines", name=label,
                                    hovertemplate="%{x:.3f} s: %{y:.2f} %<extra>" + label
                                    + "</extra>"))
    figure.update_layout(title="Share of successful requests at or below a latency "
                               "(all runs of a configuration pooled)",
                         xaxis={"type": "log", "title": "latency s (log)"},
                         yaxis={"title": "% of requests", "range": [0, 100.5]}, height=480)
    return figure


def histogram_figure(groups: dict[str, list[verdicts.Run]], split: str) -> go.Figure:
    """Latency histograms on log-spaced bins, as % of each configuration's requests."""
    pooled = {label: _pooled_ms(runs, split) for label, runs in groups.items()}
    positive = [values[values > 0] for values in pooled.values() if values.size]
    figure = go.Figure()
    if positive and any(part.size for part in positive):
        everything = np.concatenate(positive)
        low, high = everything.min(), everything.max()
        top = high * 1.0001 if high > low else low * 1.01
        edges_ms = np.geomspace(low, top, HISTOGRAM_BINS + 1)
        for label, values in pooled.items():
            counts, _ = np.histogram(values, bins=edges_ms)
            percent = 100.0 * counts / max(1, values.size)
            # A step line per configuration stays readable where bars would overlap.
            figure.add_trace(go.Scatter(x=edges_ms / 1000.0, y=np.append(percent, percent[-1]),
                                        mode="lines", line_shape="hv", name=label))
    figure.update_layout(title="Latency histogram (log-spaced bins, all runs pooled)",
                         xaxis={"type": "log", "title": "latency s (log)"},
                         yaxis={"title": "% of requests per bin"}, height=420)
    return figure


def shares_figure(groups: dict[str, list[verdicts.Run]], options: verdicts.VerdictOptions
                  ) -> go.Figure:
    """Share above each threshold per configuration, pooled, with Wilson intervals."""
    figure = go.Figure()
    labels = [f">{threshold:g} s" for threshold in options.thresholds_s]
    for label, runs in groups.items():
        values = _pooled_ms(runs, options.split)
        n = values.size
        percent, lower, upper = [], [], []
        for threshold_s in options.thresholds_s:
            count = int(np.count_nonzero(values > threshold_s * 1000.0))
            low, high = verdicts.wilson_interval(count, n, options.confidence)
            share = 100.0 * count / n if n else math.nan
            percent.append(share)
            lower.append(share - 100.0 * low if low is not None else 0.0)
            upper.append(100.0 * high - share if high is not None else 0.0)
        figure.add_trace(go.Bar(x=labels, y=percent, name=label,
                                error_y={"type": "data", "symmetric": False, "array": upper,
                                         "arrayminus": lower}))
    figure.update_layout(title=f"Share of successful requests above each threshold "
                               f"({100 * options.confidence:g} % Wilson intervals, runs pooled)",
                         barmode="group", yaxis={"title": "% of requests"}, height=420)
    return figure


def timeline_figure(label: str, runs: Sequence[verdicts.Run]) -> go.Figure:
    """Each request's latency at its send time, one trace per run; failures as crosses."""
    # TODO: every point is drawn (about 30 bytes each in the page); a matrix of tens of
    # thousands of requests per configuration would want thinning that keeps the spikes.
    figure = go.Figure()
    by_time = True
    for run in runs:
        frame = run.frame
        sent = frame["sent_unix_s"].to_numpy(dtype=np.float64)
        if sent.size and np.all(np.isfinite(sent)):
            x = sent - sent.min()
        else:
            by_time = False  # imported logs may have no send times: use the order instead
            x = np.arange(1, len(frame) + 1, dtype=np.float64)
        ok = frame["ok"].to_numpy() == 1
        latency_s = frame["latency_ms"].to_numpy(dtype=np.float64) / 1000.0
        figure.add_trace(go.Scatter(x=np.round(x[ok], 3), y=np.round(latency_s[ok], 4),
                                    mode="markers", marker={"size": 3}, name=f"r{run.repeat}",
                                    hovertemplate="%{y:.3f} s at %{x:.2f}<extra>" + run.cell_id
                                    + "</extra>"))
        failed = ~ok & np.isfinite(latency_s)
        if failed.any():
            figure.add_trace(go.Scatter(x=x[failed], y=latency_s[failed], mode="markers",
                                        marker={"symbol": "x", "size": 6, "color": "#c92a2a"},
                                        name=f"r{run.repeat} failed"))
    figure.update_layout(title=f"{label}: latency of each request over the run",
                         xaxis={"title": "s since the run's first request" if by_time
                                else "request number (no send times recorded)"},
                         yaxis={"title": "latency s"}, height=360)
    return figure


def first_vs_later_figure(groups: dict[str, list[verdicts.Run]]) -> go.Figure:
    """p50 and p95 of each user's first request against later ones, mean over runs."""
    statistics = ["p50_ms", "p95_ms"]
    figure = go.Figure()
    labels = list(groups)
    for split, title in (("first_request", "first request"), ("later_requests", "later")):
        for statistic in statistics:
            means, spreads = [], []
            for runs in groups.values():
                values = [verdicts.statistics_matrix(run.latency_ms(split), [statistic])[0, 0]
                          for run in runs if run.latency_ms(split).size]
                means.append(float(np.mean(values)) / 1000.0 if values else math.nan)
                spreads.append(float(np.std(values, ddof=1)) / 1000.0 if len(values) > 1 else 0.0)
            figure.add_trace(go.Bar(x=labels, y=means, name=f"{title} {statistic[:3]}",
                                    error_y={"type": "data", "array": spreads},
                                    opacity=0.6 if split == "first_request" else 1.0))
    figure.update_layout(title="Each simulated user's first request against its later ones "
                               "(mean over runs; bars: standard deviation over runs)",
                         barmode="group", yaxis={"title": "latency s"}, height=440)
    return figure


def forest_figure(comparisons: Sequence[verdicts.Comparison], options: verdicts.VerdictOptions
                  ) -> go.Figure:
    """Every latency verdict as a point with its interval, the practical floor shaded."""
    figure = go.Figure()
    rows = [(comparison, verdict) for comparison in comparisons
            for verdict in comparison.verdicts if not verdicts.is_share(verdict.statistic)]
    for outcome, colour in _OUTCOME_COLOURS.items():
        chosen = [(c, v) for c, v in rows if v.outcome == outcome and math.isfinite(v.ci_low)]
        if not chosen:
            continue
        figure.add_trace(go.Scatter(
            x=[v.effect for _, v in chosen],
            y=[f"{c.label} · {verdicts.statistic_title(v.statistic)}" for c, v in chosen],
            mode="markers", marker={"color": colour, "size": 9}, name=_OUTCOME_WORDS[outcome],
            error_x={"type": "data", "symmetric": False,
                     "array": [v.ci_high - v.effect for _, v in chosen],
                     "arrayminus": [v.effect - v.ci_low for _, v in chosen]},
            hovertext=[v.text for _, v in chosen], hoverinfo="text"))
    floor = options.floor_percent
    figure.add_vrect(x0=-floor, x1=floor, fillcolor="#adb5bd", opacity=0.2, line_width=0)
    figure.add_vline(x=0, line_color="#495057", line_width=1)
    labels = list(dict.fromkeys(f"{c.label} · {verdicts.statistic_title(v.statistic)}"
                                for c, v in rows))
    figure.update_layout(
        title=f"Change of each statistic, candidate against baseline "
              f"({100 * options.confidence:g} % intervals; grey: ±{floor:g} % practical floor)",
        xaxis={"title": "change %", "zeroline": False},
        yaxis={"autorange": "reversed", "categoryorder": "array", "categoryarray": labels},
        height=max(300, 60 + 24 * len(labels)))
    return figure


# --- page ----------------------------------------------------------------------------------


def _verdict_table(comparisons: Sequence[verdicts.Comparison]) -> str:
    head = ("<tr><th>comparison</th><th>statistic</th><th>baseline</th><th>candidate</th>"
            "<th>change</th><th>interval</th><th>verdict</th><th>smallest detectable</th>"
            "<th>rank test p</th></tr>")
    body = []
    for comparison in comparisons:
        for verdict in comparison.verdicts:
            unit = verdict.unit
            interval = (f"{verdicts.format_effect(verdict.ci_low, unit)} … "
                        f"{verdicts.format_effect(verdict.ci_high, unit)}")
            mde = "–" if verdict.mde is None else f"±{abs(verdict.mde):.1f} {unit}"
            rank = "–" if verdict.rank_p is None else f"{verdict.rank_p:.3f}"
            weaker = (" (weaker: one run, request blocks resampled)"
                      if verdict.method == verdicts.METHOD_REQUESTS else "")
            css = ' class="significant"' if verdict.significant else ""
            body.append(
                f"<tr{css}><td>{html.escape(comparison.label)}</td>"
                f"<td>{verdicts.statistic_title(verdict.statistic)}</td>"
                f"<td>{verdicts.format_value(verdict.statistic, verdict.baseline_mean)}</td>"
                f"<td>{verdicts.format_value(verdict.statistic, verdict.candidate_mean)}</td>"
                f"<td>{verdicts.format_effect(verdict.effect, unit)}</td><td>{interval}</td>"
                f"<td>{_OUTCOME_WORDS[verdict.outcome]}{weaker}</td><td>{mde}</td>"
                f"<td>{rank}</td></tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _warning_list(assessment: verdicts.Assessment) -> str:
    seen = dict.fromkeys(str(warning) for comparison in assessment.comparisons
                         for warning in comparison.warnings)
    seen.update(dict.fromkeys(str(warning) for warning in assessment.warnings))
    if not seen:
        return "<p>No stability warning.</p>"
    return ("<ul>" + "".join(f'<li class="warning">{html.escape(text)}</li>' for text in seen)
            + "</ul>")


def render_html(title: str, markdown: str, assessment: verdicts.Assessment) -> str:
    """The whole page: verdicts, figures, then report.md's tables; plotly.js inlined once."""
    options = assessment.options
    groups = assessment.groups
    parts = [f"<h1>{html.escape(title)}</h1>",
             ('<p class="note">Every figure is computed from the raw per-request tables; '
             "latencies cover successful requests. Hover for values, drag to zoom, "
             "double-click to reset.</p>")]

    parts.append('<section id="verdicts"><h2>Verdicts</h2>')
    if assessment.comparisons:
        parts += [_figure_html(forest_figure(assessment.comparisons, options), "figure-forest"),
                  _verdict_table(assessment.comparisons)]
    else:
        parts.append("<p>No two configurations to compare.</p>")
    parts += ["<h3>Stability warnings</h3>", _warning_list(assessment), "</section>"]

    parts += ['<section id="cdf"><h2>Latency CDF</h2>',
              _figure_html(cdf_figure(groups, options.split), "figure-cdf"), "</section>",
              '<section id="histogram"><h2>Histogram</h2>',
              _figure_html(histogram_figure(groups, options.split), "figure-histogram"),
              "</section>",
              '<section id="shares"><h2>Share above thresholds</h2>',
              _figure_html(shares_figure(groups, options), "figure-shares"), "</section>",
              '<section id="timeline"><h2>Latency over time</h2>']
    for index, (label, runs) in enumerate(groups.items()):
        parts.append(_figure_html(timeline_figure(label, runs), f"figure-timeline-{index}"))
    parts += ["</section>", '<section id="first-vs-later"><h2>First request vs later requests</h2>',
              _figure_html(first_vs_later_figure(groups), "figure-first-vs-later"), "</section>",
              '<section id="tables"><h2>Tables</h2>', markdown_to_html(markdown), "</section>"]

    nav = "".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>"
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
            f"<body><nav>{nav}</nav>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_html(run_dir: Path, summary: dict, options: verdicts.VerdictOptions | None = None
               ) -> Path:
    """Rebuild report.html of a result directory from its saved results alone."""
    from proxylab import report

    assessment = verdicts.assess_run_dir(run_dir, summary, options)
    markdown = report.render_markdown(summary, verdicts.markdown_section(assessment))
    path = run_dir / "report.html"
    write_text_atomic(path, render_html(f"proxylab report {summary['run_id']}", markdown,
                                        assessment))
    logger.info("wrote %s", path)
    return path
