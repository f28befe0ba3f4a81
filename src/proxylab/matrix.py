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
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from itertools import groupby
from pathlib import Path

import httpx

from proxylab import (attribution, install, load, metadata, model_mix, provision, report,
                      results, state_reset, toxics, versions)
from proxylab.errors import LabError
from proxylab.plan import DB_KEY_MODES, DB_USER_MODES, CellConfig, MatrixPlan
from proxylab.rawlog import read_raw
from proxylab.runtimes import make_stack
from proxylab.settings import LabSettings
from proxylab.stack import PROMETHEUS_CALLBACK, NativeStack, ProxyConfig, proxy_config_document

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
               on_cell: Callable[[dict], None] | None = None, runtime: str = "native",
               resume: bool = False) -> Path:
    """Run every cell of `plan` on a fresh stack of `runtime`; return the result directory.

    With `resume`, `run_id` names an interrupted run: its plan and runtime are taken from its
    summary.json and only the cells it has not finished are run, into the same directory.
    """
    run_id = run_id or results.new_run_id()
    run_dir = settings.results_dir / run_id
    previous = None
    if resume:
        previous = results.load_summary(run_dir)
        plan = MatrixPlan.from_summary(previous["plan"])
        runtime = previous["runtime"]
    elif run_dir.exists():
        raise LabError(f"result directory {run_dir} already exists; choose another --run-id")
    _refuse_enterprise_callbacks(settings, plan)
    # The reports' heavy modules (scipy, plotly) are imported now, not in the cleanup below: a
    # signal that lands inside a first import leaves the module half-made and the cleanup's
    # reports fail on it (seen: scipy.ndimage NameError, exit 1 instead of 130).
    from proxylab import html_report, verdicts  # noqa: F401
    stack = make_stack(settings, runtime, log_dir=run_dir / "logs", tie_to_parent=True)
    if plan.mock_behaviours:
        if not isinstance(stack, NativeStack):
            # TODO: mount the file into the Compose mock (docker-compose.yml) and set the variable.
            raise LabError("--mock-behaviours: only the native runtime gives the mock a "
                           "behaviours file so far; use --runtime native")
        stack.mock_env = {"MOCK_LLM_BEHAVIOURS_FILE": plan.mock_behaviours}
    stack.refuse_if_running()
    stack.prepare()
    _refuse_modes_without_database(plan, stack)
    releases = prepare_proxy_versions(settings, plan)
    run_dir.mkdir(parents=True, exist_ok=resume)
    order = plan.cell_order()
    if previous is not None:
        summary = previous
        finished = {cell["cell_id"] for cell in summary["cells"]}
        order = [(config, repeat) for config, repeat in order if cell_id(config, repeat) not in finished]
        summary["status"] = "running"
        summary.setdefault("resumed_at", []).append(results.now_iso())
        logger.info("resuming %s: %d cells finished, %d to run", run_id, len(finished), len(order))
    else:
        summary = results.new_summary(
            run_id=run_id, plan=plan.model_dump(), runtime=runtime,
            database=asdict(stack.database),
            order=[cell_id(config, repeat) for config, repeat in order],
            metadata={
                "versions": stack.component_versions(),
                "machine": metadata.machine(), "git": metadata.git_commit(),
                # The mock inherits these from the lab's environment: its latency, errors, streaming.
                "mock_llm_env": attribution.mock_llm_environment(),
                # By content too: the file may change after the run.
                "mock_behaviours": ({"path": plan.mock_behaviours,
                                     "models": model_mix.read_behaviours(plan.mock_behaviours)}
                                    if plan.mock_behaviours else None),
            },
        )
        summary["proxy_releases"] = releases
        # The stack reports its pinned release; the matrix ran these (one configuration each).
        summary["metadata"]["versions"]["litellm"] = ", ".join(
            str(entry["installed"]) for entry in releases.values())
    results.save(run_dir, summary)
    logger.info("matrix %s: %d cells to run into %s", run_id, len(order), run_dir)
    try:
        with _terminate_as_interrupt():
            stack.up(proxy=None)
            # Numbered across resumes, so runs of one proxy process can be told apart later.
            proxy_start = max((cell.get("proxy_start", 0) for cell in summary["cells"]), default=0)
            provisioned: provision.Provisioned | None = None
            # Every repeat on its own proxy start: runs of one proxy process share its quirks
            # (two starts of one configuration here differed by up to 7 %), and a repeat that
            # did not restart would not be an independent run.
            for _group, group_cells in groupby(order, key=lambda item: (item[1],
                                                                        item[0].proxy_group())):
                group_cells = list(group_cells)
                first_config = group_cells[0][0]
                group_toxics = hop_toxics(first_config)
                toxics.apply(settings, group_toxics)
                summary.setdefault("calibration", []).append(toxics.calibrate(settings, group_toxics))
                stack.restart_proxy(proxy_config(first_config, plan))
                proxy_start += 1
                proxy_config_file = _keep_proxy_config(stack, run_dir, proxy_start)
                if provisioned is None:
                    provisioned = _provision(settings, plan, run_dir)
                    summary["provisioned"] = provisioned.record()
                try:
                    warmup = warm_up(settings, plan.warmup_requests, plan.users, plan.stream,
                                     models=list(plan.model_mix) or None)
                except LabError:
                    if not toxics.breaks_requests(group_toxics):
                        raise
                    # A hop made to fail fails the warm-up too; the cells show how requests fare.
                    warmup = {"requests": plan.warmup_requests, "failed": plan.warmup_requests}
                for config, repeat in group_cells:
                    cell = _run_cell(settings, stack, plan, run_dir, config, repeat, warmup,
                                     proxy_start, provisioned, proxy_config_file,
                                     _release_of(settings, summary, config))
                    summary["cells"].append(cell)
                    stack.mark_cell(run_id, cell)
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
        try:
            stack.down()
        except Exception:  # noqa: BLE001 - must not replace the exception that got us here
            logger.exception("stopping the stack failed; run `proxylab down`")
        results.save(run_dir, summary)
        try:
            report.write_markdown(run_dir, summary)
        except Exception:  # noqa: BLE001 - must not replace the exception that got us here
            logger.exception("report.md could not be written; rebuild it with `proxylab report %s`",
                             run_dir)
        _write_html_report(run_dir, summary)
    return run_dir


