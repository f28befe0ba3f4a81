"""Where a cell's time goes: what each request cost in Redis and DB work, and where it waited.

`begin` reads every source just before a cell's load and `finish` just after; the figures are
the differences, divided by the cell's requests (the rows of its raw table):

- LLM: chat completions the mock answered, by status, from its own counters (more than one
  per request means retries or fallbacks).
- Redis: `INFO commandstats` on Redis' own port (not the toxiproxy hop, whose toxics would
  slow the probe), calls by command. The probe's own first INFO is subtracted.
- DB: `pg_stat_statements` (reset by `begin`) for statements and the top statements by calls
  and by time; `pg_stat_database` for transactions and rows fetched. When the proxy has no
  database the section says so instead of showing zeros.
- LiteLLM's own latency histograms (seconds), read from the proxy's `/metrics/` with the
  master key: total, LLM API, overhead and queue time, as means over the cell. Present only
  with the Prometheus callback on.
- From the raw table: the gap between the latency the client measured and the one the proxy
  reports, and the mean number of requests in flight by Little's law (rate x mean latency).
- Optionally a py-spy sampling profile of the proxy during the load, as an SVG flame graph.

Every count covers the whole window between the two probes, so the proxy's background work
in that window (periodic Redis syncs, spend updates) is shared out over the cell's requests.
For Redis, `begin` first watches an idle window of a few seconds (no load, the proxy idle):
its rate of commands is the background, and its expected share of the cell's window is
reported beside the raw figure and subtracted from it (`commands_per_request_less_background`).
TODO: the same idle rate for DB statements, where the proxy has a database.
TODO: on the Compose runtime the Redis and Postgres exporters' scrapes are counted too.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from proxylab.errors import LabError
from proxylab.settings import LabSettings

logger = logging.getLogger(__name__)

# Commands the probe itself sends between its two readings: the first INFO (a reading never
# counts itself; Redis updates the statistics after a command has run). The client is made
# without CLIENT SETINFO, and RESP2 needs no HELLO, so nothing else is sent.
PROBE_REDIS_COMMANDS = {"info": 1}

LITELLM_HISTOGRAMS_S = {
    "total_latency": "litellm_request_total_latency_metric",
    "llm_api_latency": "litellm_llm_api_latency_metric",
    "overhead": "litellm_overhead_latency_metric",
    "queue_time": "litellm_request_queue_time_seconds",
}
# LiteLLM observes its histograms in a callback after the response has left: wait up to this
# long for the last requests of a cell to be counted.
LITELLM_SETTLE_S = 3.0
# A Postgres backend that flushed its counters less than a second ago defers the next flush
# of an idle backend by up to 10 s (PGSTAT_IDLE_INTERVAL, PostgreSQL 15), so pg_stat_database
# lags the proxy's last transactions by as much. pg_stat_statements is updated at once.
# TODO: 11 s twice per cell only where the proxy has a database; unverified here (none).
PG_STATS_SETTLE_S = 11.0
TOP_STATEMENTS = 5
STATEMENT_TEXT_CHARS = 160
PROFILE_FILE = "profile.svg"
PROFILE_RATE_HZ = 100
PROBE_TIMEOUT_S = 5.0
# Seconds of the proxy idle before a cell's load, to measure its background Redis commands.
IDLE_WINDOW_S = 3.0


@dataclass
class Probe:
    """The readings taken before a cell, plus the profiler that runs through it."""

    taken_unix_s: float
    database: bool
    database_reason: str
    redis_calls: dict[str, int] | None = None
    redis_usec: dict[str, int] | None = None
    redis_taken_s: float | None = None  # time.monotonic() of the reading the cell counts from
    # Redis commands per second while the proxy was idle just before the cell; None: not read.
    background_redis_per_s: float | None = None
    pg_database: dict[str, int] | None = None
    litellm: dict[str, tuple[float, float]] | None = None
    llm_calls: dict[str, float] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    profiler: subprocess.Popen | None = None
    profile_path: Path | None = None


def begin(settings: LabSettings, *, database: bool, database_reason: str = "no DB",
          cell_dir: Path | None = None, proxy_pid: int | None = None, profile: bool = False,
          pg_settle_s: float = PG_STATS_SETTLE_S, idle_window_s: float = IDLE_WINDOW_S) -> Probe:
    """Reset pg_stat_statements, read every source, and start the profiler if asked.

    Redis is read twice, `idle_window_s` apart, with nothing sent to the proxy in between: the
    difference is the proxy's background rate of commands (0: not measured).
    """
    probe = Probe(time.time(), database, database_reason)
    if database:
        try:
            _reset_statements(settings)
            time.sleep(pg_settle_s)
            probe.pg_database = _read_pg_database(settings)
        except Exception as error:
            probe.errors["database"] = _one_line(error)
    try:
        probe.redis_calls, probe.redis_usec = _read_redis(settings)
        probe.redis_taken_s = time.monotonic()
        if idle_window_s > 0:
            time.sleep(idle_window_s)
            idle_calls, idle_usec = _read_redis(settings)
            idle_s = time.monotonic() - probe.redis_taken_s
            idle_commands = sum(redis_delta(probe.redis_calls, idle_calls).values())
            probe.background_redis_per_s = idle_commands / idle_s
            probe.redis_calls, probe.redis_usec = idle_calls, idle_usec
            probe.redis_taken_s = time.monotonic()
    except Exception as error:
        probe.errors["redis"] = _one_line(error)
    try:
        probe.litellm = _read_litellm(settings)
    except Exception as error:
        probe.errors["litellm"] = _one_line(error)
    try:
        probe.llm_calls = read_mock_calls(settings)
    except Exception as error:
        probe.errors["llm"] = _one_line(error)
    if profile and cell_dir is not None and proxy_pid:
        probe.profile_path = cell_dir / PROFILE_FILE
        probe.profiler = _start_profiler(proxy_pid, probe.profile_path)
    return probe


def finish(settings: LabSettings, probe: Probe, frame: pd.DataFrame, *,
           pg_settle_s: float = PG_STATS_SETTLE_S, run_dir: Path | None = None) -> dict:
    """Read every source again and return the cell's attribution (JSON-ready)."""
    requests = len(frame)
    ok_requests = int((frame["ok"] == 1).sum())
    profile = _stop_profiler(probe, run_dir)
    result = {
        "requests": requests,
        # From the first reading to the end of the load (the second readings follow).
        "window_s": round(time.time() - probe.taken_unix_s, 3),
        "llm": _llm_figures(settings, probe, requests),
        "redis": _redis_figures(settings, probe, requests),
        "database": _database_figures(settings, probe, requests, pg_settle_s),
        "litellm": _litellm_figures(settings, probe, ok_requests),
        "client": client_figures(frame),
        "profile": profile,
    }
    litellm_total = (result["litellm"].get("mean_ms") or {}).get("total_latency")
    client_mean = result["client"]["mean_latency_ms"]
    result["client"]["client_minus_proxy_histogram_ms"] = (
        None if litellm_total is None or client_mean is None
        else round(client_mean - litellm_total, 3))
    return result


