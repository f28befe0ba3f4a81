"""The verdict machinery on the real native stack: a known injected change and an A/A matrix.

Provider latency is set with toxiproxy on the proxy->LLM hop: 200 ms against 230 ms (15 %
more). The true change of the client-measured average is then 30 ms over the baseline's own
average; the verdict must call it significant, and its interval must cover that value. The
coverage is checked on the 99 % interval: a 95 % one misses the truth in one matrix of twenty
by design, and more often here, where 5 bimodal proxy starts per side make the spread lumpy
(seen once: +8.9 … +11.8 % against a true +12.2 %).

The A/A matrix runs one configuration as two replicas, six repeats each, every repeat on its
own proxy start, interleaved: replica 2 against replica 1 must show no difference. Starts of
LiteLLM 1.108.7 here are bimodal (about 28 or 42 ms of overhead per request, fixed for the
life of a process, so a run's average sits near one of two levels ~9 % apart). With 6 + 6
starts, one side drawing at least 4 more slow starts than the other, which is what it takes
to cross the 5 % floor, happens in about 4 % of A/A matrices: this test can fail that often
without a defect.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from proxylab import calibrate, verdicts

pytestmark = pytest.mark.stack

BASE_MS, CANDIDATE_MS = 200, 230
# Two users: requests hardly queue in the proxy, so the toxic's extra time shows in full.
SMALL_CELLS = ["--callbacks", "off", "--user-mode", "none", "--requests", "80", "--users", "2",
               "--warmup", "10", "--order", "abba"]


def _matrix(lab_env: dict[str, str], run_id: str, args: list[str]) -> Path:
    completed = run_cli(["matrix", *SMALL_CELLS, *args, "--run-id", run_id], lab_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(lab_env["PROXYLAB_RESULTS_DIR"]) / run_id


@pytest.fixture(scope="module")
def injected_run(lab_env: dict[str, str]) -> Path:
    return _matrix(lab_env, "verdicts-live", ["--llm-latency-ms", f"{BASE_MS},{CANDIDATE_MS}",
                                              "--repeats", "5"])


@pytest.fixture(scope="module")
def a_over_a_run(lab_env: dict[str, str]) -> Path:
    return _matrix(lab_env, "verdicts-a-over-a", ["--llm-latency-ms", str(BASE_MS),
                                                  "--replicas", "2", "--repeats", "6"])


def _assessment(run_dir: Path, options: verdicts.VerdictOptions | None = None
                ) -> verdicts.Assessment:
    return verdicts.assess_run_dir(run_dir, json.loads((run_dir / "summary.json").read_text()),
                                   options)


def test_injected_provider_latency_is_detected_with_an_interval_covering_it(
        injected_run: Path, measured) -> None:
    (comparison,) = [c for c in _assessment(injected_run).comparisons if c.axis == "llm_latency_ms"]
    average = comparison.verdict("avg_ms")
    true_effect_percent = 100 * (CANDIDATE_MS - BASE_MS) / average.baseline_mean

    measured(f"avg {average.baseline_mean:.1f} -> {average.candidate_mean:.1f} ms: "
             f"{average.effect:+.1f} % (CI {average.ci_low:+.1f} .. {average.ci_high:+.1f} %), "
             f"true {true_effect_percent:+.1f} %")
    assert average.significant, average.text
    (wide,) = [c for c in _assessment(injected_run, verdicts.VerdictOptions(confidence=0.99)
                                      ).comparisons if c.axis == "llm_latency_ms"]
    wide_average = wide.verdict("avg_ms")
    measured(f"avg, 99 % CI {wide_average.ci_low:+.1f} .. {wide_average.ci_high:+.1f} %")
    assert wide_average.ci_low <= true_effect_percent <= wide_average.ci_high, wide_average.text


def test_every_repeat_has_its_own_proxy_start(injected_run: Path) -> None:
    cells = json.loads((injected_run / "summary.json").read_text())["cells"]
    assert len({cell["proxy_start"] for cell in cells}) == len(cells) == 10
    assert all(cell["state_reset"]["redis"] == "flushed" for cell in cells)
    assert all(cell["state_reset"]["database"].startswith("no DB") for cell in cells)
    report = (injected_run / "report.md").read_text()
    assert "- **Isolation:** 10 proxy starts for 10 cells; before each cell Redis flushed, " \
           "database: none (no DB, see above)" in report


def test_a_over_a_matrix_shows_no_difference_and_prints_the_noise_floor(
        a_over_a_run: Path, measured) -> None:
    (comparison,) = [c for c in _assessment(a_over_a_run).comparisons if c.axis == "replica"]
    floor = calibrate.calibrate(verdicts.load_runs(a_over_a_run), options=verdicts.VerdictOptions(),
                                source=a_over_a_run.name)

    measured(calibrate.render_text(floor))
    for verdict in comparison.verdicts:
        measured(f"{comparison.label}: {verdict.text}")
    measured(f"{comparison.label}: shares zero in every run of both (nothing to judge): "
             f"{', '.join(comparison.quiet_shares) or 'none'}")
    # Every statistic the report gives, p99 and the shares too: Holm's correction keeps each
    # family's false-alarm rate at 5 % however many there are. A share that is zero in every
    # run of both replicas is reported as such rather than judged.
    judged = {verdict.statistic for verdict in comparison.verdicts}
    assert judged | set(comparison.quiet_shares) == set(verdicts.VerdictOptions().statistics)
    assert all(verdicts.is_share(statistic) for statistic in comparison.quiet_shares)
    significant = [verdict.text for verdict in comparison.verdicts if verdict.significant]
    assert not significant, significant
    assert not any("proxy start" in str(warning) for warning in comparison.warnings)
    assert "replica 2 vs 1" in (a_over_a_run / "report.md").read_text()
