"""The matrix: every configuration x repeat as one cell, on the native stack, into a result dir.

A configuration is callbacks on/off, user mode, key mode and the provider latency toxic. The
proxy restarts whenever the part of a configuration it runs with changes (callbacks,
toxics), and a warm-up that no figure counts follows each start. After each cell its raw
table, `summary.json` and `report.md` are written atomically, so a crash or a kill loses no
finished cell.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import groupby
from pathlib import Path

import httpx
import redis
from pydantic import BaseModel, Field, field_validator

from proxylab import load, metadata, report, results, toxics
from proxylab.errors import LabError
from proxylab.settings import LabSettings
from proxylab.stack import PROMETHEUS_CALLBACK, NativeStack, ProxyConfig, postgres_bin_dir

logger = logging.getLogger(__name__)

USER_MODES = ("none", "sequential", "random", "created")
KEY_MODES = ("shared", "per_user")
DB_USER_MODES = {"created"}
DB_KEY_MODES = {"per_user"}
GENERATOR_CPU_WARN_PERCENT = 80.0


class MatrixPlan(BaseModel):
    """The axes and the load of one matrix; validated before anything starts."""

    callbacks: list[bool] = [False, True]
    user_modes: list[str] = ["none", "sequential", "random"]
    key_modes: list[str] = ["shared"]
    llm_latencies_ms: list[int] = [0]
    repeats: int = Field(1, ge=1)
    requests: int = Field(1000, ge=1)
    users: int = Field(20, ge=1)
    spawn_rate: float = Field(0.0, ge=0)  # 0: all users at once, like the original script
    warmup_requests: int = Field(20, ge=0)
    max_cell_time_s: int = Field(600, ge=10)

    @field_validator("user_modes", "key_modes", "callbacks", "llm_latencies_ms")
    @classmethod
    def _not_empty(cls, values: list) -> list:
        if not values:
            raise ValueError("needs at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"repeats a value: {values}")
        return values

    @field_validator("user_modes")
    @classmethod
    def _known_user_modes(cls, modes: list[str]) -> list[str]:
        unknown = [mode for mode in modes if mode not in USER_MODES]
        if unknown:
            raise ValueError(f"unknown user mode {unknown[0]!r}; choose from {', '.join(USER_MODES)}")
        return modes

    @field_validator("key_modes")
    @classmethod
    def _known_key_modes(cls, modes: list[str]) -> list[str]:
        unknown = [mode for mode in modes if mode not in KEY_MODES]
        if unknown:
            raise ValueError(f"unknown key mode {unknown[0]!r}; choose from {', '.join(KEY_MODES)}")
        return modes

    @field_validator("llm_latencies_ms")
    @classmethod
    def _non_negative(cls, values: list[int]) -> list[int]:
        if any(value < 0 for value in values):
            raise ValueError("latencies must be zero or positive")
        return values

    def model_post_init(self, _context) -> None:
        if self.users > self.requests:
            raise ValueError(f"{self.users} users need at least as many requests, got {self.requests}")

    def configurations(self) -> list["CellConfig"]:
        """Every configuration, grouped so the proxy restarts as rarely as possible."""
        return [CellConfig(callbacks, user_mode, key_mode, latency_ms)
                for latency_ms in self.llm_latencies_ms
                for callbacks in self.callbacks
                for user_mode in self.user_modes
                for key_mode in self.key_modes]


QUICK_PLAN = MatrixPlan()
FULL_PLAN = MatrixPlan(repeats=3, requests=5000, users=50)


@dataclass(frozen=True)
class CellConfig:
    callbacks: bool
    user_mode: str
    key_mode: str
    llm_latency_ms: int = 0

    @property
    def config_id(self) -> str:
        parts = [f"callbacks-{'on' if self.callbacks else 'off'}", f"user-{self.user_mode}",
                 f"key-{self.key_mode}"]
        if self.llm_latency_ms:
            parts.append(f"llm-{self.llm_latency_ms}ms")
        return ".".join(parts)

    def proxy_config(self) -> ProxyConfig:
        return ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,) if self.callbacks else ())

    def proxy_group(self) -> tuple:
        """Cells with the same group share one proxy process."""
        return (self.proxy_config(), self.llm_latency_ms)

    def toxics(self) -> list[toxics.LatencyToxic]:
        return [toxics.LatencyToxic("llm", self.llm_latency_ms)] if self.llm_latency_ms else []


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt so cleanup runs as it does for Ctrl-C."""
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_matrix(settings: LabSettings, plan: MatrixPlan, *, run_id: str | None = None,
               on_cell: Callable[[dict], None] | None = None) -> Path:
    """Run every cell of `plan` on a fresh native stack; return the result directory."""
    run_id = run_id or new_run_id()
    run_dir = settings.results_dir / run_id
    if run_dir.exists():
        raise LabError(f"result directory {run_dir} already exists; choose another --run-id")
    stack = NativeStack(settings, log_dir=run_dir / "logs", tie_to_parent=True)
    stack._refuse_if_running()
    stack.prepare()
    _refuse_modes_without_database(plan, stack)
    run_dir.mkdir(parents=True)
    configs = plan.configurations()
    order = [(config, repeat) for config in configs for repeat in range(1, plan.repeats + 1)]
    summary = results.new_summary(
        run_id=run_id, plan=plan.model_dump(), runtime="native",
        database=asdict(stack.database),
        order=[cell_id(config, repeat) for config, repeat in order],
        metadata={
            "versions": metadata.component_versions(
                proxy_python=stack.proxy_venv / "bin" / "python", postgres_bin=postgres_bin_dir(),
                toxiproxy_version=settings.toxiproxy_version),
            "machine": metadata.machine(), "git": metadata.git_commit(),
        },
    )
    results.save(run_dir, summary)
    logger.info("matrix %s: %d cells into %s", run_id, len(order), run_dir)
    try:
        with _terminate_as_interrupt():
            stack.up(proxy=None)
            for _group, group_cells in groupby(order, key=lambda item: item[0].proxy_group()):
                group_cells = list(group_cells)
                first_config = group_cells[0][0]
                toxics.apply(settings, first_config.toxics())
                stack.restart_proxy(first_config.proxy_config())
                warmup = warm_up(settings, plan.warmup_requests)
                for config, repeat in group_cells:
                    cell = _run_cell(settings, stack, plan, run_dir, config, repeat, warmup)
                    summary["cells"].append(cell)
                    results.save(run_dir, summary)
                    report.write_markdown(run_dir, summary)
                    if on_cell:
                        on_cell(cell)
        summary["status"] = "complete"
    except KeyboardInterrupt:
        summary["status"] = "interrupted"
        raise
    except BaseException:
        summary["status"] = "failed"
        raise
    finally:
        summary["finished_at"] = results.now_iso()
        stack.down()
        results.save(run_dir, summary)
        report.write_markdown(run_dir, summary)
    return run_dir


