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


RuntimeOption = Annotated[str, typer.Option(
    "--runtime", help="native (local processes) or compose (Docker)")]


@app.command()
def up(callbacks: Annotated[bool, typer.Option("--callbacks/--no-callbacks",
                                               help="start the proxy with the Prometheus callback")] = False,
       runtime: RuntimeOption = "native") -> None:
    """Start the stack and leave it running (stop it with `proxylab down`)."""
    from proxylab.runtimes import make_stack
    from proxylab.stack import PROMETHEUS_CALLBACK, ProxyConfig

    settings = _settings()
    stack = make_stack(settings, runtime)
    stack.up(ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,) if callbacks else ()))
    assert stack.database is not None
    console.print(f"stack up; proxy on {settings.url(settings.proxy_port)} (master key "
                  f"{settings.master_key}); {stack.database.reason}")


@app.command()
def down(runtime: RuntimeOption = "native") -> None:
    """Stop every process `up` or a matrix started, also after a crash, and nothing else."""
    from proxylab.runtimes import make_stack

    stopped = make_stack(_settings(), runtime).down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(runtime: RuntimeOption = "native") -> None:
    """List the lab's processes and whether they are alive."""
    from proxylab.runtimes import make_stack

    statuses = make_stack(_settings(), runtime).status()
    if not statuses:
        print("nothing running")
        raise typer.Exit(1)
    for entry in statuses:
        print(f"{entry.name:15} pid {entry.pid or '-':<8} {'alive' if entry.alive else 'DEAD'}  {entry.log_path}")
    if not all(entry.alive for entry in statuses):
        raise typer.Exit(1)


@app.command()
def install() -> None:
    """Build toxiproxy and the pinned LiteLLM environment if they are missing."""
    from proxylab.stack import NativeStack

    stack = NativeStack(_settings())
    stack.prepare()
    console.print(f"installed; {stack.database.reason if stack.database else ''}")


# Plan field -> the flag that sets it, so a refusal names what the user typed.
PLAN_FLAGS = {"callbacks": "--callbacks", "user_modes": "--user-mode", "key_modes": "--key-mode",
              "llm_latencies_ms": "--llm-latency-ms", "toxics": "--toxic", "repeats": "--repeats",
              "requests": "--requests", "users": "--users", "spawn_rate": "--spawn-rate",
              "warmup_requests": "--warmup", "proxy_versions": "--proxy-version", "order": "--order",
              "replicas": "--replicas", "end_user_max_budget": "--end-user-budget",
              "mock_behaviours": "--mock-behaviours", "model_mix": "--model-mix",
              "model_mix_seed": "--model-mix-seed", "proxy_setting_axes": "--proxy-setting"}