# --- the mock LLM ---------------------------------------------------------------------------

MOCK_CHAT_ROUTE = "/v1/chat/completions"


def read_mock_calls(settings: LabSettings) -> dict[str, float]:
    """Chat completions the mock has answered since it started, by HTTP status."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(settings.url(settings.mock_llm_port, "/metrics"), timeout=PROBE_TIMEOUT_S)
    response.raise_for_status()
    calls: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if (sample.name == "mock_llm_requests_total"
                    and sample.labels.get("route") == MOCK_CHAT_ROUTE):
                status = sample.labels["status"]
                calls[status] = calls.get(status, 0.0) + sample.value
    return calls


def _llm_figures(settings: LabSettings, probe: Probe, requests: int) -> dict:
    if probe.llm_calls is None:
        return {"error": probe.errors.get("llm", "not read")}
    try:
        after = read_mock_calls(settings)
    except Exception as error:
        return {"error": _one_line(error)}
    by_status = {status: int(count - probe.llm_calls.get(status, 0.0))
                 for status, count in sorted(after.items())}
    by_status = {status: count for status, count in by_status.items() if count}
    return {"calls": sum(by_status.values()),
            "calls_per_request": _per(sum(by_status.values()), requests),
            "by_status": by_status}


# --- Redis ----------------------------------------------------------------------------------


def _read_redis(settings: LabSettings) -> tuple[dict[str, int], dict[str, int]]:
    import redis

    client = redis.Redis(host=settings.host, port=settings.redis_port,
                         socket_timeout=PROBE_TIMEOUT_S, lib_name=None, lib_version=None)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    usec = {name.removeprefix("cmdstat_"): int(value["usec"]) for name, value in stats.items()}
    return calls, usec


def redis_delta(before: dict[str, int], after: dict[str, int],
                own: dict[str, int] | None = None) -> dict[str, int]:
    """Calls per command between two readings, less the probe's own; zero counts dropped."""
    own = PROBE_REDIS_COMMANDS if own is None else own
    delta = {name: after[name] - before.get(name, 0) - own.get(name, 0) for name in after}
    return {name: count for name, count in sorted(delta.items()) if count > 0}


