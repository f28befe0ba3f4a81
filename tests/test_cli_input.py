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
