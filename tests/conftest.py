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
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROXYLAB = [sys.executable, "-m", "proxylab.cli"]
# Every stack-starting test module takes its ports from this base, each module a step of 100
# apart, so `PROXYLAB_TEST_PORT_OFFSET` moves the whole suite away from other labs at once.
TEST_PORT_OFFSET = int(os.environ.get("PROXYLAB_TEST_PORT_OFFSET", "700"))
ATTRIBUTION_TEST_PORT_OFFSET = TEST_PORT_OFFSET + 100
DASHBOARD_TEST_PORT_OFFSET = TEST_PORT_OFFSET + 200


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
