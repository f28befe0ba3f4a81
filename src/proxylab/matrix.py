"""The matrix: every configuration x repeat as one cell, on the native stack, into a result dir.

A configuration is callbacks on/off, user mode, key mode and the provider latency toxic. The
proxy restarts whenever the part of a configuration it runs with changes (callbacks,
toxics), and a warm-up that no figure counts follows each start. After each cell its raw
table, `summary.json` and `report.md` are written atomically, so a crash or a kill loses no
finished cell.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import groupby
from pathlib import Path

import httpx
import redis

from proxylab import load, metadata, report, results, toxics
from proxylab.errors import LabError
from proxylab.plan import DB_KEY_MODES, DB_USER_MODES, CellConfig, MatrixPlan
from proxylab.settings import LabSettings
from proxylab.stack import PROMETHEUS_CALLBACK, NativeStack, ProxyConfig, postgres_bin_dir

logger = logging.getLogger(__name__)

GENERATOR_CPU_WARN_PERCENT = 80.0


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
    run_id = run_id or results.new_run_id()
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
                toxics.apply(settings, hop_toxics(first_config))
                stack.restart_proxy(proxy_config(first_config))
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


def proxy_config(config: CellConfig) -> ProxyConfig:
    return ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,) if config.callbacks else ())


def hop_toxics(config: CellConfig) -> list[toxics.LatencyToxic]:
    return [toxics.LatencyToxic("llm", config.llm_latency_ms)] if config.llm_latency_ms else []


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
