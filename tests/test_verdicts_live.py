"""The verdict machinery on the real native stack: an A/A pair and a known injected change.

Provider latency is set with toxiproxy on the proxy->LLM hop: 200 ms against 230 ms (15 %
more). The true change of the client-measured average is then 30 ms over the baseline's own
average; the verdict must call it significant and its interval must cover that value. Every
configuration also runs as two replicas, each with its own proxy start: replica 2 against
replica 1 is an A/A matrix through the whole pipeline and must show no difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from proxylab import calibrate, verdicts

pytestmark = pytest.mark.stack

BASE_MS, CANDIDATE_MS = 200, 230


@pytest.fixture(scope="module")
def injected_run(lab_env: dict[str, str]) -> Path:
    # Two users: requests hardly queue in the proxy, so the toxic's extra time shows in full.
    # Interleaved: every cell gets its own proxy start, so the runs carry the differences
    # between proxy processes (grouped, replica 2 once came out 6 % faster than replica 1).
    completed = run_cli(["matrix", "--callbacks", "off", "--user-mode", "none", "--llm-latency-ms",
                         f"{BASE_MS},{CANDIDATE_MS}", "--repeats", "4", "--requests", "80", "--users",
                         "2", "--warmup", "10", "--replicas", "2", "--order", "abba",
                         "--run-id", "verdicts-live"], lab_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "verdicts-live"


def test_injected_provider_latency_is_detected_with_an_interval_covering_it(injected_run: Path) -> None:
    summary = json.loads((injected_run / "summary.json").read_text())
    assessment = verdicts.assess_run_dir(injected_run, summary)
    comparisons = [c for c in assessment.comparisons if c.axis == "llm_latency_ms"]
    assert len(comparisons) == 2  # one per replica
    for comparison in comparisons:
        average = comparison.verdict("avg_ms")
        true_effect_percent = 100 * (CANDIDATE_MS - BASE_MS) / average.baseline_mean
        print(f"{comparison.label}: avg {average.baseline_mean:.1f} -> "
              f"{average.candidate_mean:.1f} ms: {average.effect:+.1f} % "
              f"(CI {average.ci_low:+.1f} .. {average.ci_high:+.1f} %), true {true_effect_percent:+.1f} %")
        assert average.significant, average.text
        assert average.ci_low <= true_effect_percent <= average.ci_high, average.text


def test_a_over_a_matrix_shows_no_difference_and_prints_the_noise_floor(injected_run: Path) -> None:
    summary = json.loads((injected_run / "summary.json").read_text())
    assessment = verdicts.assess_run_dir(injected_run, summary)
    replica_comparisons = [c for c in assessment.comparisons if c.axis == "replica"]
    assert len(replica_comparisons) == 2  # one per provider latency
    runs = verdicts.load_runs(injected_run)
    floor = calibrate.calibrate(runs, options=verdicts.VerdictOptions(), source="verdicts-live")

    print(calibrate.render_text(floor))
    for comparison in replica_comparisons:
        for statistic in ("avg_ms", "p50_ms", "p95_ms"):
            verdict = comparison.verdict(statistic)
            print(f"{comparison.label}: {verdict.text}")
            assert not verdict.significant, verdict.text
    assert "replica" in (injected_run / "report.md").read_text()
