"""Attribution and faults through the LiteLLM proxy: matrices on the real native stack.

Each matrix starts the proxy once per configuration (about a minute each on two cores), so
these tests are marked `stack`. Loads are small; timing assertions state their tolerance and
print what they measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from lab500 import cli_env, make_home, stop_and_remove
from proxylab import attribution_report
from proxylab.rawlog import read_raw

pytestmark = pytest.mark.stack

REDIS_LATENCY_MS = 40
USERS = 2
# Round trips implied by the toxic come from two means of 120 requests on a shared two-core
# machine: about +-0.5 round trip of noise at 40 ms per round trip.
ROUND_TRIPS_NOISE = 0.5
# The toxic adds waiting, not work: the proxy's Redis commands per request stay within 15 %.
COMMANDS_STABLE_SHARE = 0.15

STREAM_TTFT_MS = 200
STREAM_TOKENS = 10
STREAM_DELAY_MS = 20
# Through the proxy the first token also pays the proxy's own time per request: up to 250 ms
# on a busy two-core machine. The pacing after it is the mock's: (k - 1) x d, +-25 % or 40 ms.
PROXY_SLACK_MS = 250


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, str]]:
    home = make_home()
    try:
        yield cli_env(home)
    finally:
        stop_and_remove(home)


def _run(lab: dict[str, str], run_id: str, args: list[str], extra_env: dict | None = None) -> dict:
    completed = run_cli(["matrix", *args, "--run-id", run_id], {**lab, **(extra_env or {})},
                        timeout_s=1500)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = Path(lab["PROXYLAB_RESULTS_DIR"]) / run_id
    return json.loads((run_dir / "summary.json").read_text())


@pytest.fixture(scope="module")
def redis_matrix(lab: dict[str, str]) -> dict:
    """Callbacks on, no faults vs a latency toxic on the proxy->Redis hop."""
    return _run(lab, "redis-toxic", [
        "--callbacks", "on", "--user-mode", "none", "--toxic", "none",
        "--toxic", f"redis:latency={REDIS_LATENCY_MS}", "--requests", "120", "--users", str(USERS),
        "--warmup", "10"])


def test_redis_toxic_adds_latency_per_round_trip_within_the_commands_counted(
        redis_matrix: dict, lab: dict[str, str]) -> None:
    cells = {cell["config"]["toxics"]: cell for cell in redis_matrix["cells"]}
    base, slow = cells["none"], cells[f"redis:latency={REDIS_LATENCY_MS}"]
    commands = {name: cell["attribution"]["redis"]["commands_per_request"]
                for name, cell in cells.items()}
    (row,) = attribution_report.critical_path(redis_matrix["cells"])
    measured = (f"mean {row['baseline_ms']:.1f} -> {row['mean_ms']:.1f} ms (+{row['added_ms']:.1f}) "
                f"with {REDIS_LATENCY_MS} ms per Redis round trip: {row['round_trips']:.2f} "
                f"sequential round trips per request; Redis commands per request {commands}; "
                f"by command {slow['attribution']['redis']['by_command']}")
    print(measured)

    # The commands come from Redis itself, the round trips from the clock: a request cannot
    # wait for more round trips than the commands it caused.
    assert all(value and value > 0 for value in commands.values()), measured
    assert abs(commands["none"] - commands[f"redis:latency={REDIS_LATENCY_MS}"]) <= (
        COMMANDS_STABLE_SHARE * commands["none"]), measured
    assert -ROUND_TRIPS_NOISE <= row["round_trips"] <= commands["none"] + ROUND_TRIPS_NOISE, measured
    # The figure is the raw tables' means, recomputed here.
    run_dir = Path(lab["PROXYLAB_RESULTS_DIR"]) / "redis-toxic"
    means = {name: read_raw(run_dir / cell["raw_table"]).query("ok == 1")["latency_ms"].mean()
             for name, cell in cells.items()}
    recomputed = (means[f"redis:latency={REDIS_LATENCY_MS}"] - means["none"]) / REDIS_LATENCY_MS
    assert row["round_trips"] == pytest.approx(recomputed, abs=0.01)
    report = (run_dir / "report.md").read_text()
    assert f"{row['round_trips']:.2f}" in report.split("Round trips on the critical path")[1]


def test_calibration_shows_the_toxic_on_its_hop_only(redis_matrix: dict) -> None:
    entries = {entry["toxics"]: {hop["hop"]: hop for hop in entry["hops"]}
               for entry in redis_matrix["calibration"]}
    slow = entries[f"redis:latency={REDIS_LATENCY_MS}"]
    print({name: {hop: entry["added_ms"] for hop, entry in hops.items()}
           for name, hops in entries.items()})

    assert abs(slow["redis"]["added_ms"] - REDIS_LATENCY_MS) <= 5, slow["redis"]
    assert abs(slow["llm"]["added_ms"]) <= 5 and abs(slow["postgres"]["added_ms"]) <= 5, slow
    assert all(abs(hop["added_ms"]) <= 5 for hop in entries["none"].values()), entries["none"]


def test_litellm_histograms_littles_law_and_header_gap(redis_matrix: dict) -> None:
    for cell in redis_matrix["cells"]:
        figures = cell["attribution"]
        litellm, client = figures["litellm"], figures["client"]
        print(cell["cell_id"], litellm, client)
        means = litellm["mean_ms"]
        # Every successful request is counted once by LiteLLM's callback.
        assert litellm["observed_requests"] == cell["statistics"]["all"]["requests"] - (
            cell["statistics"]["all"]["failed"]), litellm
        assert 0 < means["llm_api_latency"] < means["total_latency"], means
        # The client's clock runs from before the proxy's to after it.
        assert client["mean_latency_ms"] >= means["total_latency"] - 1, (client, means)
        assert client["mean_latency_ms"] >= client["mean_proxy_response_header_ms"] - 1, client
        # A closed loop of USERS users keeps USERS requests in flight (Little's law).
        assert client["mean_in_flight"] == pytest.approx(USERS, rel=0.1), client


def test_db_figures_say_no_db_when_the_proxy_has_none(redis_matrix: dict, lab: dict) -> None:
    database = redis_matrix["database"]
    report = (Path(lab["PROXYLAB_RESULTS_DIR"]) / "redis-toxic" / "report.md").read_text()
    work = report.split("Work per request:")[1].split("\n\n")[1]
    if database["available"]:
        for cell in redis_matrix["cells"]:
            assert cell["attribution"]["database"]["statements_per_request"] > 0
        return
    for cell in redis_matrix["cells"]:
        assert cell["attribution"]["database"] == {"available": False,
                                                   "reason": database["reason"]}
        row = next(line for line in work.splitlines() if cell["cell_id"] in line)
        assert row.count("no DB") == 4, row


def test_db_statements_through_the_proxy(redis_matrix: dict) -> None:
    database = redis_matrix["database"]
    if not database["available"]:
        pytest.skip(f"the proxy has no database here ({database['reason']}); its DB statements "
                    "per request cannot be measured")
    for cell in redis_matrix["cells"]:
        figures = cell["attribution"]["database"]
        assert figures["statements_per_request"] > 0 and figures["top_by_calls"], figures


def test_streamed_ttft_and_total_through_the_proxy_with_a_profile(lab: dict[str, str]) -> None:
    mock = {"MOCK_LLM_LATENCY_MS": str(STREAM_TTFT_MS), "MOCK_LLM_TOKEN_DELAY_MS": str(STREAM_DELAY_MS),
            "MOCK_LLM_COMPLETION_TOKENS": str(STREAM_TOKENS),
            "MOCK_LLM_STREAM_CHUNKS": str(STREAM_TOKENS), "MOCK_LLM_STREAM_HEADERS_FIRST": "true"}
    summary = _run(lab, "stream", ["--stream", "--profile", "--callbacks", "off", "--user-mode",
                                   "none", "--requests", "40", "--users", str(USERS),
                                   "--warmup", "6"], mock)
    run_dir = Path(lab["PROXYLAB_RESULTS_DIR"]) / "stream"
    (cell,) = summary["cells"]
    frame = read_raw(run_dir / cell["raw_table"])
    ttft, total = frame["ttft_ms"], frame["latency_ms"]
    pacing_ms = (STREAM_TOKENS - 1) * STREAM_DELAY_MS
    measured = (f"TTFT mean {ttft.mean():.1f} (min {ttft.min():.1f}) ms, total mean "
                f"{total.mean():.1f} (min {total.min():.1f}) ms, after the first token "
                f"{(total - ttft).mean():.1f} ms; mock: TTFT {STREAM_TTFT_MS} ms, "
                f"{STREAM_TOKENS} tokens {STREAM_DELAY_MS} ms apart")
    print(measured)

    assert (frame["ok"] == 1).all(), frame["error"].unique()
    assert ttft.min() >= STREAM_TTFT_MS * 0.95, measured
    assert ttft.mean() <= STREAM_TTFT_MS + PROXY_SLACK_MS, measured
    assert total.min() >= (STREAM_TTFT_MS + pacing_ms) * 0.95, measured
    assert total.mean() <= STREAM_TTFT_MS + pacing_ms + PROXY_SLACK_MS, measured
    assert abs((total - ttft).mean() - pacing_ms) <= max(0.25 * pacing_ms, 40), measured
    profile = cell["attribution"]["profile"]
    assert profile and profile["path"], profile
    assert (run_dir / profile["path"]).stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    assert f"[flame graph]({profile['path']})" in report
    assert f"| {ttft[frame['ok'] == 1].mean():.1f} |" in report
