"""Benchmark the mock LLM with wrk and print its throughput and p99 latency against targets.

Not a test: it measures and prints. It starts the mock (services/mock_llm/app.py) on a free
port of 127.0.0.1, warms it up, drives POST /v1/chat/completions with wrk for `--duration-s`
seconds at `--connections` connections from one wrk thread (the machine has two cores: the
mock gets one, wrk the other), prints the figures, and stops every process it started, also
on Ctrl-C or SIGTERM.

Targets: p99 <= 5 ms, and at least 10x the LiteLLM proxy's throughput (~70 requests/s on the
lab machine, see FIELD-NOTES; pass `--proxy-rps` with a figure you measured). wrk is a closed
loop, so at saturation its latencies are mostly queueing: the mean is at least
connections / throughput. `--connections 1` shows the mock's own service time instead.

The mock inherits MOCK_LLM_* variables from this process's environment, so a configured mock
can be measured too; they are printed when set.

Usage: .venv/bin/python benchmarks/mock_llm_bench.py [--duration-s 10] [--proxy-rps 70]
Needs wrk (Debian package `wrk`: apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

logger = logging.getLogger("proxylab.benchmarks.mock_llm")

REPO_ROOT = Path(__file__).resolve().parents[1]
MOCK_APP = REPO_ROOT / "services" / "mock_llm" / "app.py"

TARGET_P99_MS = 5.0
TARGET_PROXY_RATIO = 10.0
# FIELD-NOTES: single-worker proxy, Prometheus callback off, instant mock, this machine.
FIELD_NOTES_PROXY_RPS = 70.0

# Other processes' CPU use during the run, in % of one core, above which figures are suspect.
OTHER_CPU_WARN_PERCENT = 10.0

HEALTH_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

# The same small request a proxy would forward; a long Lua string keeps the JSON unescaped.
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{"model": "mock-gpt", "messages": [{"role": "user", "content": "Say hello."}]}]]
"""

# wrk prints durations with a unit suffix: 850.00us, 3.10ms, 1.20s, 2.00m.
_DURATION_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION_RE = r"([\d.]+)(us|ms|s|m|h)\b"


class BenchError(RuntimeError):
    """The benchmark could not produce trustworthy figures; the message says why."""


@dataclass(frozen=True)
class WrkResult:
    """Figures parsed from one wrk run with `--latency`."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def _duration_ms(text: str) -> float:
    """Convert one wrk duration such as `3.10ms` to milliseconds."""
    match = re.fullmatch(_DURATION_RE, text.strip())
    if match is None:
        raise BenchError(f"cannot read wrk duration {text!r}")
    return float(match.group(1)) * _DURATION_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse the report of `wrk --latency`; raise `BenchError` if a figure is missing."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no match for {pattern!r}:\n{output}")
        return match

    total = find(r"^\s*(\d+) requests in " + _DURATION_RE)
    percentiles = {
        percent: _duration_ms(find(rf"^\s*{percent}%\s+(\S+)\s*$").group(1))
        for percent in (50, 90, 99)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )

    return WrkResult(
        requests=int(total.group(1)),
        duration_s=_duration_ms(total.group(2) + total.group(3)) / 1000,
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=percentiles[50],
        p90_ms=percentiles[90],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(count) for count in socket_errors.groups()) if socket_errors else 0,
    )


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(base_url: str, mock: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll /health until it answers 200; raise `BenchError` if the mock exits or is late."""
    deadline_s = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline_s:
        if mock.poll() is not None:
            raise BenchError(
                f"mock exited with code {mock.returncode} before it was healthy:\n"
                + log_path.read_text(errors="replace")
            )
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise BenchError(f"mock not healthy after {HEALTH_TIMEOUT_S:.0f} s; log: {log_path}")


