"""The main job end to end on the real native stack: matrix, report, toxics, shutdown.

These tests start Postgres, Redis, toxiproxy, the mock LLM, Prometheus and the LiteLLM proxy
(about a minute each time the proxy starts on a 2-core machine), so they are marked `stack`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from conftest import PROXYLAB, REPO_ROOT, run_cli

pytestmark = pytest.mark.stack

THRESHOLDS_S = range(1, 11)


def _lab_processes(env: dict[str, str]) -> list[psutil.Process]:
    """Live processes that belong to this test's lab: recorded ones and any on its ports."""
    state = Path(env["PROXYLAB_HOME"]) / "state" / "processes.json"
    recorded = json.loads(state.read_text()) if state.exists() else []
    found = []
    for entry in recorded:
        try:
            process = psutil.Process(entry["pid"])
            if process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    home = env["PROXYLAB_HOME"]
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if home in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE and process.pid != os.getpid():
            found.append(process)
    return found


def _report_rows(report: str, heading: str) -> dict[str, list[str]]:
    """The table under `## heading` of report.md, as configuration -> cells of the row."""
    section = report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    return rows


def _expected_row(frame: pd.DataFrame) -> list[str]:
    """A report row recomputed from a raw table with plain numpy, independent of proxylab.stats."""
    ok = frame[frame["ok"] == 1]["latency_ms"].to_numpy()
    ordered = np.sort(ok)

    def lower_percentile(q: float) -> float:
        # Same definition as the original investigation: the value at floor((n - 1) * q).
        return ordered[int(np.floor((len(ordered) - 1) * q))]

    duration_s = frame["finished_unix_s"].max() - frame["sent_unix_s"].min()
    row = [str(len(frame)), str(int((frame["ok"] == 0).sum())), f"{len(frame) / duration_s:.1f}",
           f"{ok.mean() / 1000:.3f}", f"{lower_percentile(0.5) / 1000:.3f}",
           f"{lower_percentile(0.95) / 1000:.3f}", f"{lower_percentile(0.99) / 1000:.3f}",
           f"{ok.max() / 1000:.3f}"]
    for threshold_s in THRESHOLDS_S:
        count = int((ok > threshold_s * 1000).sum())
        row.append(f"{count} ({100 * count / len(ok):.1f}%)")
    return row


@pytest.fixture(scope="module")
def small_matrix(lab_env: dict[str, str]) -> Path:
    """2 callback settings x 2 user modes, a few hundred requests in all."""
    completed = run_cli(["matrix", "--callbacks", "off,on", "--user-mode", "none,sequential",
                         "--requests", "120", "--users", "6", "--warmup", "12", "--run-id", "small"],
                        lab_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "small"


def test_every_report_figure_equals_the_raw_table(small_matrix: Path) -> None:
    summary = json.loads((small_matrix / "summary.json").read_text())
    report = (small_matrix / "report.md").read_text()
    rows = _report_rows(report, "All requests")
    first_rows = _report_rows(report, "First request of each simulated user")

    assert summary["status"] == "complete"
    assert len(summary["cells"]) == 4
    assert "no proxy database" in report or "uses Postgres" in report
    for cell in summary["cells"]:
        frame = pd.read_csv(small_matrix / cell["raw_table"])
        assert len(frame) == 120
        assert rows[cell["config_id"]][2:] == _expected_row(frame)
        first = frame[frame["request_index"] == 1]
        assert len(first) == 6  # one first request per simulated user
        assert first_rows[cell["config_id"]][2:4] == [str(len(first)), str(int((first["ok"] == 0).sum()))]


def test_raw_table_follows_the_user_modes(small_matrix: Path) -> None:
    summary = json.loads((small_matrix / "summary.json").read_text())
    for cell in summary["cells"]:
        frame = pd.read_csv(small_matrix / cell["raw_table"])
        per_user = frame.groupby("user_index")["request_index"].apply(sorted)
        # Every simulated user sent its share, numbered 1..k without gaps.
        assert sorted(per_user.index) == list(range(1, 7))
        assert all(indices == list(range(1, 21)) for indices in per_user)
        assert (frame["finished_unix_s"] >= frame["sent_unix_s"]).all()
        assert frame["overhead_ms"].notna().mean() > 0.9  # LiteLLM's header was read


def test_metadata_records_versions_and_commit(small_matrix: Path) -> None:
    summary = json.loads((small_matrix / "summary.json").read_text())
    versions = summary["metadata"]["versions"]

    assert summary["schema_version"] == 1
    assert versions["litellm"] and versions["locust"] and versions["postgres"] and versions["redis"]
    assert re.fullmatch(r"[0-9a-f]{40}", summary["metadata"]["git"]["commit"])
    assert summary["database"]["available"] in (True, False)


def test_matrix_leaves_no_process_behind(small_matrix: Path, lab_env: dict[str, str]) -> None:
    assert _lab_processes(lab_env) == []


def test_provider_latency_toxic_raises_average_by_its_value(lab_env: dict[str, str]) -> None:
    # One user: requests never queue behind each other in the proxy, so the toxic's 200 ms
    # is neither hidden by nor overlapped with the proxy's own CPU time.
    completed = run_cli(["matrix", "--callbacks", "off", "--user-mode", "none", "--llm-latency-ms", "0,200",
                         "--requests", "100", "--users", "1", "--warmup", "20", "--run-id", "toxic"], lab_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "toxic" / "summary.json").read_text())
    average_ms = {cell["config"]["llm_latency_ms"]: cell["statistics"]["all"]["avg_ms"]
                  for cell in summary["cells"]}

    added_ms = average_ms[200] - average_ms[0]
    assert 180 <= added_ms <= 220, f"a 200 ms toxic added {added_ms:.1f} ms to the average {average_ms}"


