"""The `proxylab` command: a thin layer over the stack, matrix, report and import modules.

Errors the user can fix are one line on stderr and exit code 2; an interrupted matrix exits
130 after stopping everything it started and keeping every finished cell.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from proxylab.errors import LabError
from proxylab.settings import LabSettings

logger = logging.getLogger(__name__)
console = Console(stderr=True, soft_wrap=True)
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproduce latency problems of LLM gateways on a real local stack.")


def _settings() -> LabSettings:
    try:
        return LabSettings()
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise LabError(f"setting PROXYLAB_{field.upper()}: {first['msg']}") from None


def _split(values: list[str] | None) -> list[str] | None:
    """Accept both `--user-mode a --user-mode b` and `--user-mode a,b`."""
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


@app.command()
def up(callbacks: Annotated[bool, typer.Option("--callbacks/--no-callbacks",
                                               help="start the proxy with the Prometheus callback")] = False) -> None:
    """Start the native stack and leave it running (stop it with `proxylab down`)."""
    from proxylab.stack import PROMETHEUS_CALLBACK, NativeStack, ProxyConfig

    settings = _settings()
    stack = NativeStack(settings)
    stack.up(ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,) if callbacks else ()))
    assert stack.database is not None
    console.print(f"stack up; proxy on {settings.url(settings.proxy_port)} (master key "
                  f"{settings.master_key}); {stack.database.reason}")


@app.command()
def down() -> None:
    """Stop every process `up` or a matrix started, also after a crash, and nothing else."""
    from proxylab.stack import NativeStack

    stopped = NativeStack(_settings()).down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status() -> None:
    """List the lab's processes and whether they are alive."""
    from proxylab.stack import NativeStack

    statuses = NativeStack(_settings()).status()
    if not statuses:
        print("nothing running")
        raise typer.Exit(1)
    for entry in statuses:
        print(f"{entry.name:15} pid {entry.pid:<8} {'alive' if entry.alive else 'DEAD'}  {entry.log_path}")
    if not all(entry.alive for entry in statuses):
        raise typer.Exit(1)


@app.command()
def install() -> None:
    """Build toxiproxy and the pinned LiteLLM environment if they are missing."""
    from proxylab.stack import NativeStack

    stack = NativeStack(_settings())
    stack.prepare()
    console.print(f"installed; {stack.database.reason if stack.database else ''}")


@app.command()
def matrix(
    quick: Annotated[bool, typer.Option(help="the small default matrix (the default)")] = True,
    full: Annotated[bool, typer.Option(help="5000 requests, 50 users, 3 repeats per configuration")] = False,
    callbacks: Annotated[Optional[list[str]], typer.Option(help="off, on (repeatable or comma-separated)")] = None,
    user_mode: Annotated[Optional[list[str]], typer.Option(help="none, sequential, random, created")] = None,
    key_mode: Annotated[Optional[list[str]], typer.Option(help="shared, per_user")] = None,
    llm_latency_ms: Annotated[Optional[list[str]], typer.Option(
        help="latency toxic on the proxy->LLM hop, one configuration per value")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="runs per configuration")] = None,
    requests: Annotated[Optional[int], typer.Option(help="requests per cell")] = None,
    users: Annotated[Optional[int], typer.Option(help="concurrent simulated users")] = None,
    spawn_rate: Annotated[Optional[float], typer.Option(help="users started per second (0: all at once)")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="warm-up requests after each proxy start")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="name of the result directory")] = None,
) -> None:
    """Run a matrix (callbacks x user modes x key modes x repeats) and write its report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from proxylab.plan import FULL_PLAN, QUICK_PLAN, MatrixPlan

    base = FULL_PLAN if full else QUICK_PLAN
    overrides: dict[str, object] = {}
    if callbacks:
        flags = {"on": True, "off": False}
        values = _split(callbacks) or []
        unknown = [value for value in values if value not in flags]
        if unknown:
            raise LabError(f"--callbacks takes on or off, got {unknown[0]!r}")
        overrides["callbacks"] = [flags[value] for value in values]
    if user_mode:
        overrides["user_modes"] = _split(user_mode)
    if key_mode:
        overrides["key_modes"] = _split(key_mode)
    if llm_latency_ms:
        try:
            overrides["llm_latencies_ms"] = [int(value) for value in _split(llm_latency_ms) or []]
        except ValueError:
            raise LabError("--llm-latency-ms takes whole milliseconds") from None
    for name, value in (("repeats", repeats), ("requests", requests), ("users", users),
                        ("spawn_rate", spawn_rate), ("warmup_requests", warmup)):
        if value is not None:
            overrides[name] = value
    try:
        plan = MatrixPlan(**{**base.model_dump(), **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "matrix"
        raise LabError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    settings = _settings()
    from proxylab.matrix import run_matrix

    total = len(plan.configurations()) * plan.repeats
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("matrix cells", total=total)

        def _advance(cell: dict) -> None:
            figures = cell["statistics"]["all"]
            p95 = figures["p95_ms"]
            progress.console.print(
                f"  {cell['cell_id']}: {figures['requests']} requests, {figures['failed']} failed, "
                f"p95 {'–' if p95 is None else f'{p95 / 1000:.3f}'} s")
            progress.advance(task)

        run_dir = run_matrix(settings, plan, run_id=run_id, on_cell=_advance)
    print(f"report: {run_dir / 'report.md'}")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a results/<run-id> directory")]) -> None:
    """Rebuild report.md from a result directory's saved results, starting nothing."""
    from proxylab import report as report_module
    from proxylab import results

    summary = results.load_summary(run_dir)
    print(report_module.write_markdown(run_dir, summary))


@app.command("import")
def import_logs(
    logs: Annotated[list[Path], typer.Argument(help="seed-investigation text logs or Locust CSV request logs")],
    out: Annotated[Optional[Path], typer.Option(help="result directory to create")] = None,
) -> None:
    """Turn other tools' latency logs into a proxylab result directory, one cell per log."""
    from proxylab import importers, report as report_module
    from proxylab.results import new_run_id

    settings = _settings()
    missing = [str(path) for path in logs if not path.is_file()]
    if missing:
        raise LabError(f"no such log file: {missing[0]}")
    run_dir = out or settings.results_dir / f"import-{new_run_id()}"
    try:
        summary, mismatches = importers.import_into_result_dir(logs, run_dir)
    except (ValueError, FileExistsError) as error:
        raise LabError(str(error)) from None
    report_module.write_markdown(run_dir, summary)
    for line in mismatches:
        console.print(f"differs from the log's own summary: {line}", markup=False)
    print(f"imported {len(logs)} log(s) into {run_dir}; report: {run_dir / 'report.md'}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # One line per readiness probe would drown the lab's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app(standalone_mode=False)
    except LabError as error:
        console.print(f"proxylab: error: {error}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("proxylab: interrupted; every process stopped, finished cells kept", markup=False)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as error:  # click's usage errors
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
