"""The raw per-request table: one CSV row per request, the only source of every figure.

Locust's own statistics are bucketed (see FIELD-NOTES); proxylab never reports them.
Every number in a report is recomputed from these rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

# Column order of every raw table, written by the locustfile and by `proxylab import`.
# Units are in the names; times are Unix epoch seconds, latencies milliseconds.
RAW_COLUMNS: tuple[str, ...] = (
    "config_id",  # which matrix configuration sent the request
    "user_index",  # simulated user, 1-based; 0 when the source did not record it
    "request_index",  # the request's position within that user's requests, 1-based
    "sent_unix_s",  # when the request was sent
    "finished_unix_s",  # when the last byte of the response arrived (or the error)
    "latency_ms",  # exact client-measured latency, finished - sent, not bucketed
    "status_code",  # HTTP status, 0 for a connection error or timeout
    "ok",  # 1 for a successful request, 0 for a failure
    "error",  # error text for a failure, empty otherwise
    "overhead_ms",  # x-litellm-overhead-duration-ms response header, empty when absent
    # Added later; a table without them still reads, with the columns empty (OPTIONAL_COLUMNS).
    "ttft_ms",  # streamed requests: time to the first content token, measured by the client
    "proxy_response_ms",  # x-litellm-response-duration-ms response header, empty when absent
    "model",  # the model the request asked for (a --model-mix draws it per request)
)
# Columns older tables lack: read as empty (NaN) rather than refused.
OPTIONAL_COLUMNS: tuple[str, ...] = ("ttft_ms", "proxy_response_ms", "model")

RAW_DTYPES = {
    "config_id": str,
    "user_index": np.int64,
    "request_index": np.int64,
    "sent_unix_s": np.float64,
    "finished_unix_s": np.float64,
    "latency_ms": np.float64,
    "status_code": np.int64,
    "ok": np.int64,
    "error": str,
    "overhead_ms": np.float64,
    "ttft_ms": np.float64,
    "proxy_response_ms": np.float64,
    "model": str,
}


# Imported logs may lack send times; the proxy may not send its overhead header.
_EMPTY_MEANS_UNKNOWN = {column: [""] for column in
                        ("sent_unix_s", "finished_unix_s", "overhead_ms", *OPTIONAL_COLUMNS)}


def write_header(path: Path) -> None:
    """Create (or truncate) a raw table with only its header line."""
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerow(RAW_COLUMNS)


def read_raw(path: Path) -> pd.DataFrame:
    """Read a raw table with the proper types; unknown values and absent new columns are NaN."""
    frame = pd.read_csv(path, dtype=RAW_DTYPES, keep_default_na=False, na_values=_EMPTY_MEANS_UNKNOWN)
    for column in OPTIONAL_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    missing = [column for column in RAW_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not a proxylab raw table, missing columns {missing}")
    return frame[list(RAW_COLUMNS)]