@app.command()
def matrix(
    quick: Annotated[bool, typer.Option(help="the small default matrix (the default)")] = True,
    full: Annotated[bool, typer.Option(help="5000 requests, 50 users, 5 repeats per configuration")] = False,
    callbacks: Annotated[Optional[list[str]], typer.Option(help="off, on (repeatable or comma-separated)")] = None,
    user_mode: Annotated[Optional[list[str]], typer.Option(help="none, sequential, random, created")] = None,
    key_mode: Annotated[Optional[list[str]], typer.Option(help="shared, per_user")] = None,
    llm_latency_ms: Annotated[Optional[list[str]], typer.Option(
        help="latency toxic on the proxy->LLM hop, one configuration per value")] = None,
    toxic: Annotated[Optional[list[str]], typer.Option(
        help="fault scenario, one configuration per flag: none, or HOP:KIND[=VALUE][:OPTION=VALUE] "
             "joined by +, e.g. redis:latency=5:jitter=2:dir=both+llm:down (docs/faults.md)")] = None,
    stream: Annotated[bool, typer.Option(help="stream answers; record time to first token")] = False,
    proxy_version: Annotated[Optional[list[str]], typer.Option(
        help="LiteLLM release, one configuration per value (repeatable or comma-separated)")] = None,
    proxy_setting: Annotated[Optional[list[str]], typer.Option(
        help="proxy setting as an axis, SECTION.KEY=V1,V2 (section litellm_settings, "
             "general_settings or router_settings), one configuration per value; repeatable")] = None,
    profile: Annotated[bool, typer.Option(help="py-spy profile of the proxy in each cell")] = False,
    mock_behaviours: Annotated[Optional[Path], typer.Option(
        help="per-model mock behaviours, JSON or YAML (services/mock_llm/README.md); every model "
             "it names is routed through the proxy")] = None,
    model_mix: Annotated[Optional[str], typer.Option(
        help="share of requests per model, e.g. mock-gpt=0.9,mock-slow=0.1 (summing to 1)")] = None,
    model_mix_seed: Annotated[Optional[int], typer.Option(
        help="seed of the per-request model draws (default 1)")] = None,
    repeats: Annotated[Optional[int], typer.Option(help="runs per configuration")] = None,
    end_user_budget: Annotated[Optional[float], typer.Option(
        help="max budget (USD) of each end user the `created` user mode makes (needs the proxy's DB)")] = None,
    replicas: Annotated[Optional[int], typer.Option(
        help="identical twins of every configuration, each with its own proxy start: an A/A "
             "check of the whole pipeline (replica 2 vs 1 must show no difference)")] = None,
    requests: Annotated[Optional[int], typer.Option(help="requests per cell")] = None,
    users: Annotated[Optional[int], typer.Option(help="concurrent simulated users")] = None,
    spawn_rate: Annotated[Optional[float], typer.Option(help="users started per second (0: all at once)")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="warm-up requests after each proxy start")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="name of the result directory")] = None,
    order: Annotated[Optional[str], typer.Option(
        help="grouped (fewest proxy restarts), abba or random (interleaved blocks, one per repeat)")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="an interrupted run's directory: run only its unfinished cells, with its own plan")] = None,
    runtime: RuntimeOption = "native",
) -> None:
    """Run a matrix (callbacks x user modes x key modes x proxy settings x repeats) and write its report."""
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
    if toxic:
        overrides["toxics"] = toxic
    if proxy_version:
        overrides["proxy_versions"] = _split(proxy_version)
    if proxy_setting:
        from proxylab.plan import parse_proxy_setting

        axes: dict[str, list] = {}
        for text in proxy_setting:
            try:
                name, values = parse_proxy_setting(text)
            except ValueError as error:
                raise LabError(f"--proxy-setting: {error}") from None
            if name in axes:
                raise LabError(f"--proxy-setting: {name} is given twice; list its values in one flag")
            axes[name] = values
        overrides["proxy_setting_axes"] = axes
    if stream:
        overrides["stream"] = True
    if mock_behaviours is not None:
        overrides["mock_behaviours"] = str(mock_behaviours)
    if model_mix is not None:
        from proxylab.model_mix import parse_model_mix

        overrides["model_mix"] = parse_model_mix(model_mix)
    if profile:
        from proxylab.attribution import profiler_binary

        if profiler_binary() is None:
            raise LabError("--profile needs py-spy; run `uv sync` (it is in the lab's environment)")
        overrides["profile"] = True
    for name, value in (("repeats", repeats), ("replicas", replicas), ("requests", requests),
                        ("users", users), ("spawn_rate", spawn_rate), ("warmup_requests", warmup),
                        ("order", order), ("end_user_max_budget", end_user_budget),
                        ("model_mix_seed", model_mix_seed)):
        if value is not None:
            overrides[name] = value
    try:
        plan = MatrixPlan(**{**base.model_dump(), **overrides})
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        where = PLAN_FLAGS.get(field, field) or "matrix"
        raise LabError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    settings = _settings()
    from proxylab.matrix import run_matrix
    from proxylab.runtimes import check_runtime

    finished = 0
    if resume is not None:
        from proxylab import results

        if overrides:
            raise LabError("--resume runs the interrupted run's own plan; drop the other matrix flags")
        previous = results.load_summary(resume)
        if previous["status"] == "complete":
            raise LabError(f"{resume} is complete; there is nothing to resume")
        plan = MatrixPlan.from_summary(previous["plan"])
        runtime = previous["runtime"]
        finished = len(previous["cells"])
        settings = settings.model_copy(update={"results_dir": resume.resolve().parent})
        run_id = resume.resolve().name
    check_runtime(runtime)
    total = len(plan.configurations()) * plan.repeats
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("matrix cells", total=total, completed=finished)

        def _advance(cell: dict) -> None:
            figures = cell["statistics"]["all"]
            p95 = figures["p95_ms"]
            progress.console.print(
                f"  {cell['cell_id']}: {figures['requests']} requests, {figures['failed']} failed, "
                f"p95 {'–' if p95 is None else f'{p95 / 1000:.3f}'} s")
            progress.advance(task)

        run_dir = run_matrix(settings, plan, run_id=run_id, on_cell=_advance, runtime=runtime,
                             resume=resume is not None)
    print(f"report: {run_dir / 'report.md'}")


FloorOption = Annotated[Optional[float], typer.Option(
    help="practical floor in %: smaller real changes are called noise (default 5)")]
SeedOption = Annotated[Optional[int], typer.Option(help="seed of the bootstraps (default 4)")]


