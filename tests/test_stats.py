"""Latency statistics on hand-made runs whose answers can be worked out on paper."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from proxylab.rawlog import RAW_COLUMNS
from proxylab.stats import DEFAULT_THRESHOLDS_S, LatencySummary, summarize, summarize_raw


def _above_counts(summary: LatencySummary) -> list[int]:
    return [share.count for share in summary.above]


def test_empty_run_has_counts_but_no_latency_figures() -> None:
    summary = summarize([], [], duration_s=10.0)

    assert (summary.requests, summary.succeeded, summary.failed) == (0, 0, 0)
    assert summary.min_ms is None and summary.avg_ms is None and summary.max_ms is None
    assert summary.p50_ms is None and summary.p95_ms is None and summary.p99_ms is None
    assert summary.rps == 0.0
    assert [share.threshold_s for share in summary.above] == list(DEFAULT_THRESHOLDS_S)
    assert all(share.count == 0 and share.percent is None for share in summary.above)


def test_one_request_is_every_figure() -> None:
    summary = summarize(np.array([1234.5]), np.array([True]))

    assert (summary.requests, summary.succeeded, summary.failed) == (1, 1, 0)
    figures_ms = (summary.min_ms, summary.avg_ms, summary.p50_ms, summary.p95_ms,
                  summary.p99_ms, summary.max_ms)
    assert figures_ms == (1234.5,) * 6
    assert _above_counts(summary) == [1] + [0] * 9
    assert summary.above[0].percent == 100.0
    assert summary.above[1].percent == 0.0


def test_all_failed_counts_failures_and_has_no_latency_figures() -> None:
    summary = summarize([50.0, 20_000.0, math.nan], [0, 0, 0], duration_s=2.0)

    assert (summary.requests, summary.succeeded, summary.failed) == (3, 0, 3)
    assert summary.p95_ms is None and summary.avg_ms is None
    assert summary.rps == 1.5  # failures are requests the proxy had to handle too
    assert all(share.count == 0 and share.percent is None for share in summary.above)


def test_failed_requests_are_excluded_from_latency_figures() -> None:
    latency_ms = [100.0, 200.0, 300.0, 9_000.0, 12_000.0]
    ok = [1, 1, 1, 0, 0]

    summary = summarize(latency_ms, ok)

    assert (summary.requests, summary.succeeded, summary.failed) == (5, 3, 2)
    assert summary.max_ms == 300.0
    assert summary.avg_ms == 200.0
    assert summary.p99_ms == 200.0  # index floor(2 * 0.99) = 1 of [100, 200, 300]
    assert _above_counts(summary) == [0] * 10


def test_exactly_at_a_threshold_is_not_above_it() -> None:
    latency_ms = [999.999, 1000.0, 1000.001, 2000.0, 2000.5]

    summary = summarize(latency_ms, [True] * 5)

    assert summary.above[0].count == 3  # 1000.001, 2000.0 and 2000.5; 1000.0 is not above
    assert summary.above[1].count == 1  # only 2000.5; 2000.0 is not above 2 s
    assert summary.above[0].percent == pytest.approx(60.0)


def test_ties_give_the_tied_value() -> None:
    latency_ms = [100.0] * 97 + [5000.0] * 3

    summary = summarize(latency_ms, [1] * 100)

    assert summary.p50_ms == 100.0
    assert summary.p95_ms == 100.0  # index floor(99 * 0.95) = 94 still in the tie
    assert summary.p99_ms == 5000.0  # index floor(99 * 0.99) = 98
    assert summary.above[4].count == 0  # 5000.0 is not above 5 s
    assert summary.above[3].count == 3


def test_percentiles_take_the_lower_neighbour_without_interpolating() -> None:
    # 42 requests, like the seed baselines: linear interpolation would give 39.95 for p95.
    latency_ms = np.arange(1.0, 43.0)
    np.random.default_rng(7).shuffle(latency_ms)  # input order must not matter

    summary = summarize(latency_ms, np.ones(42, dtype=bool))

    assert summary.p50_ms == 21.0  # index floor(41 * 0.50) = 20
    assert summary.p95_ms == 39.0  # index floor(41 * 0.95) = 38
    assert summary.p99_ms == 41.0  # index floor(41 * 0.99) = 40
    assert summary.min_ms == 1.0 and summary.max_ms == 42.0
    assert summary.avg_ms == 21.5


@pytest.mark.parametrize("count", [1, 2, 3, 20, 21, 42, 100, 101, 999, 1000, 4999, 5000])
def test_percentiles_match_the_original_scripts_index_formula(count: int) -> None:
    latency_ms = np.random.default_rng(count).exponential(300.0, size=count)
    ordered_ms = sorted(latency_ms)

    summary = summarize(latency_ms, [1] * count)

    # The original script's own expression, float rounding included.
    assert summary.p50_ms == ordered_ms[int((count - 1) * 0.50)]
    assert summary.p95_ms == ordered_ms[int((count - 1) * 0.95)]
    assert summary.p99_ms == ordered_ms[int((count - 1) * 0.99)]


def test_percent_uses_successful_requests_as_denominator() -> None:
    latency_ms = [1500.0, 500.0, 500.0, 100.0]
    ok = [True, True, True, False]

    summary = summarize(latency_ms, ok)

    assert summary.above[0].count == 1
    assert summary.above[0].percent == pytest.approx(100.0 / 3)


def test_custom_thresholds() -> None:
    summary = summarize([250.0, 750.0], [1, 1], thresholds_s=(0.5, 0.25))

    assert [(share.threshold_s, share.count) for share in summary.above] == [(0.5, 1), (0.25, 1)]


@pytest.mark.parametrize("duration_s", [None, 0, 0.0])
def test_rps_unknown_without_a_duration(duration_s: float | None) -> None:
    assert summarize([10.0, 20.0], [1, 0], duration_s=duration_s).rps is None


def test_rps_counts_all_requests() -> None:
    assert summarize([10.0, 20.0, 30.0, 40.0], [1, 1, 1, 0], duration_s=0.5).rps == 8.0


@pytest.mark.parametrize(
    ("latency_ms", "ok", "duration_s", "message"),
    [
        ([1.0, 2.0], [1], None, "latency_ms has 2 values but ok has 1"),
        ([1.0, math.nan], [1, 1], None, "no finite latency_ms"),
        ([1.0, -2.0], [1, 1], None, "negative latency_ms"),
        ([1.0], [2], None, "booleans or 0/1"),
        ([1.0], [1], -1.0, "duration_s"),
    ],
)
def test_inconsistent_input_is_rejected(
    latency_ms: list[float], ok: list[int], duration_s: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        summarize(latency_ms, ok, duration_s=duration_s)


def test_to_dict_is_json_ready() -> None:
    summary = summarize(np.array([100.0, 1500.0]), np.array([1, 1]), duration_s=4.0)

    decoded = json.loads(json.dumps(summary.to_dict()))

    assert decoded["p95_ms"] == 100.0
    assert decoded["rps"] == 0.5
    assert decoded["above"][0] == {"threshold_s": 1, "count": 1, "percent": 50.0}
    assert len(decoded["above"]) == 10


def test_summary_is_frozen() -> None:
    summary = summarize([1.0], [1])
    with pytest.raises(AttributeError):
        summary.p95_ms = 2.0  # type: ignore[misc]


def _raw(latency_ms: list[float], ok: list[int], sent_unix_s: list[float]) -> pd.DataFrame:
    finished_unix_s = [sent + latency / 1000 for sent, latency in zip(sent_unix_s, latency_ms)]
    count = len(latency_ms)
    return pd.DataFrame(
        {
            "config_id": ["c"] * count,
            "user_index": [1] * count,
            "request_index": list(range(1, count + 1)),
            "sent_unix_s": sent_unix_s,
            "finished_unix_s": finished_unix_s,
            "latency_ms": latency_ms,
            "status_code": [200 if flag else 0 for flag in ok],
            "ok": ok,
            "error": ["" if flag else "boom" for flag in ok],
            "overhead_ms": [math.nan] * count,
        },
        columns=list(RAW_COLUMNS),
    )


def test_summarize_raw_takes_the_duration_from_first_send_to_last_finish() -> None:
    frame = _raw([500.0, 1500.0, 250.0], [1, 1, 0], [100.0, 100.5, 101.0])

    summary = summarize_raw(frame)

    assert summary.duration_s == pytest.approx(2.0)  # 100.0 to 100.5 + 1.5
    assert summary.rps == pytest.approx(1.5)
    assert summary.failed == 1 and summary.max_ms == 1500.0


def test_summarize_raw_without_send_times_has_no_rate() -> None:
    frame = _raw([500.0, 1500.0], [1, 1], [math.nan, math.nan])

    summary = summarize_raw(frame)

    assert summary.duration_s is None and summary.rps is None
    assert summary.avg_ms == 1000.0