def _redis_figures(settings: LabSettings, probe: Probe, requests: int) -> dict:
    if probe.redis_calls is None:
        return {"error": probe.errors.get("redis", "not read")}
    try:
        calls_after, usec_after = _read_redis(settings)
    except Exception as error:
        return {"error": _one_line(error)}
    window_s = time.monotonic() - probe.redis_taken_s if probe.redis_taken_s else None
    calls = redis_delta(probe.redis_calls, calls_after)
    assert probe.redis_usec is not None
    usec = {name: usec_after.get(name, 0) - probe.redis_usec.get(name, 0) for name in calls}
    total = sum(calls.values())
    return {
        "commands": total,
        "commands_per_request": _per(total, requests),
        **background_figures(total, requests, window_s, probe.background_redis_per_s),
        "server_us_per_request": _per(sum(usec.values()), requests),
        "by_command": {name: {"calls": count, "per_request": _per(count, requests),
                              "server_us_per_call": _per(usec[name], count)}
                       for name, count in sorted(calls.items(), key=lambda item: -item[1])},
    }


def background_figures(commands: int, requests: int, window_s: float | None,
                       background_per_s: float | None) -> dict:
    """The idle rate of commands, its expected share of a cell's window, and what is left.

    A cell of `requests` requests whose window of `window_s` seconds counted `commands`:
    the background would have sent `background_per_s * window_s` of them with no load at all,
    so each request's own share is the rest over the requests (never below zero: the
    background varies, and a count cannot be negative).
    """
    if background_per_s is None or window_s is None:
        return {"background_commands_per_s": None, "background_commands_in_window": None,
                "commands_per_request_less_background": None}
    expected = background_per_s * window_s
    return {"background_commands_per_s": round(background_per_s, 3),
            "background_commands_in_window": round(expected, 1),
            "commands_per_request_less_background": _per(max(commands - expected, 0.0), requests)}


# --- Postgres -------------------------------------------------------------------------------


def _connect(settings: LabSettings, dbname: str):
    import psycopg

    s = settings
    return psycopg.connect(host=s.host, port=s.postgres_port, user=s.postgres_user,
                           password=s.postgres_password, dbname=dbname, autocommit=True,
                           connect_timeout=int(PROBE_TIMEOUT_S))


# Every probe query runs in the maintenance database `postgres`: a connection to the proxy's
# database would add its own transactions and catalog reads to the figures.
PROBE_DB = "postgres"


def _reset_statements(settings: LabSettings) -> None:
    with _connect(settings, PROBE_DB) as connection:
        # pg_stat_statements is one table for the whole server; this makes it readable here.
        connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        connection.execute("SELECT pg_stat_statements_reset()")


def _read_pg_database(settings: LabSettings) -> dict[str, int]:
    with _connect(settings, PROBE_DB) as connection:
        row = connection.execute(
            "SELECT xact_commit, xact_rollback, tup_fetched, tup_returned, tup_inserted, "
            "tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s",
            (settings.postgres_db,)).fetchone()
    if row is None:
        raise LabError(f"database {settings.postgres_db!r} not found in pg_stat_database")
    names = ("xact_commit", "xact_rollback", "tup_fetched", "tup_returned", "tup_inserted",
             "tup_updated", "tup_deleted")
    return dict(zip(names, (int(value) for value in row)))


