"""Starting and stopping the lab's own processes, with a state file that outlives the CLI.

Every process the lab starts is recorded (PID plus the kernel's start time) in a JSON state
file before the CLI does anything else, so `proxylab down` can stop exactly those processes
even after the CLI that started them crashed or was killed, and never a stranger that
happens to reuse a PID.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from proxylab.errors import LabError

logger = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
READY_POLL_S = 0.25
_PR_SET_PDEATHSIG = 1


@dataclass
class ServiceSpec:
    """How to run one service: its command, the ports it must find free, how to tell it is up."""

    name: str
    argv: list[str]
    ports: list[int]
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    run_as_user: str | None = None
    stop_signal: int = signal.SIGTERM


@dataclass
class RunningProcess:
    name: str
    pid: int
    create_time: float
    log_path: str
    stop_signal: int

    def as_psutil(self) -> psutil.Process | None:
        """The live process if it is still the one we started, else None."""
        try:
            process = psutil.Process(self.pid)
            # PIDs are reused; the start time tells our process from a newcomer.
            if abs(process.create_time() - self.create_time) > 0.5:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.NoSuchProcess:
            return None


class ProcessTable:
    """The processes of one lab home, persisted in `<state_dir>/processes.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "processes.json"
        state_dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> list[RunningProcess]:
        if not self.path.exists():
            return []
        try:
            entries = json.loads(self.path.read_text())
        except json.JSONDecodeError as error:
            raise LabError(f"state file {self.path} is corrupt ({error}); remove it by hand") from None
        return [RunningProcess(**entry) for entry in entries]

    def _save(self, processes: list[RunningProcess]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps([vars(process) for process in processes], indent=2))
        os.replace(temporary, self.path)

    def get(self, name: str) -> RunningProcess | None:
        return next((process for process in self.load() if process.name == name), None)

    def start(self, spec: ServiceSpec, log_dir: Path, *, tie_to_parent: bool = False) -> RunningProcess:
        """Start a service after checking its ports are free; record it before anything else."""
        if self.get(spec.name) is not None:
            raise LabError(f"{spec.name} is already recorded as running; run `proxylab down` first")
        for port in spec.ports:
            ensure_port_free(port, spec.name)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{spec.name}.log"
        env = {**os.environ, **spec.env}
        with log_path.open("ab") as log:
            try:
                popen = subprocess.Popen(
                    spec.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=spec.cwd, env=env, start_new_session=True, user=spec.run_as_user,
                    preexec_fn=die_with_parent if tie_to_parent else None,
                )
            except FileNotFoundError:
                raise LabError(f"{spec.name}: binary {spec.argv[0]} not found; run scripts/bootstrap.sh") from None
        record = RunningProcess(spec.name, popen.pid, psutil.Process(popen.pid).create_time(),
                                str(log_path), int(spec.stop_signal))
        self._save([*self.load(), record])
        logger.info("started %s (pid %d), log %s", spec.name, popen.pid, log_path)
        return record

    def wait_ready(self, spec: ServiceSpec, timeout_s: float) -> None:
        """Poll the service's readiness check; fail with the log's last line when it dies."""
        record = self.get(spec.name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if record is None or record.as_psutil() is None:
                raise LabError(f"{spec.name} exited during start: {_last_log_line(record)}")
            try:
                if spec.ready():
                    return
            except Exception:  # noqa: BLE001 - any failure of a probe means "not yet"
                pass
            time.sleep(READY_POLL_S)
        raise LabError(f"{spec.name} not ready after {timeout_s:.0f} s; see {record.log_path}")

    def stop(self, name: str) -> None:
        record = self.get(name)
        if record is None:
            return
        _terminate(record)
        self._save([process for process in self.load() if process.name != name])
        logger.info("stopped %s (pid %d)", name, record.pid)

    def stop_all(self) -> list[str]:
        """Stop every recorded process, the last started first; return their names.

        All are signalled before any is waited for, so a slow one does not hold up the rest.
        """
        records = list(reversed(self.load()))
        for record in records:
            _signal(record, record.stop_signal)
        for record in records:
            _terminate(record)
            logger.info("stopped %s (pid %d)", record.name, record.pid)
        self._save([])
        return [record.name for record in records]


def _signal(record: RunningProcess, signum: int) -> None:
    if record.as_psutil() is None:
        return
    # Each service leads its own session: signal the group to reach any children too.
    try:
        os.killpg(record.pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(record.pid, signum)


def _terminate(record: RunningProcess) -> None:
    """Signal the process (again, harmlessly) and wait; kill it when it ignores the signal."""
    process = record.as_psutil()
    if process is None:
        return
    _signal(record, record.stop_signal)
    _, alive = psutil.wait_procs([process], timeout=STOP_GRACE_S)
    if alive:
        logger.warning("%s did not stop within %.0f s; killing it", record.name, STOP_GRACE_S)
        _signal(record, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)


def die_with_parent() -> None:
    """In the child: ask the kernel for SIGTERM when the CLI that started us dies (even by -9)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def ensure_port_free(port: int, owner: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise LabError(
                f"port {port} for {owner} is already in use; stop what holds it "
                f"(`ss -ltnp 'sport = :{port}'`) or choose another port in the settings"
            ) from None


def _last_log_line(record: RunningProcess | None) -> str:
    if record is None:
        return "no record"
    try:
        lines = [line for line in Path(record.log_path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {record.log_path}"
    return (lines[-1][:300] if lines else "(empty log)") + f" (log: {record.log_path})"
