"""Synthetic runs and result directories whose true differences are known by construction.

Latencies are log-normal per request (median ``median_ms``, shape ``sigma``) times a
log-normal factor per run (``run_cv``), the kind of run-to-run drift the seed
investigation saw. Multiplying every latency by ``scale`` shifts every latency statistic by
exactly that ratio, so the true effect of a comparison is ``scale - 1``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from proxylab import results
from proxylab.rawlog import RAW_COLUMNS, read_raw, write_header
from proxylab.verdicts import Run

START_UNIX_S = 1_796_000_000.0


def latencies(rng: np.random.Generator, requests: int, *, scale: float = 1.0,
              median_ms: float = 300.0, sigma: float = 0.5, run_cv: float = 0.03) -> np.ndarray:
    """One run's latencies in ms: a run factor times independent log-normal requests."""
    run_factor = np.exp(rng.normal(0.0, run_cv)) if run_cv else 1.0
    return scale * run_factor * np.exp(rng.normal(np.log(median_ms), sigma, size=requests))


def frame(latency_ms: np.ndarray, config_id: str, *, users: int = 10,
          failed: int = 0, start_unix_s: float = START_UNIX_S) -> pd.DataFrame:
    """A raw table for latencies sent round-robin by ``users`` users, 20 ms apart.

    The last ``failed`` requests are marked as failures (status 500).
    """
    n = latency_ms.size
    sent = start_unix_s + 0.02 * np.arange(n)
    ok = np.ones(n, dtype=np.int64)
    if failed:
        ok[-failed:] = 0
    return pd.DataFrame({
        "config_id": config_id,
        "user_index": np.arange(n) % users + 1,
        "request_index": np.arange(n) // users + 1,
        "sent_unix_s": sent,
        "finished_unix_s": sent + latency_ms / 1000.0,
        "latency_ms": np.round(latency_ms, 3),
        "status_code": np.where(ok == 1, 200, 500),
        "ok": ok,
        "error": np.where(ok == 1, "", "HTTP 500"),
        "overhead_ms": np.nan,
        # Optional columns (ttft_ms, proxy_response_ms, ...) stay empty, as in tables that
        # predate them; reindexing keeps this in step when rawlog gains one.
    }).reindex(columns=list(RAW_COLUMNS))


def run(latency_ms: np.ndarray, config_id: str = "base", repeat: int = 1,
        config: dict | None = None, generator_cpu_percent: float | None = 20.0) -> Run:
    return Run(cell_id=f"{config_id}.r{repeat}", config_id=config_id,
               config=config if config is not None else {"name": config_id}, repeat=repeat,
               frame=frame(latency_ms, config_id), generator_cpu_percent=generator_cpu_percent)


def runs(rng: np.random.Generator, count: int, requests: int, config_id: str = "base",
         **shape: float) -> list[Run]:
    return [run(latencies(rng, requests, **shape), config_id, repeat) for repeat in
            range(1, count + 1)]


def write_result_dir(run_dir: Path, cells: list[tuple[str, dict, int, np.ndarray]], *,
                     users: int = 10, failed: int = 0,
                     generator_cpu_percent: float = 20.0) -> dict:
    """A result directory as a matrix writes it: raw tables plus summary.json.

    ``cells`` holds (config_id, config, repeat, latency_ms). The raw tables are written the
    way the locustfile does (header, then one CSV row per request).
    """
    order = [f"{config_id}.r{repeat}" for config_id, _, repeat, _ in cells]
    summary = results.new_summary(
        run_id=run_dir.name, plan={"requests": None, "users": users, "repeats": None},
        runtime="synthetic", database={"available": False, "reason": "synthetic data"},
        order=order, metadata={"machine": {}, "versions": {}, "git": {}})
    start_unix_s = START_UNIX_S
    for (config_id, config, repeat, latency_ms), cell_id in zip(cells, order):
        raw_path = run_dir / "cells" / cell_id / "raw.csv"
        raw_path.parent.mkdir(parents=True, exist_ok=True)
        write_header(raw_path)
        table = frame(latency_ms, config_id, users=users, failed=failed,
                      start_unix_s=start_unix_s)
        start_unix_s += 0.02 * latency_ms.size + 5.0
        with raw_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for row in table.itertuples(index=False):
                writer.writerow(["" if isinstance(value, float) and np.isnan(value) else value
                                 for value in row])
        summary["cells"].append({
            "cell_id": cell_id, "config_id": config_id, "config": config, "repeat": repeat,
            "raw_table": str(raw_path.relative_to(run_dir)),
            "started_at": results.now_iso(), "finished_at": results.now_iso(),
            "expected_requests": int(latency_ms.size), "warmup": {"requests": 0, "failed": 0},
            "wall_s": 0.02 * latency_ms.size, "generator_cpu_percent": generator_cpu_percent,
            "proxy_cpu_ms_per_request": None, "proxy_peak_rss_bytes": None, "load_exit_code": 0,
            "statistics": results.split_statistics(read_raw(raw_path)), "warnings": [],
        })
    summary["status"] = "complete"
    summary["finished_at"] = results.now_iso()
    results.save(run_dir, summary)
    return summary
