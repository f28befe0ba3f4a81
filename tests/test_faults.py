"""Fault scenarios and attribution figures without a stack: parsing, plans, report sections."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import REPO_ROOT
from proxylab import attribution, attribution_report, report
from proxylab.plan import MatrixPlan
from proxylab.toxics import Toxic, parse_scenario, scenario_spec


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", ()),
        ("redis:latency=5", (Toxic("redis", "latency", 5),)),
        ("redis:latency=5:jitter=2:dir=both",
         (Toxic("redis", "latency", 5, jitter_ms=2, direction="both"),)),
        ("llm:bandwidth=64:dir=upstream", (Toxic("llm", "bandwidth", 64, direction="upstream"),)),
        ("postgres:timeout=0", (Toxic("postgres", "timeout", 0),)),
        ("llm:reset_peer:toxicity=0.5", (Toxic("llm", "reset_peer", 0, toxicity=0.5),)),
        ("redis:down+llm:latency=100",
         (Toxic("redis", "down"), Toxic("llm", "latency", 100))),
    ],
)
def test_scenarios_parse_and_print_back(text: str, expected: tuple) -> None:
    parsed = parse_scenario(text)
    assert parsed == expected
    assert parse_scenario(scenario_spec(parsed)) == parsed


def test_toxics_become_toxiproxy_bodies_per_direction() -> None:
    (both,) = parse_scenario("redis:latency=5:jitter=2:dir=both")
    (down,) = parse_scenario("llm:down")

    bodies = both.api_bodies()

    assert [body["stream"] for body in bodies] == ["upstream", "downstream"]
    assert all(body["attributes"] == {"latency": 5, "jitter": 2} for body in bodies)
    assert both.expected_added_ms() == 10.0  # a round trip crosses each direction once
    assert down.api_bodies() == [] and down.expected_added_ms() is None
    assert Toxic("redis", "latency", 5, toxicity=0.5).expected_added_ms() is None


@pytest.mark.parametrize(
    ("toxic", "expected"),
    [
        ("redis:latncy=5", "unknown kind 'latncy'"),
        ("cache:latency=5", "unknown hop 'cache'"),
        ("redis:latency", "latency needs a value in ms"),
        ("redis:latency=1.5", "latency takes a whole number"),
        ("redis:latency=5:dir=down", "dir takes downstream, upstream, both"),
        ("redis:timeout=5:jitter=1", "unknown option 'jitter' for timeout"),
        ("llm:latency=5:toxicity=3", "toxicity takes a share from 0 to 1"),
        ("redis:latency=5+redis:latency=3", "latency on the redis hop twice"),
        ("redis:down:dir=both", "down takes no value and no options"),
        ("redis", "write HOP:KIND"),
    ],
)
def test_bad_toxic_is_one_line_and_exit_2(toxic: str, expected: str, tmp_path) -> None:
    env = {"PROXYLAB_HOME": str(tmp_path), "PROXYLAB_RESULTS_DIR": str(tmp_path / "results"),
           "PATH": "/usr/bin:/bin"}
    completed = subprocess.run([sys.executable, "-m", "proxylab.cli", "matrix", "--toxic", toxic],
                               env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], completed.stderr
    assert not (tmp_path / "state" / "processes.json").exists()


def test_each_toxic_scenario_is_a_configuration_with_its_own_proxy() -> None:
    plan = MatrixPlan(callbacks=[False], user_modes=["none"],
                      toxics=["none", "redis:latency=5:jitter=0", "llm:down"])

    configs = plan.configurations()

    assert [config.toxics for config in configs] == ["none", "redis:latency=5", "llm:down"]
    assert len({config.proxy_group() for config in configs}) == 3
    assert configs[1].config_id.endswith(".faults-redis-latency5")
    with pytest.raises(ValueError, match="repeats a scenario"):
        MatrixPlan(toxics=["redis:latency=5", "redis:latency=5:jitter=0"])
    with pytest.raises(ValueError, match="both delay the llm hop"):
        MatrixPlan(toxics=["llm:latency=5"], llm_latencies_ms=[100])


def _frame(latencies_ms: list[float], ok: list[int] | None = None, users: int = 1) -> pd.DataFrame:
    """A raw table of requests sent back to back by `users` users."""
    latencies = np.array(latencies_ms, dtype=float)
    ok = ok or [1] * len(latencies)
    per_user = [latencies[index::users] for index in range(users)]
    sent, finished = [], []
    for series in per_user:
        clock = 1000.0
        for latency_ms in series:
            sent.append(clock)
            clock += latency_ms / 1000
            finished.append(clock)
    return pd.DataFrame({"ok": ok, "latency_ms": np.concatenate(per_user),
                         "sent_unix_s": sent, "finished_unix_s": finished,
                         "overhead_ms": 5.0, "ttft_ms": np.nan, "proxy_response_ms": 80.0})


def test_littles_law_and_header_gap_from_the_raw_table() -> None:
    # Four users back to back, 100 ms each: four requests in flight at any time.
    figures = attribution.client_figures(_frame([100.0] * 40, users=4))

    assert figures["mean_in_flight"] == pytest.approx(4.0, rel=0.01)
    assert figures["rate_rps"] == pytest.approx(40.0, rel=0.01)
    assert figures["client_minus_proxy_header_ms"] == pytest.approx(20.0)
    assert figures["mean_ttft_ms"] is None


def test_redis_delta_drops_the_probes_own_info() -> None:
    before = {"get": 10, "info": 4}
    after = {"get": 40, "info": 5, "set": 3, "ping": 0}

    assert attribution.redis_delta(before, after) == {"get": 30, "set": 3}


def test_database_figures_per_request() -> None:
    statements = [{"query": "SELECT a", "calls": 30, "total_ms": 3.0, "rows": 30},
                  {"query": "UPDATE b", "calls": 10, "total_ms": 9.0, "rows": 10}]
    delta = {"xact_commit": 40, "xact_rollback": 0, "tup_fetched": 50, "tup_returned": 60,
             "tup_inserted": 0, "tup_updated": 10, "tup_deleted": 0}

    figures = attribution.database_figures(statements, delta, requests=10)

    assert figures["statements_per_request"] == 4.0
    assert figures["transactions_per_request"] == 4.0
    assert figures["rows_fetched_per_request"] == 5.0
    assert [entry["query"] for entry in figures["top_by_calls"]] == ["SELECT a", "UPDATE b"]
    assert [entry["query"] for entry in figures["top_by_time"]] == ["UPDATE b", "SELECT a"]


def _cell(config_id: str, toxics: str, avg_ms: float, redis_per_request: float) -> dict:
    return {
        "cell_id": f"{config_id}.r1", "config_id": config_id, "repeat": 1,
        "config": {"callbacks": False, "user_mode": "none", "toxics": toxics},
        "statistics": {"all": {"avg_ms": avg_ms}},
        "attribution": {
            "redis": {"commands_per_request": redis_per_request, "server_us_per_request": 10.0,
                      "by_command": {"get": {"calls": 10, "per_request": redis_per_request,
                                             "server_us_per_call": 1.0}}},
            "database": {"available": False, "reason": "no proxy database: no engines"},
            "litellm": {"source": "proxy /metrics/", "absent": "callbacks off"},
            "client": {"mean_latency_ms": avg_ms, "mean_in_flight": 1.0},
            "profile": None,
        },
    }


def test_report_names_missing_db_and_implied_round_trips() -> None:
    summary = {"run_id": "t", "status": "complete", "started_at": "x", "order": ["a", "b"],
               "database": {"reason": "no proxy database"},
               "calibration": [{"toxics": "redis:latency=20", "hops": [
                   {"hop": "redis", "probe": "PING", "toxics": "redis:latency=20",
                    "expected_added_ms": 20.0, "direct_ms": 0.2, "via_hop_ms": 9.0,
                    "added_ms": 8.8, "samples": 10, "error": None}]}],
               "cells": [_cell("base", "none", 50.0, 3.0),
                         _cell("slow", "redis:latency=20", 110.0, 3.0)]}

    rows = attribution_report.critical_path(summary["cells"])
    text = "\n".join(attribution_report.markdown_sections(summary))

    assert rows[0]["round_trips"] == pytest.approx(3.0)
    assert "no DB" in text and "| 0.00 |" not in text.split("Work per request")[1].split("\n")[3]
    assert "redis hop: latency 20 ms on responses" in text
    # The calibration fell short of the toxic: said next to the table.
    assert "WARNING: the redis hop under `redis:latency=20` added 8.8 ms" in text


def test_report_without_attribution_is_unchanged() -> None:
    summary = {"run_id": "t", "status": "complete", "started_at": "x", "order": [], "cells": []}

    assert attribution_report.markdown_sections(summary) == []
    assert "Where the time goes" not in report.render_markdown(summary)


def test_background_share_is_subtracted_from_the_per_request_figure() -> None:
    # 100 requests counted 700 commands in 20 s; idle, the proxy sends 5 commands a second.
    figures = attribution.background_figures(700, 100, 20.0, 5.0)

    assert figures == {"background_commands_per_s": 5.0, "background_commands_in_window": 100.0,
                       "commands_per_request_less_background": 6.0}
    # A background larger than the count leaves nothing, never a negative count.
    assert attribution.background_figures(50, 10, 20.0, 5.0)[
        "commands_per_request_less_background"] == 0.0
    assert attribution.background_figures(700, 100, 20.0, None) == {
        "background_commands_per_s": None, "background_commands_in_window": None,
        "commands_per_request_less_background": None}


class _FakeClock:
    """time.sleep advances time.monotonic, so an idle window takes no real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_begin_measures_the_idle_rate_and_counts_the_cell_from_after_it(monkeypatch) -> None:
    clock = _FakeClock()
    # Before the idle window, after it (6 background GETs + the probe's INFO), after the load.
    readings = iter([{"get": 10, "info": 1}, {"get": 16, "info": 2},
                     {"get": 16 + 300 + 12, "info": 3}])
    monkeypatch.setattr(attribution, "time", clock)
    monkeypatch.setattr(attribution, "_read_redis", lambda _s: (
        (calls := next(readings)), {name: 0 for name in calls}))
    for source in ("_read_litellm", "read_mock_calls"):
        monkeypatch.setattr(attribution, source, lambda _s: {})

    probe = attribution.begin(None, database=False, idle_window_s=3.0)
    clock.sleep(6.0)  # the cell's load: 100 requests of 3 GETs, plus 12 background GETs
    figures = attribution._redis_figures(None, probe, requests=100)

    assert probe.background_redis_per_s == pytest.approx(2.0)
    assert figures["commands"] == 312 and figures["commands_per_request"] == 3.12
    assert figures["background_commands_in_window"] == 12.0
    assert figures["commands_per_request_less_background"] == pytest.approx(3.0)


def test_report_shows_background_beside_the_per_request_commands() -> None:
    cell = _cell("base", "none", 50.0, 3.12)
    cell["attribution"]["redis"].update({"background_commands_per_s": 2.0,
                                         "background_commands_in_window": 12.0,
                                         "commands_per_request_less_background": 3.0})
    summary = {"run_id": "t", "status": "complete", "started_at": "x", "order": ["base.r1"],
               "database": {"reason": "no proxy database"}, "cells": [cell]}

    text = "\n".join(attribution_report.markdown_sections(summary))
    work = text.split("Work per request:")[1]
    header, _rule, row = work.strip().splitlines()[:3]
    columns = dict(zip([c.strip() for c in header.strip("|").split("|")],
                       [c.strip() for c in row.strip("|").split("|")]))

    assert columns["Redis commands"] == "3.12"
    assert columns["Redis background /s"] == "2.00"
    assert columns["Redis less background"] == "3.00"
    assert "its expected share of the cell's window is subtracted" in text
