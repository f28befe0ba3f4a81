"""report.html and report.md's verdicts, rebuilt from a synthetic result directory."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import synthetic
from conftest import run_cli

from proxylab import html_report, report, results

SECTION_IDS = ("verdicts", "cdf", "histogram", "shares", "timeline", "first-vs-later", "tables")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Callbacks off/on x 3 repeats of 400 requests; "on" is 30 % slower, 3 failures each."""
    rng = np.random.default_rng(101)
    cells = [(f"callbacks-{'on' if on else 'off'}.user-none",
              {"callbacks": on, "user_mode": "none", "key_mode": "shared"}, repeat,
              synthetic.latencies(rng, 400, scale=1.3 if on else 1.0, median_ms=700, sigma=0.6))
             for on in (False, True) for repeat in (1, 2, 3)]
    path = tmp_path_factory.mktemp("results") / "synthetic-run"
    synthetic.write_result_dir(path, cells, failed=3)
    return path


@pytest.fixture(scope="module")
def page(run_dir: Path) -> str:
    return html_report.write_html(run_dir, results.load_summary(run_dir)).read_text()


def test_html_is_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    scripts_with_src = re.findall(r"<script\b[^>]*\bsrc\s*=", page, flags=re.IGNORECASE)
    assert scripts_with_src == []
    assert not re.search(r"<link\b[^>]*\bhref\s*=\s*[\"']https?:", page, flags=re.IGNORECASE)
    # plotly.js itself is inlined: its bundle announces its version near the top.
    assert re.search(r"plotly\.js v\d+\.\d+\.\d+", page)
    assert page.count("Plotly.newPlot") >= 7


def test_html_has_every_section_and_figure(page: str) -> None:
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page, section
    for figure in ("figure-forest", "figure-cdf", "figure-histogram", "figure-shares",
                   "figure-timeline-0", "figure-timeline-1", "figure-first-vs-later"):
        assert f'id="{figure}"' in page, figure
    assert '"type":"log"' in page  # the CDF's and histogram's latency axes


def test_html_shows_the_verdicts_and_report_md_tables(page: str) -> None:
    assert "callbacks on vs off" in page
    assert 'class="significant"' in page  # a 30 % slowdown over 3+3 runs is found
    assert "cannot reach significance" in page  # and the 3-run limit is said
    for heading in ("All requests", "First request of each simulated user",
                    "Later requests of each simulated user", "Spread over runs",
                    "Within-run intervals"):
        assert f">{heading}</h2>" in page or f">{heading}</h3>" in page, heading
    assert "3 requests failed" in page or "requests failed" in page


def test_report_md_has_the_verdict_section(run_dir: Path) -> None:
    summary = results.load_summary(run_dir)
    text = report.write_markdown(run_dir, summary).read_text()

    assert "## Verdicts" in text
    assert text.index("## Verdicts") < text.index("## All requests")
    assert re.search(r"\*\*p95 .* s → .* s: \+\d+ % \(95 % CI \+\d+(\.\d)? … \+\d+ %\), "
                     r"significant", text), text


def test_report_md_leaves_verdicts_for_later_while_running(run_dir: Path) -> None:
    summary = {**results.load_summary(run_dir), "status": "running"}
    lines = report.verdict_section(run_dir, summary)
    assert "Computed when the matrix ends" in " ".join(lines)
    forced = report.verdict_section(run_dir, summary, while_running=True)
    assert any(line.startswith("### callbacks on vs off") for line in forced)


def test_markdown_subset_becomes_html() -> None:
    converted = html_report.markdown_to_html(
        "# Title `x<y>`\n\n- **bold** item\n- second\n\n| a | b |\n|---|---|\n| 1 | `c` |\n\n"
        "plain text\nwraps")
    assert '<h1 id="md-title-x-y">Title <code>x&lt;y&gt;</code></h1>' in converted
    assert "<ul><li><strong>bold</strong> item</li><li>second</li></ul>" in converted
    assert ("<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td>"
            "<td><code>c</code></td></tr></tbody></table>") in converted
    assert "<p>plain text wraps</p>" in converted


def test_cli_report_writes_both_files(run_dir: Path, lab_env: dict) -> None:
    (run_dir / "report.html").unlink(missing_ok=True)
    completed = run_cli(["report", str(run_dir)], lab_env, timeout_s=300)
    assert completed.returncode == 0, completed.stderr
    assert str(run_dir / "report.md") in completed.stdout
    assert (run_dir / "report.html").stat().st_size > 1_000_000  # plotly.js inside


def test_cli_report_bad_floor_is_one_line(run_dir: Path, lab_env: dict) -> None:
    # (A missing directory is covered by test_cli_input.)
    completed = run_cli(["report", str(run_dir), "--floor-percent", "-1"], lab_env,
                        timeout_s=120)
    assert completed.returncode == 2, completed
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "floors cannot be negative" in lines[0], completed.stderr