def _verdict_options(floor_percent: float | None, seed: int | None):
    """VerdictOptions with the flags given; its dataclass holds every default."""
    from proxylab.verdicts import VerdictOptions

    given = {"floor_percent": floor_percent, "seed": seed}
    try:
        return VerdictOptions(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        raise LabError(str(error)) from None


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a results/<run-id> directory")],
           floor_percent: FloorOption = None, seed: SeedOption = None) -> None:
    """Rebuild report.md and report.html from a result directory's saved results alone."""
    from proxylab import html_report
    from proxylab import report as report_module
    from proxylab import results

    summary = results.load_summary(run_dir)
    options = _verdict_options(floor_percent, seed)
    print(report_module.write_markdown(run_dir, summary, options, verdicts_while_running=True))
    print(html_report.write_html(run_dir, summary, options))


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="baseline result directory (e.g. before a fix)")],
    run_b: Annotated[Path, typer.Argument(help="candidate result directory (e.g. after it)")],
    out: Annotated[Optional[Path], typer.Option(
        help="folder for the comparison report (default results/compare-<a>-vs-<b>)")] = None,
    floor_percent: FloorOption = None, seed: SeedOption = None,
) -> None:
    """Compare the configurations two result directories share (b against a), starting nothing."""
    from proxylab import compare as compare_module

    options = _verdict_options(floor_percent, seed)
    comparison = compare_module.compare_directories(run_a, run_b, options)
    out_dir = out or _settings().results_dir / f"compare-{run_a.name}-vs-{run_b.name}"
    paths = compare_module.write_comparison(comparison, out_dir)
    for line in comparison.pairing_lines():
        print(line)
    for entry in comparison.assessment.comparisons:
        print(entry.label)
        for verdict in entry.verdicts:
            print(f"  {verdict.text}")
    print(f"report: {paths[0]} and {paths[1]}")


@app.command()
def calibrate(
    from_run: Annotated[Optional[Path], typer.Option(
        "--from-run", help="analyse the repeats in this result directory, run nothing")] = None,
    repeats: Annotated[Optional[int], typer.Option(
        help="A/A runs to make (default 6); with --from-run, the budget to evaluate")] = None,
    requests: Annotated[Optional[int], typer.Option(
        help="requests per run (default: the quick plan's); with --from-run, the budget")] = None,
    users: Annotated[Optional[int], typer.Option(help="concurrent simulated users")] = None,
    target_percent: Annotated[float, typer.Option(
        help="change in % the suggested budget must detect")] = 10.0,
    run_id: Annotated[Optional[str], typer.Option(help="name of the A/A result directory")] = None,
    seed: SeedOption = None,
) -> None:
    """A/A noise floor: run-to-run spread, smallest detectable change, repeats for a target."""
    if target_percent <= 0:
        raise LabError("--target-percent must be above 0")
    if from_run is None and repeats is not None and repeats < 2:
        raise LabError("--repeats: an A/A calibration needs at least 2 runs")
    from proxylab import calibrate as calibrate_module

    options = _verdict_options(None, seed)
    if from_run is None:
        from proxylab.matrix import run_matrix
        from proxylab.plan import QUICK_PLAN, MatrixPlan
        from proxylab.results import new_run_id

        base = QUICK_PLAN.model_dump()
        # One configuration: the first value of every axis, so new axes need no change here.
        overrides = {name: value[:1] for name, value in base.items() if isinstance(value, list)}
        overrides.update({"callbacks": [False], "repeats": 6 if repeats is None else repeats})
        overrides.update({name: value for name, value in (("requests", requests), ("users", users))
                          if value is not None})
        try:
            plan = MatrixPlan(**{**base, **overrides})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "calibrate"
            raise LabError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
        from_run = run_matrix(_settings(), plan, run_id=run_id or f"calibrate-{new_run_id()}")
        repeats = requests = None  # evaluate the budget just run
    calibration = calibrate_module.calibrate_run_dir(
        from_run, repeats=repeats, requests=requests, target_effect_percent=target_percent,
        options=options)
    print(calibrate_module.render_text(calibration))


