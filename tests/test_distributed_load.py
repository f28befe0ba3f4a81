"""The locustfile run distributed, as Compose runs it: one master, two workers, on loopback.

The run must stop at the requested total (not once per worker), each worker must write its
own raw table, and user ids must not repeat across workers. Needs no stack: the load goes
straight to a mock started as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mock_process import free_port, running_mock

from proxylab.rawlog import read_raw

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO_ROOT / "locustfiles" / "chat.py"
USERS, TOTAL = 4, 60


@pytest.fixture()
def mock_url(tmp_path: Path) -> Iterator[str]:
    with running_mock(tmp_path, {"MOCK_LLM_LATENCY_MS": "20"}) as url:
        yield url


def test_master_and_two_workers_send_the_total_once(mock_url: str, tmp_path: Path) -> None:
    master_port = free_port()
    common = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--loglevel", "WARNING"]
    workers = [subprocess.Popen(common + ["--worker", "--master-host", "127.0.0.1",
                                          "--master-port", str(master_port)],
                                cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                                stderr=(tmp_path / f"worker-{n}.log").open("w"))
               for n in range(2)]
    try:
        master = subprocess.run(
            common + ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                      str(master_port), "--expect-workers", "2", "--headless", "--host", mock_url,
                      "--users", str(USERS), "--spawn-rate", str(USERS), "--run-time", "90s",
                      "--only-summary", "--total-requests", str(TOTAL), "--user-mode",
                      "sequential", "--raw-csv", str(tmp_path / "raw.csv"), "--config-id",
                      "distributed", "--exit-code-on-error", "0"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        for worker in workers:
            worker.wait(30)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)

    assert master.returncode == 0, master.stderr[-2000:]
    assert not (tmp_path / "raw.csv").exists()  # the master sends nothing, writes nothing
    tables = sorted(tmp_path.glob("raw.worker-*.csv"))
    assert [path.name for path in tables] == ["raw.worker-0.csv", "raw.worker-1.csv"]
    frame = pd.concat([read_raw(path) for path in tables])
    # The master stops at the total; requests that finish before its stop reaches the workers
    # land too: one per user in flight, and with a ~ms mock a few more while the message
    # travels (65 of 60 seen with 4 users). A worker that ignored the stop would send 60 more.
    assert TOTAL <= len(frame) <= TOTAL + 3 * USERS, len(frame)
    assert (frame["ok"] == 1).all(), frame["error"].unique()
    per_worker_users = [set(read_raw(path)["user_index"]) for path in tables]
    assert not per_worker_users[0] & per_worker_users[1]
    assert set().union(*per_worker_users) == set(range(1, USERS + 1))
