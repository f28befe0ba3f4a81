"""Streamed load straight against the mock: the locustfile's own TTFT and total time.

Runs the real locustfile headless (a few seconds) against a mock started as a subprocess
on a free 127.0.0.1 port; needs no stack.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mock_process import running_mock

from proxylab.rawlog import read_raw

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO_ROOT / "locustfiles" / "chat.py"

TTFT_MS = 200
TOKENS = 8
TOKEN_DELAY_MS = 25
# Each request waits at least its scheduled time (less 5 % for timer rounding); above it, the
# mean may gain up to 60 ms on a busy two-core machine (two users, a generator and the mock).
LOW_SHARE = 0.95
SLACK_MS = 60


@pytest.fixture()
def streaming_mock(tmp_path: Path) -> Iterator[str]:
    with running_mock(tmp_path, {
            "MOCK_LLM_LATENCY_MS": str(TTFT_MS), "MOCK_LLM_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
            "MOCK_LLM_COMPLETION_TOKENS": str(TOKENS), "MOCK_LLM_STREAM_CHUNKS": str(TOKENS),
            "MOCK_LLM_STREAM_HEADERS_FIRST": "true"}) as url:
        yield url


def _run_locust(url: str, out: Path, stream: bool,
                requests: int = 20) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--users", "2", "--spawn-rate", "2", "--run-time", "60s", "--only-summary",
               "--total-requests", str(requests), "--raw-csv", str(out / "raw.csv"),
               "--config-id", "stream-test", "--csv", str(out / "locust"),
               "--exit-code-on-error", "0", "--loglevel", "WARNING"]
    if stream:
        command.append("--stream")
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_stream_records_ttft_and_total_time_itself(streaming_mock: str, tmp_path: Path) -> None:
    completed = _run_locust(streaming_mock, tmp_path, stream=True)
    assert completed.returncode == 0, completed.stderr[-2000:]

    frame = read_raw(tmp_path / "raw.csv")
    expected_total_ms = TTFT_MS + (TOKENS - 1) * TOKEN_DELAY_MS  # k tokens: k - 1 delays
    ttft, total = frame["ttft_ms"], frame["latency_ms"]
    measured = (f"TTFT mean {ttft.mean():.1f} ms (min {ttft.min():.1f}), total mean "
                f"{total.mean():.1f} ms (min {total.min():.1f}); expected {TTFT_MS} and "
                f"{expected_total_ms} ms")
    print(measured)
    assert len(frame) == 20 and (frame["ok"] == 1).all(), frame["error"].unique()
    assert ttft.min() >= TTFT_MS * LOW_SHARE, measured
    assert ttft.mean() <= TTFT_MS + SLACK_MS, measured
    assert total.min() >= expected_total_ms * LOW_SHARE, measured
    assert total.mean() <= expected_total_ms + SLACK_MS, measured
    # The time after the first token is the mock's pacing alone: (k - 1) x d, +-20 %.
    pacing = (total - ttft).mean()
    scheduled_ms = (TOKENS - 1) * TOKEN_DELAY_MS
    assert abs(pacing - scheduled_ms) <= 0.2 * scheduled_ms, measured

    # Locust's own clock stopped at the headers, which this mock sends at once: the reason
    # the locustfile measures streams itself.
    with (tmp_path / "locust_stats.csv").open() as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    headers_ms = float(rows["chat (headers)"]["Average Response Time"])
    assert headers_ms < TTFT_MS / 2, f"Locust's time at the headers: {headers_ms:.1f} ms"
    assert float(rows["chat"]["Average Response Time"]) >= expected_total_ms * LOW_SHARE


def test_unstreamed_rows_leave_ttft_empty(streaming_mock: str, tmp_path: Path) -> None:
    completed = _run_locust(streaming_mock, tmp_path, stream=False, requests=6)
    assert completed.returncode == 0, completed.stderr[-2000:]

    frame = read_raw(tmp_path / "raw.csv")

    assert len(frame) == 6 and (frame["ok"] == 1).all()
    assert frame["ttft_ms"].isna().all()
    assert (frame["latency_ms"] >= TTFT_MS * LOW_SHARE).all()


def test_old_raw_table_without_new_columns_still_reads(tmp_path: Path) -> None:
    old = tmp_path / "raw.csv"
    old.write_text("config_id,user_index,request_index,sent_unix_s,finished_unix_s,latency_ms,"
                   "status_code,ok,error,overhead_ms\nc,1,1,100.0,100.25,250.0,200,1,,12.5\n")

    frame = read_raw(old)

    assert frame.loc[0, "latency_ms"] == 250.0 and frame.loc[0, "overhead_ms"] == 12.5
    assert frame["ttft_ms"].isna().all() and frame["proxy_response_ms"].isna().all()