def test_interrupted_matrix_keeps_finished_cells_and_stops_everything(lab_env: dict[str, str]) -> None:
    run_dir = Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "interrupted"
    matrix = subprocess.Popen(
        [*PROXYLAB, "matrix", "--callbacks", "off", "--user-mode", "none,sequential,random",
         "--requests", "400", "--users", "4", "--warmup", "2", "--run-id", "interrupted"],
        env=lab_env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            summary_path = run_dir / "summary.json"
            if summary_path.exists() and json.loads(summary_path.read_text())["cells"]:
                break
            assert matrix.poll() is None, matrix.communicate()[1][-2000:]
            time.sleep(0.5)
        time.sleep(2)  # now inside the second cell
        matrix.send_signal(signal.SIGTERM)
        _, stderr = matrix.communicate(timeout=120)
    finally:
        if matrix.poll() is None:
            matrix.kill()

    summary = json.loads((run_dir / "summary.json").read_text())
    assert matrix.returncode == 130, stderr[-2000:]
    assert summary["status"] == "interrupted"
    assert len(summary["cells"]) >= 1
    assert (run_dir / summary["cells"][0]["raw_table"]).exists()
    assert "interrupted" in (run_dir / "report.md").read_text()
    assert _lab_processes(lab_env) == []


def test_resume_runs_only_the_unfinished_cells(lab_env: dict[str, str]) -> None:
    run_dir = Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "interrupted"
    if not (run_dir / "summary.json").exists():
        pytest.skip("needs the run interrupted by the previous test")
    before = json.loads((run_dir / "summary.json").read_text())
    finished_before = {cell["cell_id"]: cell["started_at"] for cell in before["cells"]}

    completed = run_cli(["matrix", "--resume", str(run_dir)], lab_env)

    assert completed.returncode == 0, completed.stderr[-3000:]
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["status"] == "complete"
    assert sorted(cell["cell_id"] for cell in after["cells"]) == sorted(after["order"])
    # Cells finished before the interruption were kept as they were, not run again.
    for cell in after["cells"]:
        if cell["cell_id"] in finished_before:
            assert cell["started_at"] == finished_before[cell["cell_id"]]
    assert len(after["resumed_at"]) == 1
    assert _lab_processes(lab_env) == []


def test_killed_cli_then_down_leaves_nothing(lab_env: dict[str, str]) -> None:
    up = subprocess.Popen([*PROXYLAB, "up"], env=lab_env, cwd=REPO_ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = Path(lab_env["PROXYLAB_HOME"]) / "state" / "processes.json"
    deadline = time.monotonic() + 300
    # Kill the CLI with SIGKILL once a few services are recorded: no cleanup code can run.
    while time.monotonic() < deadline and up.poll() is None:
        if state.exists() and len(json.loads(state.read_text() or "[]")) >= 3:
            break
        time.sleep(0.2)
    up.kill()
    up.wait()

    down = run_cli(["down"], lab_env, timeout_s=120)

    assert down.returncode == 0, down.stderr
    assert _lab_processes(lab_env) == []


def test_busy_port_is_one_line_and_nothing_left(lab_env: dict[str, str]) -> None:
    import socket

    redis_port = 16379 + int(lab_env["PROXYLAB_PORT_OFFSET"])
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", redis_port))
        squatter.listen()
        completed = run_cli(["up"], lab_env, timeout_s=300)

    assert completed.returncode == 2
    assert f"port {redis_port} for redis is already in use" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert _lab_processes(lab_env) == []