@app.command("import")
def import_logs(
    logs: Annotated[list[Path], typer.Argument(help="seed-investigation text logs or Locust CSV request logs")],
    out: Annotated[Optional[Path], typer.Option(help="result directory to create")] = None,
) -> None:
    """Turn other tools' latency logs into a proxylab result directory, one cell per log."""
    from proxylab import html_report, importers, report as report_module
    from proxylab.results import new_run_id

    settings = _settings()
    missing = [str(path) for path in logs if not path.is_file()]
    if missing:
        raise LabError(f"no such log file: {missing[0]}")
    run_dir = out or settings.results_dir / f"import-{new_run_id()}"
    try:
        summary, check = importers.import_into_result_dir(logs, run_dir)
    except (ValueError, FileExistsError) as error:
        raise LabError(str(error)) from None
    markdown_path = report_module.write_markdown(run_dir, summary)
    html_path = html_report.write_html(run_dir, summary)
    for line in check.within_rounding:
        console.print(f"printed figure accepted: {line}", markup=False)
    for line in check.mismatches:
        console.print(f"differs from the log's own summary: {line}", markup=False)
    print(f"imported {len(logs)} log(s) into {run_dir}; report: {markdown_path} and {html_path}")


@app.command("runtime")
def runtime_command(runtime: Annotated[str, typer.Option(
        "--runtime", help="auto (compose if Docker works, else native), native or compose")] = "auto",
) -> None:
    """Print the runtime a matrix would use on stdout, and why on stderr."""
    from proxylab.runtimes import pick_runtime

    chosen, reason = pick_runtime(runtime)
    console.print(f"runtime {chosen}: {reason}", markup=False, highlight=False)
    print(chosen)


compose_app = typer.Typer(no_args_is_help=True, help="Files of the Docker Compose stack.")
app.add_typer(compose_app, name="compose")


@compose_app.command("render")
def compose_render() -> None:
    """Fill the shared config files for Compose into .compose/ (before `docker compose up`)."""
    from proxylab.compose import render
    from proxylab.settings import REPO_ROOT

    for path in render(_settings()):
        print(path.relative_to(REPO_ROOT))


scenario_app = typer.Typer(no_args_is_help=True, help="Scenario packs that reproduce known regressions.")
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("validate")
def scenario_validate(files: Annotated[list[Path], typer.Argument(help="scenarios/*.yaml")]) -> None:
    """Check scenario files without running anything."""
    from proxylab.scenarios import PROVISIONAL_NOTE, load_scenario

    for path in files:
        scenario = load_scenario(path)
        configurations = len(scenario.plan().configurations())
        print(f"{path}: ok ({scenario.name}: {scenario.versions.before} -> {scenario.versions.after}, "
              f"{configurations} configurations)")
    print(PROVISIONAL_NOTE)


@scenario_app.command("run")
def scenario_run(
    file: Annotated[Path, typer.Argument(help="a scenario file")],
    run_id: Annotated[Optional[str], typer.Option(help="name of the result directory")] = None,
    runtime: RuntimeOption = "native",
) -> None:
    """Run a scenario on its before and after releases and check its expected signature."""
    from proxylab import install, results
    from proxylab.matrix import run_matrix
    from proxylab.scenarios import PROVISIONAL_NOTE, check_signature, load_scenario

    scenario = load_scenario(file)
    settings = _settings()
    if scenario.requires_database and runtime == "native":
        venv = install.ensure_proxy_env(settings)
        database = install.detect_proxy_database(settings, venv)
        if not database.available:
            raise LabError(f"scenario {scenario.name} needs the proxy's database, and here there is "
                           f"none ({database.reason}); run it with --runtime compose")
    run_dir = run_matrix(settings, scenario.plan(), run_id=run_id, runtime=runtime)
    summary = results.load_summary(run_dir)
    lines = check_signature(scenario, summary)
    summary["scenario"] = {"name": scenario.name, "file": str(file), "signature_checks": lines}
    results.save(run_dir, summary)
    print("\n".join(lines))
    print(PROVISIONAL_NOTE)
    print(f"report: {run_dir / 'report.md'}")
    if any(line.startswith("MISMATCH") for line in lines):
        raise typer.Exit(1)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    # One line per readiness probe would drown the lab's own messages.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        # Without standalone mode, Typer returns an exit code (130 for Ctrl-C) instead of exiting.
        exit_code = app(standalone_mode=False)
    except LabError as error:
        console.print(f"proxylab: error: {error}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        exit_code = 130
    except typer.Exit as done:
        exit_code = done.exit_code
    except typer.Abort:
        exit_code = 130
    except typer.TyperException as error:  # usage errors such as an unknown option
        message = error.format_message() if hasattr(error, "format_message") else str(error)
        console.print(f"proxylab: error: {message} (see --help)", markup=False, highlight=False)
        sys.exit(2)
    if exit_code == 130:
        console.print("proxylab: interrupted; every process stopped, finished cells kept", markup=False)
    sys.exit(exit_code if isinstance(exit_code, int) else 0)


if __name__ == "__main__":
    main()
