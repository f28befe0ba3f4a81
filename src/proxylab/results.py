"""The result directory: `summary.json` (versioned, with metadata) and each cell's figures.

Every figure is computed here from a cell's raw per-request table and nowhere else, so a
report can always be rebuilt, and checked, from the saved results alone.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from proxylab import stats
from proxylab.errors import LabError
from proxylab.rawlog import read_raw

logger = logging.getLogger(__name__)

SUMMARY_SCHEMA = "proxylab.summary"
SUMMARY_SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_json_atomic(path: Path, document: dict) -> None:
    """Write to a temporary file and rename it over the target: readers never see half a file."""
    write_text_atomic(path, json.dumps(document, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def new_summary(*, run_id: str, plan: dict, runtime: str, database: dict, order: list[str],
                metadata: dict) -> dict:
    return {
        "schema": SUMMARY_SCHEMA,
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "run_id": run_id,
        "runtime": runtime,
        "status": "running",
        "started_at": now_iso(),
        "finished_at": None,
        "plan": plan,
        "database": database,
        "order": order,
        "metadata": metadata,
        "cells": [],
    }


def save(run_dir: Path, summary: dict) -> None:
    write_json_atomic(run_dir / SUMMARY_FILE, summary)


def load_summary(run_dir: Path) -> dict:
    path = run_dir / SUMMARY_FILE
    if not path.exists():
        raise LabError(f"{run_dir} is not a proxylab result directory (no {SUMMARY_FILE})")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        # Typically a file cut short by a full disk or hand-edited.
        raise LabError(f"{path}: cannot read the summary ({error})") from None
    if not isinstance(summary, dict):
        raise LabError(f"{path}: not a proxylab summary (top level is a {type(summary).__name__}, "
                       f"not an object)")
    if summary.get("schema") != SUMMARY_SCHEMA or summary.get("schema_version") != SUMMARY_SCHEMA_VERSION:
        raise LabError(f"{path}: unsupported schema {summary.get('schema')} v{summary.get('schema_version')}")
    return summary


def split_statistics(frame: pd.DataFrame) -> dict[str, dict]:
    """Figures for all requests, each simulated user's first request, and the later ones."""
    first = frame["request_index"] == 1
    return {
        "all": stats.summarize_raw(frame).to_dict(),
        "first_request": stats.summarize_raw(frame[first]).to_dict(),
        "later_requests": stats.summarize_raw(frame[~first]).to_dict(),
    }


def failure_warning(frame: pd.DataFrame) -> str | None:
    """One line naming how many requests failed and their commonest errors, or None."""
    failed = frame[frame["ok"] == 0]
    if failed.empty:
        return None
    errors = failed["error"].value_counts().head(3)
    top = "; ".join(f"{count}x {text}" for text, count in errors.items())
    return f"{len(failed)} requests failed ({top}); see the raw table"


def cell_record(*, run_dir: Path, cell_id: str, config_id: str, config: dict, repeat: int,
                raw_path: Path, expected_requests: int, started_at: str, load, warmup: dict,
                generator_cpu_warn_percent: float) -> dict:
    """The cell's entry in summary.json: its configuration, figures and warnings."""
    frame = read_raw(raw_path)
    figures = split_statistics(frame)
    warnings = []
    if len(frame) < expected_requests:
        warnings.append(f"only {len(frame)} of {expected_requests} requests finished "
                        f"(time limit or interruption); figures cover those")
    failures = failure_warning(frame)
    if failures:
        warnings.append(failures)
    if load.generator_cpu_percent > generator_cpu_warn_percent:
        warnings.append(f"load generator CPU at {load.generator_cpu_percent:.0f} % of a core: latency "
                        f"may include the generator's own queueing; use fewer users")
    requests = len(frame)
    return {
        "cell_id": cell_id,
        "config_id": config_id,
        "config": config,
        "repeat": repeat,
        "raw_table": str(raw_path.relative_to(run_dir)),
        "started_at": started_at,
        "finished_at": now_iso(),
        "expected_requests": expected_requests,
        "warmup": warmup,
        "wall_s": round(load.wall_s, 3),
        "generator_cpu_percent": round(load.generator_cpu_percent, 1),
        "proxy_cpu_ms_per_request": (round(1000 * load.proxy_cpu_s / requests, 3)
                                     if load.proxy_cpu_s is not None and requests else None),
        "proxy_peak_rss_bytes": load.proxy_peak_rss_bytes,
        "load_exit_code": load.exit_code,
        "statistics": figures,
        "warnings": warnings,
    }
