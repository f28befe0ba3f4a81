"""Latency statistics of one run: the figures an investigation table is made of.

Every figure is recomputed from the exact per-request latencies (see rawlog), never from
Locust's bucketed statistics. Latency figures cover successful requests only, because a
failed request's latency measures how fast it failed, not how fast the proxy served it.

Percentiles follow the original LiteLLM latency investigation so that figures imported
from its logs and figures measured by proxylab are computed the same way: the q-th
percentile is the order statistic at 0-based index floor((n - 1) * q) of the sorted
successful latencies, which is numpy's documented ``method="lower"``. It never
interpolates, so every percentile is a latency that some request really had.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

logger = logging.getLogger(__name__)

# numpy.quantile method reproducing the original script's sorted[int((n - 1) * q)].
PERCENTILE_METHOD = "lower"

DEFAULT_THRESHOLDS_S: tuple[int, ...] = tuple(range(1, 11))


@dataclass(frozen=True)
class ThresholdShare:
    """How many successful requests took strictly longer than ``threshold_s`` seconds.

    ``percent`` is 100 * count / succeeded, unrounded; None when nothing succeeded.
    A request of exactly ``threshold_s`` is not above it.
    """

    threshold_s: float
    count: int
    percent: float | None


@dataclass(frozen=True)
class LatencySummary:
    """The latency figures of one run.

    ``requests`` counts every request; the ``*_ms`` figures and ``above`` cover the
    ``succeeded`` ones only and are None when none succeeded. ``rps`` is all requests
    per second of ``duration_s`` and None when the duration is unknown or zero.
    """

    requests: int
    succeeded: int
    failed: int
    min_ms: float | None
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    duration_s: float | None
    rps: float | None
    above: tuple[ThresholdShare, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``above`` becomes a list of dicts, None stays null."""
        result = asdict(self)
        result["above"] = [asdict(share) for share in self.above]
        return result


def summarize(
    latency_ms: npt.ArrayLike,
    ok: npt.ArrayLike,
    duration_s: float | None = None,
    thresholds_s: Sequence[float] = DEFAULT_THRESHOLDS_S,
) -> LatencySummary:
    """Summarize one run from its per-request latencies (ms) and success flags.

    ``ok`` holds booleans or 0/1 per request. A failed request's latency is ignored and
    may be NaN; a successful one must be a finite, non-negative number of milliseconds.
    ``duration_s`` is the run's wall-clock length in seconds, used for ``rps`` only.
    Raises ValueError on inconsistent input rather than return a figure that may be wrong.
    """
    latency_ms = np.asarray(latency_ms, dtype=np.float64).reshape(-1)
    ok_flags = _as_flags(ok)
    if latency_ms.shape != ok_flags.shape:
        raise ValueError(
            f"latency_ms has {latency_ms.size} values but ok has {ok_flags.size}"
        )

    good_ms = latency_ms[ok_flags]
    if not np.all(np.isfinite(good_ms)):
        raise ValueError("a successful request has no finite latency_ms")
    if np.any(good_ms < 0):
        raise ValueError("a successful request has a negative latency_ms")

    requests = int(latency_ms.size)
    succeeded = int(good_ms.size)
    above = tuple(_threshold_share(good_ms, threshold_s) for threshold_s in thresholds_s)

    if succeeded == 0:
        min_ms = avg_ms = p50_ms = p95_ms = p99_ms = max_ms = None
    else:
        p50_ms, p95_ms, p99_ms = (
            float(value)
            for value in np.quantile(good_ms, (0.50, 0.95, 0.99), method=PERCENTILE_METHOD)
        )
        min_ms = float(good_ms.min())
        avg_ms = float(good_ms.mean())
        max_ms = float(good_ms.max())

    return LatencySummary(
        requests=requests,
        succeeded=succeeded,
        failed=requests - succeeded,
        min_ms=min_ms,
        avg_ms=avg_ms,
        p50_ms=p50_ms,
        p95_ms=p95_ms,
        p99_ms=p99_ms,
        max_ms=max_ms,
        duration_s=duration_s,
        rps=_rps(requests, duration_s),
        above=above,
    )


def summarize_raw(
    frame: pd.DataFrame, thresholds_s: Sequence[float] = DEFAULT_THRESHOLDS_S
) -> LatencySummary:
    """Summarize a raw per-request table (rawlog.RAW_COLUMNS).

    The duration is first send to last finish in seconds; it stays unknown (so ``rps``
    is None) when any send or finish time is missing, as in imported text logs.
    """
    sent_unix_s = frame["sent_unix_s"].to_numpy(dtype=np.float64)
    finished_unix_s = frame["finished_unix_s"].to_numpy(dtype=np.float64)
    duration_s = None
    if len(frame) and np.all(np.isfinite(sent_unix_s)) and np.all(np.isfinite(finished_unix_s)):
        duration_s = float(finished_unix_s.max() - sent_unix_s.min())
    return summarize(frame["latency_ms"], frame["ok"], duration_s, thresholds_s)


def _as_flags(ok: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Turn booleans or 0/1 into a bool array; anything else is a caller's mistake."""
    values = np.asarray(ok).reshape(-1)
    if values.dtype == np.bool_:
        return values
    if values.size and not np.all(np.isin(values, (0, 1))):
        raise ValueError("ok must hold booleans or 0/1 only")
    return values.astype(np.bool_)


def _threshold_share(good_ms: npt.NDArray[np.float64], threshold_s: float) -> ThresholdShare:
    """Count the successful latencies strictly above one threshold."""
    count = int(np.count_nonzero(good_ms > threshold_s * 1000.0))
    succeeded = int(good_ms.size)
    # Same expression as the original script, so the one-decimal text matches it exactly.
    percent = 100.0 * count / succeeded if succeeded else None
    return ThresholdShare(threshold_s=threshold_s, count=count, percent=percent)


def _rps(requests: int, duration_s: float | None) -> float | None:
    """Requests per second, or None when the duration cannot give a meaningful rate."""
    if duration_s is None or duration_s == 0:
        return None
    if duration_s < 0 or not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be a finite, non-negative number, got {duration_s}")
    return requests / duration_s
