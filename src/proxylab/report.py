"""`report.md`: the tables an investigation pastes, rebuilt from `summary.json` alone.

Latencies are shown in seconds with three decimals, as in the original investigation's
logs; every figure is taken from the cell's statistics, which come from its raw table.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from proxylab import attribution_report
from proxylab.results import write_text_atomic

if TYPE_CHECKING:
    from proxylab.verdicts import VerdictOptions

logger = logging.getLogger(__name__)

SPLITS = (
    ("all", "All requests"),
    ("first_request", "First request of each simulated user"),
    ("later_requests", "Later requests of each simulated user"),
)


def seconds(value_ms: float | None) -> str:
    return "–" if value_ms is None else f"{value_ms / 1000:.3f}"


def share(count: int, percent: float | None) -> str:
    return "–" if percent is None else f"{count} ({percent:.1f}%)"


def _table(cells: list[dict], split: str) -> list[str]:
    if not cells:
        return ["No finished cell yet."]
    thresholds = [entry["threshold_s"] for entry in cells[0]["statistics"][split]["above"]]
    header = ["configuration", "repeat", "requests", "failures", "rps", "avg s", "p50 s", "p95 s",
              "p99 s", "max s"] + [f">{threshold:g}s" for threshold in thresholds]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        figures = cell["statistics"][split]
        rps = "–" if figures["rps"] is None else f"{figures['rps']:.1f}"
        row = [f"`{cell['config_id']}`", str(cell["repeat"]), str(figures["requests"]),
               str(figures["failed"]), rps, seconds(figures["avg_ms"]), seconds(figures["p50_ms"]),
               seconds(figures["p95_ms"]), seconds(figures["p99_ms"]), seconds(figures["max_ms"])]
        row += [share(entry["count"], entry["percent"]) for entry in figures["above"]]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _provenance_lines(summary: dict) -> list[str]:
    """Where the figures come from: the stack and load of a matrix, or the imported files."""
    meta = summary.get("metadata", {})
    if summary.get("runtime") == "import":
        return [f"- **Imported from:** {', '.join(f'`{path}`' for path in meta.get('sources', []))}"]
    versions = meta.get("versions", {})
    machine = meta.get("machine", {})
    git = meta.get("git", {})
    plan = summary.get("plan", {})
    releases = summary.get("proxy_releases") or {}
    # What each configuration ran; the stack's own version is only the pinned release's (and
    # all that results of older versions of the lab recorded).
    litellm = (", ".join(str(entry["installed"]) for entry in releases.values()) if releases
               else versions.get("litellm"))
    if len(releases) > 1:
        litellm += " (one configuration each)"
    return [
        f"- **Runtime:** {summary.get('runtime')}; LiteLLM {litellm}, "
        f"Locust {versions.get('locust')}, PostgreSQL {versions.get('postgres')}, "
        f"Redis {versions.get('redis')}, toxiproxy {versions.get('toxiproxy')}, "
        f"Prometheus {versions.get('prometheus')}",
        f"- **Machine:** {machine.get('cpu_count')} CPUs ({machine.get('cpu_model')}), "
        f"{(machine.get('memory_bytes') or 0) / 2**30:.0f} GiB; git {str(git.get('commit'))[:12]}"
        f"{' (dirty)' if git.get('dirty') else ''}",
        f"- **Load per cell:** {plan.get('requests')} requests from {plan.get('users')} simulated "
        f"users, no think time; {plan.get('repeats')} repeat(s) per configuration",
        f"- **Warm-up:** {plan.get('warmup_requests')} requests after each proxy start, sent and "
        f"excluded from every figure",
        *_release_lines(summary.get("proxy_releases") or {}),
    ]


def _release_lines(releases: dict) -> list[str]:
    """One line per LiteLLM release of the matrix: what ran, and how its config was adapted."""
    if len(releases) < 2 and not any(entry["adaptations"] for entry in releases.values()):
        return []
    lines = []
    for version, entry in releases.items():
        adapted = "; ".join(entry["adaptations"]) or "shared config unchanged"
        lines.append(f"- **LiteLLM {version}:** installed {entry['installed']}; {adapted}")
    return lines


def _state_lines(summary: dict) -> list[str]:
    """How cells were kept apart: proxy starts, state reset, what was made in the database."""
    cells = [cell for cell in summary.get("cells", []) if "proxy_start" in cell]
    if not cells:
        return []  # imported logs and results of older versions of the lab say nothing
    starts = len({cell["proxy_start"] for cell in cells})
    reset = cells[-1].get("state_reset") or {}
    database = reset.get("database")
    if isinstance(database, str) and database.startswith("no DB"):
        database = "none (no DB, see above)"
    elif isinstance(database, dict):
        database = (f"{len(database['truncated'])} tables emptied, spend zeroed, "
                    f"{database['end_users_removed']} end users removed")
    lines = [f"- **Isolation:** {starts} proxy starts for {len(cells)} cells; before each cell "
             f"Redis {reset.get('redis', '–')}, database: {database or '–'}"]
    made = summary.get("provisioned") or {}
    if made.get("end_users") or made.get("keys"):
        lines.append(f"- **Made before the first cell:** {made['end_users']} end users, "
                     f"{made['keys']} virtual keys ({made['seconds']} s)")
    return lines


def render_markdown(summary: dict, verdict_lines: list[str] | None = None) -> str:
    """The whole report; ``verdict_lines`` (verdicts.markdown_section) go before the tables."""
    cells = summary.get("cells", [])
    database = summary.get("database") or {}
    lines = [
        f"# proxylab report `{summary['run_id']}`",
        "",
        f"- **Status:** {summary['status']}, {len(cells)} of {len(summary.get('order', []))} cells "
        f"finished; started {summary['started_at']}, finished {summary.get('finished_at') or '–'}",
        f"- **Proxy database:** {database.get('reason', 'unknown')}",
        *_state_lines(summary),
        *_provenance_lines(summary),
        "- **Figures:** exact, from each cell's per-request table (`cells/*/raw.csv`); Locust's "
        "own bucketed percentiles are not used. Shares above a threshold count successful "
        "requests strictly slower than it.",
        "",
        *(verdict_lines or []),
    ]
    for split, title in SPLITS:
        lines += [f"## {title}", "", *_table(cells, split), ""]
    measured = [cell for cell in cells if "wall_s" in cell]  # imported cells have no such figures
    if measured:
        lines += ["## Cells", "", "| cell | generator CPU % | proxy CPU ms/request | "
                  "proxy peak RSS MiB | wall s |", "|---|---|---|---|---|"]
    for cell in measured:
        rss = cell.get("proxy_peak_rss_bytes")
        cpu = cell.get("proxy_cpu_ms_per_request")
        lines.append(f"| `{cell['cell_id']}` | {cell['generator_cpu_percent']:.0f} | "
                     f"{'–' if cpu is None else f'{cpu:.1f}'} | "
                     f"{'–' if rss is None else f'{rss / 2**20:.0f}'} | {cell['wall_s']:.1f} |")
    warnings = [(cell["cell_id"], text) for cell in cells for text in cell.get("warnings", [])]
    lines += attribution_report.markdown_sections(summary)
    lines += ["", "## Cell warnings", ""]
    lines += [f"- `{identifier}`: {text}" for identifier, text in warnings] or [
        "None for the cells themselves; the verdicts above carry their own warnings."]
    return "\n".join(lines) + "\n"


def write_markdown(run_dir: Path, summary: dict, verdict_options: VerdictOptions | None = None,
                   verdicts_while_running: bool = False) -> Path:
    path = run_dir / "report.md"
    write_text_atomic(path, render_markdown(summary, verdict_section(
        run_dir, summary, verdict_options, verdicts_while_running)))
    return path


def verdict_section(run_dir: Path, summary: dict, options: VerdictOptions | None = None,
                    while_running: bool = False) -> list[str]:
    """The verdicts section, or a line saying why it is missing.

    Verdicts wait for the matrix to end unless ``while_running``: judging half a matrix
    after every cell would cost time between cells and show verdicts that change as cells
    arrive. (`proxylab report` passes it, for a matrix killed before it could say it ended.)
    """
    if summary.get("status") == "running" and not while_running:
        return ["## Verdicts", "", "Computed when the matrix ends, or by `proxylab report`.", ""]
    from proxylab import verdicts  # scipy is slow to import; only reports need it

    try:
        return verdicts.markdown_section(verdicts.assess_run_dir(run_dir, summary, options))
    except Exception:
        # The matrix writes this report in its cleanup: a failure here must not hide the
        # run's own outcome or lose its figures; `proxylab report` can rebuild it.
        logger.exception("verdicts of %s could not be computed", run_dir)
        reason = "Could not be computed (see the log); `proxylab report` rebuilds them."
        return ["## Verdicts", "", reason, ""]
