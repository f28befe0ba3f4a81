"""Shared fixtures: an isolated lab home and port range per test session.

Tests never touch the developer's own `.proxylab/` or its ports: each session gets a fresh
home in a temporary folder and its ports shifted by PROXYLAB_PORT_OFFSET.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROXYLAB = [sys.executable, "-m", "proxylab.cli"]
# Every stack-starting test module takes its ports from this base, each module a step of 100
# apart, so `PROXYLAB_TEST_PORT_OFFSET` moves the whole suite away from other labs at once.
TEST_PORT_OFFSET = int(os.environ.get("PROXYLAB_TEST_PORT_OFFSET", "700"))
ATTRIBUTION_TEST_PORT_OFFSET = TEST_PORT_OFFSET + 100
DASHBOARD_TEST_PORT_OFFSET = TEST_PORT_OFFSET + 200

# Figures tests measured (noise floors, coverage, power), as (test id, line). pytest's output
# capture hides what passing tests print, so these are shown in a section at the end.
MEASURED_FIGURES: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def lab_env() -> Iterator[dict[str, str]]:
    """Environment for running the CLI in isolation; reuses the built LiteLLM and toxiproxy.

    The home is not under pytest's tmp_path: pytest prunes old base folders, and a second
    pytest run on the machine could delete this one while a stack still uses it.
    """
    home = Path(tempfile.mkdtemp(prefix="proxylab-test-home-"))
    # Let the `postgres` account reach its cluster inside the home, so cleanup takes it too.
    home.chmod(0o755)
    shared_home = REPO_ROOT / ".proxylab"
    # Virtualenvs, binaries and tools are expensive to build and identical: link them in.
    for name in ("venvs", "bin", "tools"):
        if (shared_home / name).exists():
            (home / name).symlink_to(shared_home / name)
    env = {**os.environ, "PROXYLAB_HOME": str(home), "PROXYLAB_RESULTS_DIR": str(home / "results"),
           "PROXYLAB_PORT_OFFSET": str(TEST_PORT_OFFSET)}
    yield env
    # A test that failed half-way may have left its stack up.
    subprocess.run([*PROXYLAB, "down"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=120)
    if os.environ.get("PROXYLAB_KEEP_TEST_HOME") != "1":
        shutil.rmtree(home, ignore_errors=True)


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*PROXYLAB, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.fixture
def measured(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure (one or more lines) for the "measured figures" section."""
    def record(text: str) -> None:
        for line in text.splitlines() or [""]:
            MEASURED_FIGURES.append((request.node.nodeid, line))
        print(text)  # also in the captured output of a failing test
    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not MEASURED_FIGURES:
        return
    terminalreporter.section("measured figures")
    test_id = None
    for recorded_by, line in MEASURED_FIGURES:
        if recorded_by != test_id:
            test_id = recorded_by
            terminalreporter.write_line(test_id)
        terminalreporter.write_line(f"  {line}")
