"""Attribution and faults against known workloads on the real services (no proxy).

Redis, Postgres, toxiproxy and the mock run as the native stack starts them (on ports shifted
by 500, see lab500.py). A workload stands in for the proxy: it sends a known number of Redis
commands or SQL statements per "request" through the toxiproxy hops, and the attribution
probe, taken before and after as in a matrix cell, must read that number back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import psycopg
import pytest
import redis

from lab500 import PORT_OFFSET, make_home, stop_and_remove
from proxylab import attribution, attribution_report, state_reset, toxics
from proxylab.settings import LabSettings
from proxylab.stack import NativeStack
from proxylab.toxics import parse_scenario

pytestmark = pytest.mark.stack

REQUESTS = 30
REDIS_COMMANDS = 3
REDIS_LATENCY_MS = 15
# Commands per request must come back exactly (the probe subtracts its own INFO); allow a
# stray background command or two over the whole run.
COMMANDS_TOLERANCE = 0.05
# Round trips implied by a latency toxic, from mean latencies of 30 requests each.
ROUND_TRIPS_TOLERANCE_SHARE = 0.15
ROUND_TRIPS_TOLERANCE = 0.2


@pytest.fixture(scope="module")
def services() -> Iterator[LabSettings]:
    """Postgres, Redis, the mock, toxiproxy and Prometheus: the stack without the proxy."""
    home = make_home()
    settings = LabSettings(home=home, results_dir=home / "results", port_offset=PORT_OFFSET)
    stack = NativeStack(settings)
    try:
        stack.up(proxy=None)
        yield settings
    finally:
        stack.down()
        stop_and_remove(home)


@pytest.fixture(autouse=True)
def no_toxics(services: LabSettings) -> Iterator[None]:
    toxics.apply(services, ())
    yield
    toxics.apply(services, ())


def _frame(sent: list[float], latencies_ms: list[float]) -> pd.DataFrame:
    """A raw table of requests sent one after another."""
    latencies = np.array(latencies_ms)
    return pd.DataFrame({"ok": 1, "latency_ms": latencies, "sent_unix_s": sent,
                         "finished_unix_s": np.array(sent) + latencies / 1000,
                         "overhead_ms": np.nan, "ttft_ms": np.nan, "proxy_response_ms": np.nan})


def _redis_workload(settings: LabSettings, pipelined: bool) -> pd.DataFrame:
    """REQUESTS requests of REDIS_COMMANDS INCRs each, through the Redis hop."""
    client = redis.Redis(host=settings.host, port=settings.redis_hop_port, lib_name=None,
                         lib_version=None, socket_timeout=10)
    sent, latencies_ms = [], []
    try:
        for index in range(REQUESTS):
            sent.append(time.time())
            started = time.perf_counter()
            if pipelined:
                pipe = client.pipeline(transaction=False)
                for command in range(REDIS_COMMANDS):
                    pipe.incr(f"attribution-test-{command}")
                pipe.execute()
            else:
                for command in range(REDIS_COMMANDS):
                    client.incr(f"attribution-test-{command}")
            latencies_ms.append((time.perf_counter() - started) * 1000)
    finally:
        client.close()
    return _frame(sent, latencies_ms)


def _attributed_cell(settings: LabSettings, scenario: str, pipelined: bool) -> dict:
    toxics.apply(settings, parse_scenario(scenario))
    probe = attribution.begin(settings, database=False, database_reason="no DB")
    frame = _redis_workload(settings, pipelined)
    figures = attribution.finish(settings, probe, frame)
    config_id = f"pipelined-{pipelined}" + ("" if scenario == "none" else f".{scenario}")
    return {"cell_id": f"{config_id}.r1", "config_id": config_id,
            "config": {"pipelined": pipelined, "toxics": scenario},
            "statistics": {"all": {"avg_ms": float(frame["latency_ms"].mean())}},
            "attribution": figures}


def test_redis_commands_and_round_trips_of_a_known_workload(services: LabSettings) -> None:
    cells = [_attributed_cell(services, scenario, pipelined)
             for pipelined in (False, True)
             for scenario in ("none", f"redis:latency={REDIS_LATENCY_MS}")]

    commands = {cell["cell_id"]: cell["attribution"]["redis"] for cell in cells}
    rows = {row["config_id"]: row for row in attribution_report.critical_path(cells)}
    print({name: (figures["commands_per_request"], figures["by_command"])
           for name, figures in commands.items()})
    print({name: (row["added_ms"], row["round_trips"]) for name, row in rows.items()})

    for name, figures in commands.items():
        assert figures["commands_per_request"] == pytest.approx(
            REDIS_COMMANDS, abs=COMMANDS_TOLERANCE), f"{name}: {figures}"
        assert list(figures["by_command"]) == ["incrby"], f"{name}: {figures['by_command']}"
    # One at a time, each command waits for its own round trip; pipelined, all share one.
    for pipelined, expected in ((False, REDIS_COMMANDS), (True, 1)):
        row = rows[f"pipelined-{pipelined}.redis:latency={REDIS_LATENCY_MS}"]
        allowed = max(ROUND_TRIPS_TOLERANCE, ROUND_TRIPS_TOLERANCE_SHARE * expected)
        assert abs(row["round_trips"] - expected) <= allowed, (
            f"pipelined={pipelined}: {row['round_trips']:.2f} round trips per request "
            f"(+{row['added_ms']:.1f} ms), expected {expected} +- {allowed:.2f}")


def test_database_statements_transactions_and_rows_of_a_known_workload(
        services: LabSettings) -> None:
    # The proxy has no database here, but Postgres runs: the DB probe is checked directly.
    s = services
    connect = dict(host=s.host, port=s.postgres_hop_port, user=s.postgres_user,
                   password=s.postgres_password, dbname=s.postgres_db, autocommit=True)
    with psycopg.connect(**connect) as setup:
        setup.execute("DROP TABLE IF EXISTS attribution_test")
        setup.execute("CREATE TABLE attribution_test (id int PRIMARY KEY, v int NOT NULL)")
        setup.execute("INSERT INTO attribution_test SELECT g, 0 FROM generate_series(1, 10) g")
    # No server-side prepared statements: preparing one is a transaction of its own.
    workload = psycopg.connect(**connect, prepare_threshold=None)
    probe = attribution.begin(s, database=True, pg_settle_s=1.5)
    sent, latencies_ms = [], []
    # Four statements per request, each its own transaction (autocommit).
    for index in range(REQUESTS):
        key = index % 10 + 1
        sent.append(time.time())
        started = time.perf_counter()
        workload.execute("SELECT v FROM attribution_test WHERE id = %s", (key,)).fetchone()
        workload.execute("UPDATE attribution_test SET v = v + 1 WHERE id = %s", (key,))
        workload.execute("SELECT count(*) FROM attribution_test").fetchone()
        workload.execute("SELECT 1").fetchone()
        latencies_ms.append((time.perf_counter() - started) * 1000)
    workload.close()  # a backend flushes its counters when it exits

    figures = attribution.finish(s, probe, _frame(sent, latencies_ms), pg_settle_s=1.5)["database"]

    print({key: value for key, value in figures.items() if not key.startswith("top")})
    assert figures["available"] and "error" not in figures, figures
    assert figures["statements_per_request"] == pytest.approx(4, abs=COMMANDS_TOLERANCE), figures
    # The workload's own connection start is a transaction too: 1 over 30 requests.
    assert figures["transactions_per_request"] == pytest.approx(4, abs=0.1), figures
    assert figures["rows_written_per_request"] == pytest.approx(1, abs=0.05), figures
    assert figures["rows_fetched_per_request"] >= 1, figures  # the primary-key look-up
    top = figures["top_by_calls"]
    assert len(top) == 4 and all(entry["calls"] == REQUESTS for entry in top), top
    assert any("UPDATE attribution_test" in entry["query"] for entry in top), top


def test_no_database_says_so_rather_than_zero(services: LabSettings) -> None:
    probe = attribution.begin(services, database=False, database_reason="no proxy database: x")
    figures = attribution.finish(services, probe, _frame([time.time()], [1.0]))

    assert figures["database"] == {"available": False, "reason": "no proxy database: x"}
    assert "error" in figures["litellm"]  # no proxy running: said, not zero


# Scenario -> expected added ms per small round trip, by hop (None: the hop must fail).
CALIBRATIONS = [
    ("redis:latency=30", {"redis": 30, "llm": 0, "postgres": 0}),
    ("redis:latency=20:dir=upstream+llm:latency=10:dir=both",
     {"redis": 20, "llm": 20, "postgres": 0}),
    ("postgres:latency=25:jitter=4", {"redis": 0, "llm": 0, "postgres": 25}),
    ("redis:down+llm:reset_peer+postgres:timeout=300",
     {"redis": None, "llm": None, "postgres": None}),
]
# Timer and scheduling noise on top of the toxic; jitter of 4 ms moves a median of ten less.
CALIBRATION_TOLERANCE_MS = 4.0


@pytest.mark.parametrize(("scenario", "expected"), CALIBRATIONS, ids=[c[0] for c in CALIBRATIONS])
def test_calibration_observes_each_hops_toxic(services: LabSettings, scenario: str,
                                              expected: dict) -> None:
    toxics.apply(services, parse_scenario(scenario))
    started = time.monotonic()

    result = toxics.calibrate(services, parse_scenario(scenario))

    elapsed_s = time.monotonic() - started
    hops = {entry["hop"]: entry for entry in result["hops"]}
    print({hop: (entry["added_ms"], entry["error"]) for hop, entry in hops.items()})
    for hop, added_ms in expected.items():
        if added_ms is None:
            assert hops[hop]["error"], f"{hop} should fail under {scenario}: {hops[hop]}"
        else:
            assert hops[hop]["error"] is None, hops[hop]
            assert abs(hops[hop]["added_ms"] - added_ms) <= CALIBRATION_TOLERANCE_MS, (
                f"{hop}: +{hops[hop]['added_ms']} ms, expected +{added_ms} ms")
    assert elapsed_s < 20, f"calibration took {elapsed_s:.1f} s"


def test_toxics_are_read_back_from_toxiproxy(services: LabSettings) -> None:
    toxics.apply(services, parse_scenario("redis:latency=5:jitter=1:dir=both+llm:bandwidth=10"))

    active = sorted((proxy, toxic["type"], toxic["stream"]) for proxy, toxic in
                    toxics.active_toxics(services))

    assert active == [("proxy_to_llm", "bandwidth", "downstream"),
                      ("proxy_to_redis", "latency", "downstream"),
                      ("proxy_to_redis", "latency", "upstream")]


def test_bandwidth_slows_a_large_reply(services: LabSettings) -> None:
    value = b"x" * 200_000
    direct = redis.Redis(host=services.host, port=services.redis_port)
    direct.set("attribution-test-large", value)
    toxics.apply(services, parse_scenario("redis:bandwidth=400"))  # KB/s: 200 kB in ~0.5 s
    hop = redis.Redis(host=services.host, port=services.redis_hop_port, socket_timeout=10)
    hop.ping()

    started = time.perf_counter()
    assert hop.get("attribution-test-large") == value
    elapsed_s = time.perf_counter() - started

    assert 0.4 <= elapsed_s <= 1.0, f"200 kB at 400 KB/s took {elapsed_s:.2f} s"
    hop.close()
    direct.close()


def test_timeout_toxic_cuts_the_connection_after_its_time(services: LabSettings) -> None:
    toxics.apply(services, parse_scenario("redis:timeout=300"))
    client = redis.Redis(host=services.host, port=services.redis_hop_port, socket_timeout=5)

    started = time.perf_counter()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    elapsed_s = time.perf_counter() - started

    assert 0.25 <= elapsed_s <= 1.5, f"cut after {elapsed_s:.2f} s"


def test_state_reset_empties_what_requests_wrote_and_keeps_the_labs_end_users(
        services: LabSettings) -> None:
    s = services
    connect = dict(host=s.host, port=s.postgres_port, user=s.postgres_user,
                   password=s.postgres_password, dbname=s.postgres_db, autocommit=True)
    tables = ('"LiteLLM_SpendLogs"', '"LiteLLM_DailyUserSpend"', '"LiteLLM_EndUserTable"',
              '"LiteLLM_VerificationToken"')
    with psycopg.connect(**connect) as connection:
        # The columns the reset touches, as LiteLLM's schema.prisma names them.
        connection.execute('CREATE TABLE "LiteLLM_SpendLogs" (request_id text, spend float)')
        connection.execute('CREATE TABLE "LiteLLM_DailyUserSpend" (id text, spend float)')
        connection.execute('CREATE TABLE "LiteLLM_EndUserTable" (user_id text, spend float)')
        connection.execute('CREATE TABLE "LiteLLM_VerificationToken" (token text, spend float)')
        connection.execute("INSERT INTO \"LiteLLM_SpendLogs\" VALUES ('r1', 0.1), ('r2', 0.2)")
        connection.execute("INSERT INTO \"LiteLLM_DailyUserSpend\" VALUES ('d1', 0.3)")
        connection.execute("INSERT INTO \"LiteLLM_EndUserTable\" VALUES ('kept-1', 2.0), "
                           "('seen-in-a-cell', 1.0), ('seen-too', 1.0)")
        connection.execute("INSERT INTO \"LiteLLM_VerificationToken\" VALUES ('sk-1', 5.0)")
    cache = redis.Redis(host=s.host, port=s.redis_port)
    try:
        cache.set("router-usage", 3)
        without = state_reset.reset_between_cells(s, database_available=False,
                                                  database_reason="no Prisma engines")
        assert without == {"redis": "flushed", "database": "no DB: no Prisma engines"}
        assert cache.get("router-usage") is None
        with psycopg.connect(**connect) as connection:
            assert connection.execute('SELECT count(*) FROM "LiteLLM_SpendLogs"').fetchone() == (2,)

        cache.set("router-usage", 3)
        record = state_reset.reset_between_cells(s, database_available=True, database_reason="",
                                                 kept_end_users=["kept-1"])
        assert cache.get("router-usage") is None
        assert record["database"] == {
            "truncated": ["LiteLLM_SpendLogs", "LiteLLM_DailyUserSpend"],
            "spend_zeroed": ["LiteLLM_VerificationToken", "LiteLLM_EndUserTable"],
            "end_users_removed": 2, "end_users_kept": 1}
        with psycopg.connect(**connect) as connection:
            assert connection.execute('SELECT count(*) FROM "LiteLLM_SpendLogs"').fetchone() == (0,)
            assert connection.execute(
                'SELECT user_id, spend FROM "LiteLLM_EndUserTable"').fetchall() == [("kept-1", 0.0)]
            assert connection.execute(
                'SELECT spend FROM "LiteLLM_VerificationToken"').fetchall() == [(0.0,)]
    finally:
        with psycopg.connect(**connect) as connection:
            connection.execute("DROP TABLE IF EXISTS " + ", ".join(tables))