def _refuse_modes_without_database(plan: MatrixPlan, stack: NativeStack) -> None:
    if stack.database and stack.database.available:
        return
    reason = stack.database.reason if stack.database else "no proxy database"
    needs_db = [mode for mode in plan.user_modes if mode in DB_USER_MODES]
    needs_db += [mode for mode in plan.key_modes if mode in DB_KEY_MODES]
    if needs_db:
        raise LabError(f"mode {needs_db[0]!r} needs the proxy's database, and here there is none "
                       f"({reason}); drop it or use the Compose runtime")


def cell_id(config: CellConfig, repeat: int) -> str:
    return f"{config.config_id}.r{repeat}"


def warm_up(settings: LabSettings, count: int) -> dict[str, int]:
    """Requests right after a proxy start, excluded from every figure; counted in the report."""
    failures = 0
    body = {"model": settings.model_name, "messages": [{"role": "user", "content": "warm-up"}],
            "max_tokens": 4}
    headers = {"Authorization": f"Bearer {settings.master_key}"}
    with httpx.Client(base_url=settings.url(settings.proxy_port), timeout=60, headers=headers) as client:
        for _ in range(count):
            try:
                if client.post("/v1/chat/completions", json=body).status_code != 200:
                    failures += 1
            except httpx.HTTPError:
                failures += 1
    if count and failures == count:
        raise LabError("every warm-up request to the proxy failed; see the run's logs/litellm-proxy.log")
    return {"requests": count, "failed": failures}


def _reset_between_cells(settings: LabSettings) -> None:
    # Router usage counters from the previous cell would otherwise carry over.
    redis.Redis(host=settings.host, port=settings.redis_port, socket_timeout=5).flushall()


def _run_cell(settings: LabSettings, stack: NativeStack, plan: MatrixPlan, run_dir: Path,
              config: CellConfig, repeat: int, warmup: dict[str, int]) -> dict:
    identifier = cell_id(config, repeat)
    cell_dir = run_dir / "cells" / identifier
    _reset_between_cells(settings)
    spec = load.LoadSpec(config_id=config.config_id, total_requests=plan.requests, users=plan.users,
                         spawn_rate=plan.spawn_rate or plan.users, user_mode=config.user_mode,
                         key_mode=config.key_mode, max_run_time_s=plan.max_cell_time_s)
    logger.info("cell %s: %d requests from %d users", identifier, plan.requests, plan.users)
    started_at = results.now_iso()
    outcome = load.run_load(settings, spec, cell_dir, stack.proxy_pid())
    cell = results.cell_record(
        run_dir=run_dir, cell_id=identifier, config_id=config.config_id, config=asdict(config),
        repeat=repeat, raw_path=outcome.raw_path, expected_requests=plan.requests,
        started_at=started_at, load=outcome, warmup=warmup,
        generator_cpu_warn_percent=GENERATOR_CPU_WARN_PERCENT,
    )
    results.write_json_atomic(cell_dir / "cell.json", cell)
    return cell