def _read_statements(settings: LabSettings) -> list[dict]:
    with _connect(settings, PROBE_DB) as connection:
        rows = connection.execute(
            "SELECT query, calls, total_exec_time, rows FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
            "AND query NOT ILIKE '%%pg_stat_statements%%'", (settings.postgres_db,)).fetchall()
    return [{"query": " ".join(query.split()), "calls": int(calls), "total_ms": float(total_ms),
             "rows": int(rows_count)} for query, calls, total_ms, rows_count in rows]


def _database_figures(settings: LabSettings, probe: Probe, requests: int, settle_s: float) -> dict:
    if not probe.database:
        return {"available": False, "reason": probe.database_reason}
    if "database" in probe.errors:
        return {"available": True, "error": probe.errors["database"]}
    try:
        statements = _read_statements(settings)
        time.sleep(settle_s)
        after = _read_pg_database(settings)
    except Exception as error:
        return {"available": True, "error": _one_line(error)}
    assert probe.pg_database is not None
    delta = {name: after[name] - probe.pg_database[name] for name in after}
    return database_figures(statements, delta, requests)


def database_figures(statements: list[dict], delta: dict[str, int], requests: int) -> dict:
    """Per-request DB figures from pg_stat_statements rows and a pg_stat_database delta."""
    total_calls = sum(entry["calls"] for entry in statements)

    def top(key: str) -> list[dict]:
        chosen = sorted(statements, key=lambda entry: -entry[key])[:TOP_STATEMENTS]
        return [{"query": entry["query"][:STATEMENT_TEXT_CHARS], "calls": entry["calls"],
                 "calls_per_request": _per(entry["calls"], requests),
                 "total_ms": round(entry["total_ms"], 3),
                 "mean_ms": _per(entry["total_ms"], entry["calls"]), "rows": entry["rows"]}
                for entry in chosen if entry[key] > 0]

    transactions = delta["xact_commit"] + delta["xact_rollback"]
    return {
        "available": True,
        "statements": total_calls,
        "statements_per_request": _per(total_calls, requests),
        "statement_ms_per_request": _per(sum(entry["total_ms"] for entry in statements), requests),
        "transactions_per_request": _per(transactions, requests),
        "rows_fetched_per_request": _per(delta["tup_fetched"], requests),
        "rows_written_per_request": _per(
            delta["tup_inserted"] + delta["tup_updated"] + delta["tup_deleted"], requests),
        "top_by_calls": top("calls"),
        "top_by_time": top("total_ms"),
    }


# --- LiteLLM's histograms -------------------------------------------------------------------


