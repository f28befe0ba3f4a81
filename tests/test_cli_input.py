"""Bad input gets one line on stderr, exit code 2, and starts nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["matrix", "--user-mode", "bogus"], "unknown user mode 'bogus'"),
        (["matrix", "--key-mode", "everyone"], "unknown key mode 'everyone'"),
        (["matrix", "--requests", "0"], "requests"),
        (["matrix", "--users", "-3"], "users"),
        (["matrix", "--repeats", "0"], "repeats"),
        (["matrix", "--replicas", "0"], "--replicas: Input should be greater than or equal to 1"),
        (["matrix", "--users", "50", "--requests", "10"], "50 users need at least as many requests"),
        (["matrix", "--callbacks", "maybe"], "--callbacks takes on or off"),
        (["matrix", "--llm-latency-ms", "-5"], "latencies must be zero or positive"),
        (["matrix", "--llm-latency-ms", "fast"], "--llm-latency-ms takes whole milliseconds"),
        (["report", "/nonexistent/run"], "not a proxylab result directory"),
        (["import", "/nonexistent/log.txt"], "no such log file"),
        (["matrix", "--bogus"], "No such option: --bogus"),
        (["matrix", "--requests", "many"], "Invalid value for '--requests'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], expected: str, lab_env: dict) -> None:
    completed = run_cli(args, lab_env, timeout_s=120)

    assert completed.returncode == 2, completed.stderr
    error_lines = [line for line in completed.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1, completed.stderr
    assert expected in error_lines[0]
    assert "Traceback" not in completed.stderr
    # Nothing was started: no process is recorded in the lab's state.
    state = Path(lab_env["PROXYLAB_HOME"]) / "state" / "processes.json"
    assert not state.exists() or json.loads(state.read_text()) == []


def test_non_loopback_host_is_refused(lab_env: dict) -> None:
    completed = run_cli(["status"], {**lab_env, "PROXYLAB_HOST": "10.1.2.3"}, timeout_s=60)

    assert completed.returncode == 2
    assert "not a loopback address" in completed.stderr


def test_bad_import_file_names_the_file(tmp_path: Path, lab_env: dict) -> None:
    log = tmp_path / "garbage.txt"
    log.write_text("this is not a latency log\n")

    completed = run_cli(["import", str(log), "--out", str(tmp_path / "out")], lab_env, timeout_s=60)

    assert completed.returncode == 2
    assert "garbage.txt" in completed.stderr
    assert not (tmp_path / "out").exists()


def _one_line_error(completed, *expected: str) -> None:
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("proxylab: error: ")
    assert all(text in lines[0] for text in expected), lines[0]


@pytest.mark.parametrize(("command", "content"), [
    (["report"], '{"schema": "proxylab.summary", "cells": ['),  # cut short
    (["report"], ""),
    (["report"], "[1, 2]"),
    (["report"], "\udcff".encode("utf-8", "surrogateescape")),  # not UTF-8
    (["calibrate", "--from-run"], '{"schema": "proxylab.summary", "cells": ['),
])
def test_corrupt_summary_is_one_line_naming_the_file(tmp_path: Path, lab_env: dict,
                                                     content: str | bytes,
                                                     command: list[str]) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = run_dir / "summary.json"
    if isinstance(content, bytes):
        summary.write_bytes(content)
    else:
        summary.write_text(content)

    completed = run_cli([*command, str(run_dir)], lab_env, timeout_s=120)

    _one_line_error(completed, str(summary))


def test_compare_with_a_corrupt_summary_names_that_file(tmp_path: Path, lab_env: dict) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for run_dir in (good, bad):
        run_dir.mkdir()
    (good / "summary.json").write_text(json.dumps({"schema": "proxylab.summary",
                                                   "schema_version": 1, "cells": []}))
    (bad / "summary.json").write_text("{not json")

    completed = run_cli(["compare", str(good), str(bad)], lab_env, timeout_s=120)

    _one_line_error(completed, str(bad / "summary.json"), "cannot read the summary")


@pytest.mark.parametrize(("content", "found"), [("- name: a\n- name: b\n", "list"),
                                                ("just a sentence\n", "str")])
def test_scenario_whose_top_level_is_not_a_mapping_is_one_line(tmp_path: Path, lab_env: dict,
                                                               content: str, found: str) -> None:
    scenario = tmp_path / "listed.yaml"
    scenario.write_text(content)

    completed = run_cli(["scenario", "validate", str(scenario)], lab_env, timeout_s=120)

    _one_line_error(completed, str(scenario), f"found a {found} at the top level")
