"""Runs one matrix cell's load: Locust as a subprocess, watched for CPU and time.

Locust runs headless in its own process so that the lab's process, the proxy and the
generator never share an interpreter; the generator's CPU is measured from outside, since
a saturated generator makes every latency look worse than it is.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from proxylab.errors import LabError
from proxylab.procs import die_with_parent
from proxylab.settings import REPO_ROOT, LabSettings

logger = logging.getLogger(__name__)

LOCUSTFILE = REPO_ROOT / "locustfiles" / "chat.py"
CPU_SAMPLE_S = 0.5


@dataclass(frozen=True)
class LoadSpec:
    """What one cell sends: how many requests, from how many simulated users, in which modes."""

    config_id: str
    total_requests: int
    users: int
    spawn_rate: float
    user_mode: str
    key_mode: str
    max_run_time_s: int
    keys_file: Path | None = None
    users_file: Path | None = None
    stream: bool = False  # streamed answers: the raw table gets each request's ttft_ms
    model_mix: str = ""  # MODEL=SHARE,...: each request draws its model; empty: the lab's model
    model_mix_seed: int = 1


@dataclass(frozen=True)
class LoadResult:
    raw_path: Path
    wall_s: float
    generator_cpu_percent: float  # of one core, averaged over the run
    proxy_cpu_s: float | None  # CPU seconds the proxy process used during the run
    proxy_peak_rss_bytes: int | None
    exit_code: int
    timed_out: bool


def locust_command(settings: LabSettings, spec: LoadSpec, raw_path: Path, log_path: Path) -> list[str]:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", settings.url(settings.proxy_port),
        "--users", str(spec.users), "--spawn-rate", str(spec.spawn_rate),
        "--run-time", f"{spec.max_run_time_s}s", "--stop-timeout", "30",
        "--only-summary", "--loglevel", "WARNING", "--logfile", str(log_path),
        "--exit-code-on-error", "0",
        "--total-requests", str(spec.total_requests), "--user-mode", spec.user_mode,
        "--key-mode", spec.key_mode, "--api-key", settings.master_key, "--model", settings.model_name,
        "--raw-csv", str(raw_path), "--config-id", spec.config_id,
    ]
    if spec.keys_file:
        command += ["--keys-file", str(spec.keys_file)]
    if spec.users_file:
        command += ["--users-file", str(spec.users_file)]
    if spec.stream:
        command.append("--stream")
    if spec.model_mix:
        command += ["--model-mix", spec.model_mix, "--model-mix-seed", str(spec.model_mix_seed)]
    return command


def run_load(settings: LabSettings, spec: LoadSpec, cell_dir: Path, proxy_pid: int | None) -> LoadResult:
    """Drive one cell's requests and wait for them all; the raw table lands in `cell_dir`."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    raw_path = cell_dir / "raw.csv"
    command = locust_command(settings, spec, raw_path, cell_dir / "locust.log")
    proxy = _process_or_none(proxy_pid)
    proxy_cpu_start = _cpu_s(proxy)
    peak_rss = 0
    started = time.monotonic()
    with (cell_dir / "locust.out").open("wb") as output:
        generator = psutil.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                 preexec_fn=die_with_parent)  # no orphan if the CLI is killed
    generator_cpu_s = 0.0
    timed_out = False
    hard_deadline = started + spec.max_run_time_s + 60
    try:
        while generator.poll() is None:
            generator_cpu_s = _cpu_s(generator) or generator_cpu_s
            if proxy is not None:
                peak_rss = max(peak_rss, _rss(proxy))
            if time.monotonic() > hard_deadline:
                timed_out = True
                generator.terminate()
                generator.wait(10)
                break
            time.sleep(CPU_SAMPLE_S)
    finally:
        if generator.poll() is None:
            generator.kill()
            generator.wait()
    wall_s = time.monotonic() - started
    proxy_cpu_end = _cpu_s(proxy)
    proxy_cpu_s = None if proxy_cpu_start is None or proxy_cpu_end is None else proxy_cpu_end - proxy_cpu_start
    if not raw_path.exists():
        tail = (cell_dir / "locust.out").read_text(errors="replace").strip().splitlines()[-1:]
        raise LabError(f"the load generator wrote no raw table (exit {generator.returncode}): {tail}")
    return LoadResult(raw_path, wall_s, 100.0 * generator_cpu_s / wall_s if wall_s else 0.0,
                      proxy_cpu_s, peak_rss or None, generator.returncode or 0, timed_out)


def _process_or_none(pid: int | None) -> psutil.Process | None:
    try:
        return psutil.Process(pid) if pid else None
    except psutil.NoSuchProcess:
        return None


def _cpu_s(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    try:
        times = process.cpu_times()
        return times.user + times.system
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0