def _write_html_report(run_dir: Path, summary: dict) -> None:
    """The pictures are a convenience: a failure here must not hide the run's own outcome."""
    from proxylab import html_report

    try:
        html_report.write_html(run_dir, summary)
    except Exception:  # noqa: BLE001 - logged in full; `proxylab report` can rebuild it
        logger.exception("report.html could not be written; rebuild it with `proxylab report %s`", run_dir)


def _refuse_modes_without_database(plan: MatrixPlan, stack: NativeStack) -> None:
    if stack.database and stack.database.available:
        return
    reason = stack.database.reason if stack.database else "no proxy database"
    needs_db = [mode for mode in plan.user_modes if mode in DB_USER_MODES]
    needs_db += [mode for mode in plan.key_modes if mode in DB_KEY_MODES]
    if needs_db:
        raise LabError(f"mode {needs_db[0]!r} needs the proxy's database, and here there is none "
                       f"({reason}); drop it or use the Compose runtime")


def _refuse_enterprise_callbacks(settings: LabSettings, plan: MatrixPlan) -> None:
    """The plan refuses the releases it names; the pinned one comes from the settings."""
    if True in plan.callbacks and not plan.proxy_versions:
        refusal = versions.callbacks_refusal(settings.proxy_version)
        if refusal:
            raise LabError(refusal)


def _keep_proxy_config(stack: NativeStack, run_dir: Path, proxy_start: int) -> str:
    """A copy of the config file this proxy start read, in the run's logs; its relative path.

    The file the stack renders is rewritten at every start, so only the copy shows later what
    each proxy process ran with.
    """
    kept = run_dir / "logs" / f"litellm-config.start-{proxy_start}.yaml"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stack.proxy_config_path(), kept)
    return str(kept.relative_to(run_dir))


def _release_of(settings: LabSettings, summary: dict, config: CellConfig) -> str | None:
    """The LiteLLM version installed for the release `config` ran."""
    release = config.proxy_version or settings.proxy_version
    entry = (summary.get("proxy_releases") or {}).get(release) or {}
    return entry.get("installed")


def proxy_config(config: CellConfig, plan: MatrixPlan) -> ProxyConfig:
    proxy_settings = plan.settings_for(config)
    return ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,) if config.callbacks else (),
                       version=config.proxy_version or None,
                       settings_json=json.dumps(proxy_settings, sort_keys=True) if proxy_settings else "",
                       models=tuple(plan.routed_models()) if plan.mock_behaviours else ())


def prepare_proxy_versions(settings: LabSettings, plan: MatrixPlan) -> dict[str, dict]:
    """Build every release's virtualenv before anything starts; say what each one runs with.

    Returns, per release, the LiteLLM version actually installed and how the shared proxy
    config was adapted to it (an empty list for the pinned release).
    """
    releases = {}
    for version in plan.proxy_versions or [settings.proxy_version]:
        venv = install.ensure_proxy_env(settings, version)
        _, adaptations = proxy_config_document(ProxyConfig(version=version))
        releases[version] = {"installed": metadata.package_version(venv / "bin" / "python", "litellm"),
                             "adaptations": adaptations}
    return releases


def hop_toxics(config: CellConfig) -> list[toxics.Toxic]:
    chosen = list(toxics.parse_scenario(config.toxics))
    if config.llm_latency_ms:
        chosen.append(toxics.Toxic("llm", "latency", config.llm_latency_ms))
    return chosen


def cell_id(config: CellConfig, repeat: int) -> str:
    return f"{config.config_id}.r{repeat}"


