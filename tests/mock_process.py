"""The mock LLM as a subprocess on a free loopback port, for tests that need no stack."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MOCK_APP = REPO_ROOT / "services" / "mock_llm" / "app.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_mock(log_dir: Path, behaviour: dict[str, str]) -> Iterator[str]:
    """Start the mock with only ``behaviour``'s MOCK_LLM_* settings; yield its base URL."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOCK_LLM_")}
    env.update(behaviour)
    log_path = log_dir / "mock.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, str(MOCK_APP), "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("mock not healthy: " + log_path.read_text())
        yield url
    finally:
        process.terminate()
        process.wait(10)
