"""Shared fixtures: an isolated lab home and port range per test session.

Tests never touch the developer's own `.proxylab/` or its ports: each session gets a fresh
home in a temporary folder and its ports shifted by PROXYLAB_PORT_OFFSET.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PROXYLAB = [sys.executable, "-m", "proxylab.cli"]
TEST_PORT_OFFSET = int(os.environ.get("PROXYLAB_TEST_PORT_OFFSET", "700"))


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for running the CLI in isolation; reuses the built LiteLLM and toxiproxy."""
    home = tmp_path_factory.mktemp("lab-home")
    shared_home = REPO_ROOT / ".proxylab"
    # Virtualenvs, binaries and tools are expensive to build and identical: link them in.
    for name in ("venvs", "bin", "tools"):
        if (shared_home / name).exists():
            (home / name).symlink_to(shared_home / name)
    env = {**os.environ, "PROXYLAB_HOME": str(home), "PROXYLAB_RESULTS_DIR": str(home / "results"),
           "PROXYLAB_PORT_OFFSET": str(TEST_PORT_OFFSET)}
    return env


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*PROXYLAB, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout_s)