def stop(process: subprocess.Popen[bytes], name: str) -> None:
    """Stop a child: SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("%s (pid %d) ignored SIGTERM; killing it", name, process.pid)
        process.kill()
        process.wait()


def run_wrk(args: argparse.Namespace, url: str, script: Path, duration_s: float) -> str:
    """Run wrk once and return its report; raise `BenchError` if it fails."""
    command = [
        "wrk",
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={duration_s:g}s",
        "--timeout=5s",
        "--latency",
        f"--script={script}",
        url,
    ]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = wrk.communicate(timeout=duration_s + 30)
    finally:
        # Reached with wrk still running only on an interrupt or a timeout.
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    if wrk.returncode != 0:
        raise BenchError(
            f"wrk failed\ncommand: {' '.join(command)}\nexit code: {wrk.returncode}\n"
            f"stdout: {stdout}\nstderr: {stderr}"
        )
    return stdout


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds a process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def report(
    args: argparse.Namespace, result: WrkResult, mock_cpu_percent: float, wrk_cpu_percent: float
) -> None:
    """Print the headline lines, the details, and warnings next to the figures they concern."""
    p99_ok = result.p99_ms <= TARGET_P99_MS
    print(
        f"mock_llm: {result.requests_per_s:.0f} req/s, p99 {result.p99_ms:.1f} ms "
        f"(target p99 <= {TARGET_P99_MS:g} ms: {'ok' if p99_ok else 'MISSED'})"
    )

    proxy_rps = args.proxy_rps if args.proxy_rps is not None else FIELD_NOTES_PROXY_RPS
    source = "measured, --proxy-rps" if args.proxy_rps is not None else "FIELD-NOTES figure"
    ratio = result.requests_per_s / proxy_rps
    ratio_ok = ratio >= TARGET_PROXY_RATIO
    print(
        f"mock_llm vs proxy: {result.requests_per_s:.0f} / {proxy_rps:g} req/s ({source}) = "
        f"{ratio:.0f}x (target >= {TARGET_PROXY_RATIO:g}x: {'ok' if ratio_ok else 'MISSED'})"
    )

    print(
        f"details: {args.connections} connections, {args.threads} wrk thread(s), "
        f"{result.duration_s:.1f} s, {result.requests} requests, p50 {result.p50_ms:.2f} ms, "
        f"p90 {result.p90_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"CPU in % of one core: mock {mock_cpu_percent:.0f}, wrk {wrk_cpu_percent:.0f}"
    )

    if not p99_ok:
        queueing_ms = args.connections / result.requests_per_s * 1000
        print(
            f"NOTE: wrk keeps {args.connections} requests in flight, so at saturation latency "
            f"is mostly queueing: mean >= {args.connections} / {result.requests_per_s:.0f} "
            f"req/s = {queueing_ms:.1f} ms. Run with --connections 1 for the mock's own "
            "service time."
        )


def busy_cpu_seconds() -> float:
    """Return the CPU seconds all cores of the machine have spent busy since boot."""
    times = psutil.cpu_times()
    # Steal is time the hypervisor gave to others: contention all the same.
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def children_cpu_seconds() -> float:
    """Return the CPU seconds used by this process's children that have been reaped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def warn_if_contended(other_cpu_percent: float) -> None:
    """Warn when processes other than the mock and wrk used the CPU during the run."""
    if other_cpu_percent >= OTHER_CPU_WARN_PERCENT:
        print(
            f"WARNING: other processes used {other_cpu_percent:.0f} % of a core during the "
            f"run, competing with the mock and wrk for this machine's {os.cpu_count()} cores: "
            "the figures may be low. Rerun on an idle machine."
        )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit, so the `finally` blocks stop the children."""
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured run length")
    parser.add_argument("--warmup-s", type=float, default=2.0, help="unmeasured run first")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1 leaves a core)")
    parser.add_argument(
        "--proxy-rps",
        type=float,
        default=None,
        help=f"measured LiteLLM proxy throughput (default: {FIELD_NOTES_PROXY_RPS:g}, FIELD-NOTES)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 with figures, 1 if measuring failed, 2 without wrk."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if shutil.which("wrk") is None:
        print(
            "mock_llm_bench: wrk not found on PATH. Install it with `apt-get install -y wrk` "
            "(Debian package wrk; run `apt-get update` first on a fresh machine).",
            file=sys.stderr,
        )
        return 2

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    mock_env = {name: value for name, value in os.environ.items() if name.startswith("MOCK_LLM_")}
    if mock_env:
        print(f"mock settings from the environment: {mock_env}")

    with tempfile.TemporaryDirectory(prefix="mock_llm_bench_") as workdir:
        script = Path(workdir) / "post.lua"
        script.write_text(WRK_SCRIPT)
        log_path = Path(workdir) / "mock.log"
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"

        logger.info("starting the mock on %s", base_url)
        with log_path.open("wb") as log:
            command = [sys.executable, str(MOCK_APP), "--host", "127.0.0.1", "--port", str(port)]
            mock = subprocess.Popen(
                command + ["--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_healthy(base_url, mock, log_path)
            url = base_url + "/v1/chat/completions"

            if args.warmup_s > 0:
                logger.info("warming up for %g s", args.warmup_s)
                run_wrk(args, url, script, args.warmup_s)

            logger.info("measuring for %g s at %d connections", args.duration_s, args.connections)
            mock_before_s = cpu_seconds(mock.pid)
            wrk_before_s = children_cpu_seconds()
            busy_before_s = busy_cpu_seconds()
            started_s = time.monotonic()
            output = run_wrk(args, url, script, args.duration_s)
            elapsed_s = time.monotonic() - started_s
            mock_cpu_s = cpu_seconds(mock.pid) - mock_before_s
            wrk_cpu_s = children_cpu_seconds() - wrk_before_s
            other_cpu_s = busy_cpu_seconds() - busy_before_s - mock_cpu_s - wrk_cpu_s

            result = parse_wrk(output)
            if result.non_2xx or result.socket_errors:
                raise BenchError(
                    f"{result.non_2xx} non-2xx responses and {result.socket_errors} socket "
                    f"errors: figures not trustworthy; mock log:\n"
                    + log_path.read_text(errors="replace")
                )
            report(args, result, 100 * mock_cpu_s / elapsed_s, 100 * wrk_cpu_s / elapsed_s)
            warn_if_contended(100 * max(other_cpu_s, 0.0) / elapsed_s)
        except BenchError as error:
            logger.error("%s", error)
            return 1
        except KeyboardInterrupt:
            logger.error("interrupted; no figures")
            return 130
        finally:
            stop(mock, "mock")
            logger.info("mock stopped (exit code %s)", mock.returncode)

    return 0


if __name__ == "__main__":
    sys.exit(main())