def warm_up(settings: LabSettings, count: int, concurrency: int,
            stream: bool = False, models: list[str] | None = None) -> dict[str, int]:
    """Requests right after a proxy start, excluded from every figure; counted in the report.

    They are sent `concurrency` at a time, like the cells that follow: the proxy's first
    concurrent requests after a start were seen to stall for ~2 s, and sequential warm-up
    requests do not take that hit for the cell. With `models` (a model mix) they take the
    models in turn, so no model's first request through the proxy is counted either.
    """
    models = models or [settings.model_name]
    body = {"model": settings.model_name, "messages": [{"role": "user", "content": "warm-up"}],
            "max_tokens": 4}
    if stream:
        # Streamed like the cells, so the proxy's first streams are not counted in them.
        body["stream"] = True
    headers = {"Authorization": f"Bearer {settings.master_key}"}
    with httpx.Client(base_url=settings.url(settings.proxy_port), timeout=60, headers=headers,
                      limits=httpx.Limits(max_connections=concurrency)) as client:

        def _send(index: int) -> bool:
            try:
                request = {**body, "model": models[index % len(models)]}
                return client.post("/v1/chat/completions", json=request).status_code == 200
            except httpx.HTTPError:
                return False

        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, count))) as pool:
            failures = sum(not ok for ok in pool.map(_send, range(count)))
    if count and failures == count:
        raise LabError("every warm-up request to the proxy failed; see the run's logs/litellm-proxy.log")
    return {"requests": count, "failed": failures}


def _provision(settings: LabSettings, plan: MatrixPlan, run_dir: Path) -> provision.Provisioned:
    """End users and keys for the modes that need them, made once per run (they persist)."""
    end_users = plan.users if set(plan.user_modes) & DB_USER_MODES else 0
    keys = plan.users if set(plan.key_modes) & DB_KEY_MODES else 0
    if not (end_users or keys):
        return provision.Provisioned()
    with provision.management_client(settings) as client:
        return provision.provision(client, run_dir / "provisioned", end_users=end_users, keys=keys,
                                   end_user_max_budget=plan.end_user_max_budget,
                                   run_id=run_dir.name)


def _run_cell(settings: LabSettings, stack: NativeStack, plan: MatrixPlan, run_dir: Path,
              config: CellConfig, repeat: int, warmup: dict[str, int], proxy_start: int,
              provisioned: provision.Provisioned, proxy_config_file: str,
              litellm_version: str | None) -> dict:
    identifier = cell_id(config, repeat)
    cell_dir = run_dir / "cells" / identifier
    database = stack.database
    has_database = bool(database and database.available)
    database_reason = database.reason if database else "no DB"
    reset = state_reset.reset_between_cells(settings, database_available=has_database,
                                            database_reason=database_reason,
                                            kept_end_users=provisioned.end_users)
    spec = load.LoadSpec(config_id=config.config_id, total_requests=plan.requests, users=plan.users,
                         spawn_rate=plan.spawn_rate or plan.users, user_mode=config.user_mode,
                         key_mode=config.key_mode, max_run_time_s=plan.max_cell_time_s,
                         stream=plan.stream, model_mix=model_mix.mix_spec(plan.model_mix),
                         model_mix_seed=plan.model_mix_seed,
                         keys_file=provisioned.keys_file if config.key_mode in DB_KEY_MODES else None,
                         users_file=provisioned.users_file if config.user_mode in DB_USER_MODES else None)
    logger.info("cell %s: %d requests from %d users", identifier, plan.requests, plan.users)
    started_at = results.now_iso()
    probe = attribution.begin(settings, database=has_database, database_reason=database_reason,
                              cell_dir=cell_dir, proxy_pid=stack.proxy_pid(), profile=plan.profile)
    outcome = load.run_load(settings, spec, cell_dir, stack.proxy_pid())
    # Read back after the load: the toxics really in force while it ran, not those asked for.
    try:
        toxics_in_force = [{"proxy": name, **toxic} for name, toxic in toxics.active_toxics(settings)]
    except LabError as error:
        toxics_in_force = {"error": str(error)}
    cell = results.cell_record(
        run_dir=run_dir, cell_id=identifier, config_id=config.config_id, config=config.record(),
        repeat=repeat, raw_path=outcome.raw_path, expected_requests=plan.requests,
        started_at=started_at, load=outcome, warmup=warmup,
        generator_cpu_warn_percent=GENERATOR_CPU_WARN_PERCENT,
    )
    cell["proxy_start"] = proxy_start
    # What this cell's proxy process ran: its config file (in logs/) and its LiteLLM version.
    cell["proxy_config_file"] = proxy_config_file
    cell["litellm_version"] = litellm_version
    cell["state_reset"] = reset
    cell["toxics_in_force"] = toxics_in_force
    cell["attribution"] = attribution.finish(settings, probe, read_raw(outcome.raw_path),
                                             run_dir=run_dir)
    results.write_json_atomic(cell_dir / "cell.json", cell)
    return cell