def _read_litellm(settings: LabSettings) -> dict[str, tuple[float, float]]:
    """(sum in seconds, count) of each LiteLLM latency histogram, over all label sets."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(settings.url(settings.proxy_port, "/metrics/"), timeout=PROBE_TIMEOUT_S,
                         headers={"Authorization": f"Bearer {settings.master_key}"})
    if response.status_code == 404:
        return {}  # the proxy mounts /metrics/ only with the Prometheus callback
    response.raise_for_status()
    wanted = {name: key for key, name in LITELLM_HISTOGRAMS_S.items()}
    figures: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name not in wanted:
            continue
        totals = figures.setdefault(wanted[family.name], [0.0, 0.0])
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                totals[0] += sample.value
            elif sample.name.endswith("_count"):
                totals[1] += sample.value
    return {key: (values[0], values[1]) for key, values in figures.items()}


def _litellm_figures(settings: LabSettings, probe: Probe, ok_requests: int) -> dict:
    source = "proxy /metrics/"
    if probe.litellm is None:
        return {"source": source, "error": probe.errors.get("litellm", "not read")}
    deadline = time.monotonic() + LITELLM_SETTLE_S
    while True:
        try:
            after = _read_litellm(settings)
        except Exception as error:
            return {"source": source, "error": _one_line(error)}
        counts = _litellm_deltas(probe.litellm, after)
        observed = counts.get("total_latency", (0.0, 0.0))[1]
        if observed >= ok_requests or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if not after:
        return {"source": source, "absent": "no LiteLLM latency histograms (Prometheus callback "
                                            "off)"}
    return {"source": source, "observed_requests": int(observed),
            "mean_ms": {key: _per(1000 * total_s, count)
                        for key, (total_s, count) in counts.items()}}


def _litellm_deltas(before: dict[str, tuple[float, float]],
                    after: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    return {key: (total - before.get(key, (0.0, 0.0))[0], count - before.get(key, (0.0, 0.0))[1])
            for key, (total, count) in after.items()}


# --- the raw table --------------------------------------------------------------------------


def client_figures(frame: pd.DataFrame) -> dict:
    """Client-side latency, proxy-reported latency from headers, and Little's law."""
    ok = frame[frame["ok"] == 1]
    mean_latency = _mean(ok["latency_ms"])
    streamed = "ttft_ms" in ok and ok["ttft_ms"].notna().any()
    proxy_response = _mean(ok["proxy_response_ms"]) if "proxy_response_ms" in ok else None
    duration_s = None
    if len(frame) and frame["sent_unix_s"].notna().all() and frame["finished_unix_s"].notna().all():
        duration_s = float(frame["finished_unix_s"].max() - frame["sent_unix_s"].min())
    rate = len(frame) / duration_s if duration_s else None
    all_mean_s = _mean(frame["latency_ms"])
    return {
        "mean_latency_ms": mean_latency,
        "mean_ttft_ms": _mean(ok["ttft_ms"]) if "ttft_ms" in ok else None,
        "mean_overhead_header_ms": _mean(ok["overhead_ms"]),
        "mean_proxy_response_header_ms": proxy_response,
        # A streamed answer's headers leave before its body: their duration is not the
        # request's, so no gap is computed for streams.
        "client_minus_proxy_header_ms": (
            None if proxy_response is None or mean_latency is None or streamed
            else round(mean_latency - proxy_response, 3)),
        "rate_rps": None if rate is None else round(rate, 3),
        # Little's law over every request, failed ones too: they were in flight as well.
        "mean_in_flight": (None if rate is None or all_mean_s is None
                           else round(rate * all_mean_s / 1000, 3)),
    }


# --- py-spy ---------------------------------------------------------------------------------


def profiler_binary() -> str | None:
    """py-spy from the lab's environment, else from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _start_profiler(pid: int, output: Path) -> subprocess.Popen | None:
    binary = profiler_binary()
    if binary is None:
        logger.warning("py-spy is not installed; no profile for this cell")
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    # --nonblocking: never pause the proxy to sample it, so profiling barely moves latency.
    command = [binary, "record", "--pid", str(pid), "--output", str(output), "--format",
               "flamegraph", "--rate", str(PROFILE_RATE_HZ), "--nonblocking", "--subprocesses"]
    log = (output.parent / "py-spy.log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop_profiler(probe: Probe, run_dir: Path | None) -> dict | None:
    if probe.profile_path is None:
        return None
    process = probe.profiler
    if process is None:
        return {"path": None, "error": "py-spy is not installed"}
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    path = probe.profile_path
    if not path.exists() or path.stat().st_size == 0:
        log = path.parent / "py-spy.log"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        return {"path": None,
                "error": f"py-spy wrote no profile (exit {process.returncode}): {tail}"}
    inside = run_dir is not None and path.is_relative_to(run_dir)
    shown = str(path.relative_to(run_dir)) if inside else str(path)
    return {"path": shown, "error": None}


# --- helpers --------------------------------------------------------------------------------


def mock_llm_environment() -> dict[str, str]:
    """The MOCK_LLM_* variables the stack's mock inherits from this process (it sets the
    model names itself).

    TODO: a MOCK_LLM_BEHAVIOURS_FILE is recorded by path only, not by content.
    """
    return {name: value for name, value in sorted(os.environ.items())
            if name.startswith("MOCK_LLM_") and name != "MOCK_LLM_MODELS"}


def _per(amount: float, count: float) -> float | None:
    return round(amount / count, 4) if count else None


def _mean(series: pd.Series) -> float | None:
    values = series.dropna()
    return round(float(values.mean()), 3) if len(values) else None


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]

