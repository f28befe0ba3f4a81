"""Grafana dashboards as code, built with Grafana's own SDK and committed as JSON.

`python -m proxylab.dashboards` rewrites grafana/dashboards/*.json; a test checks that the
committed files equal a fresh build, and another runs every query against the native stack's
Prometheus. Panels whose data exists only in the Compose stack (the Postgres and Redis
exporters, cAdvisor) say so at the start of their description (`COMPOSE_ONLY`), which is how
that check knows not to expect data from them natively. The SDK lives in the `dashboards`
dependency group; nothing at run time imports this module.

Metric units: LiteLLM's latency histograms and the mock's are in seconds, byte counters in
bytes, `process_cpu_seconds_total` in CPU seconds (its rate is a share of one core).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, GridPos

from proxylab.settings import REPO_ROOT

DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
# Fixed in grafana/provisioning/datasources/prometheus.yml; every panel names it.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="proxylab-prometheus")
GRAFANA_BUILTIN = DataSourceRef(type_val="grafana", uid="-- Grafana --")
# Description prefix of panels that only the Compose stack feeds.
COMPOSE_ONLY = "Compose only:"
# Tag of the annotations `ComposeStack.mark_cell` posts, one per matrix cell.
CELL_ANNOTATION_TAG = "proxylab"
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)
GRID_WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    compose_only: bool = False
    width: int = 12
    height: int = 8


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: tuple[RowSpec, ...]
    annotations: tuple[tuple[str, str], ...] = ()  # (name, PromQL)

    @property
    def file_name(self) -> str:
        return f"{self.uid}.json"


def rate(metric: str, selector: str = "") -> str:
    return f"rate({metric}{selector}[{RATE}])"


def quantiles(metric: str, selector: str = "") -> tuple[Query, ...]:
    """p50, p95 and p99 of a histogram in seconds, over all its series."""
    return tuple(
        Query(f"histogram_quantile({q}, sum by (le) ({rate(f'{metric}_bucket', selector)}))",
              f"p{round(q * 100)}")
        for q in QUANTILES)


def mean(metric: str, legend: str) -> Query:
    return Query(f"sum({rate(f'{metric}_sum')}) / sum({rate(f'{metric}_count')})", legend)


def per_request(expr: str, legend: str) -> Query:
    """`expr` divided by the requests the proxy finished in the same interval."""
    return Query(f"{expr} / {PROXY_REQUESTS}", legend)


PROXY_REQUESTS = f"sum({rate('litellm_proxy_total_requests_metric_total')})"
PROXY_FAILURES = "litellm_proxy_failed_requests_metric_total"
LITELLM = '{job="litellm"}'
LITELLM_DB = '{datname="litellm"}'
NOT_METRICS = '{route!="/metrics"}'
COMPOSE_PROJECT = '{container_label_com_docker_compose_project="proxylab"}'
BY_SERVICE = "sum by (container_label_com_docker_compose_service)"
SERVICE_LEGEND = "{{container_label_com_docker_compose_service}}"

TRAFFIC = RowSpec("Traffic through the proxy", (
    PanelSpec(
        "Requests per second by status",
        "Requests the proxy finished, by HTTP status (litellm_proxy_total_requests_metric).",
        "reqps",
        (Query(f"sum by (status_code) ({rate('litellm_proxy_total_requests_metric_total')})",
               "{{status_code}}"),),
        width=8),
    PanelSpec(
        "Failed requests per second",
        "Requests the proxy failed, by exception class (litellm_proxy_failed_requests_metric). "
        "No series until the first failure.",
        "reqps",
        (Query(f"sum by (exception_class) ({rate(PROXY_FAILURES)})", "{{exception_class}}"),),
        width=8),
    PanelSpec(
        "Failure ratio",
        "Failed share of the requests the proxy finished.",
        "percentunit",
        (per_request(f"sum({rate(PROXY_FAILURES)})", "failed"),),
        width=8),
))

LATENCY = RowSpec("Latency from LiteLLM's histograms (seconds)", (
    PanelSpec(
        "Client-visible latency p50 / p95 / p99",
        "Total time of a request inside the proxy (litellm_request_total_latency_metric), plus "
        "the p95 of its wait before the handler ran (litellm_request_queue_time_seconds), which "
        "the total does not include. A client sees about their sum.",
        "s",
        (*quantiles("litellm_request_total_latency_metric"),
         Query("histogram_quantile(0.95, sum by (le) "
               f"({rate('litellm_request_queue_time_seconds_bucket')}))", "queue p95"))),
    PanelSpec(
        "Proxy-side latency: LiteLLM overhead p50 / p95 / p99",
        "Time the proxy itself adds to a request, without the LLM call "
        "(litellm_overhead_latency_metric).",
        "s", quantiles("litellm_overhead_latency_metric")),
    PanelSpec(
        "LLM API latency p50 / p95 / p99",
        "Time of the call from the proxy to the model, through toxiproxy to the mock "
        "(litellm_llm_api_latency_metric).",
        "s", quantiles("litellm_llm_api_latency_metric")),
    PanelSpec(
        "Mean latency: total, LLM API, overhead, queue",
        "Means from the histograms' sums and counts: where a request's time goes on average.",
        "s",
        (mean("litellm_request_total_latency_metric", "total"),
         mean("litellm_llm_api_latency_metric", "LLM API"),
         mean("litellm_overhead_latency_metric", "overhead"),
         mean("litellm_request_queue_time_seconds", "queue"))),
))

PROXY_PROCESS = RowSpec("The proxy process", (
    PanelSpec(
        "In-flight requests",
        "Requests inside the proxy when Prometheus scraped (litellm_in_flight_requests), and "
        "the most seen within each interval. A queue building up shows here first.",
        "short",
        (Query(f"sum(litellm_in_flight_requests{LITELLM})", "at scrape"),
         Query(f"max(max_over_time(litellm_in_flight_requests{LITELLM}[{RATE}]))",
               "max in interval")),
        width=8),
    PanelSpec(
        "Proxy CPU",
        "CPU the proxy process uses, as a share of one core (process_cpu_seconds_total). At "
        "100 % a single-worker proxy is the bottleneck.",
        "percentunit",
        (Query(rate("process_cpu_seconds_total", LITELLM), "proxy"),),
        width=8),
    PanelSpec(
        "Proxy memory",
        "Resident memory of the proxy process (process_resident_memory_bytes).",
        "bytes",
        (Query(f"process_resident_memory_bytes{LITELLM}", "proxy RSS"),),
        width=8),
))

UPSTREAMS = RowSpec("Upstreams: the mock LLM and toxiproxy's hops", (
    PanelSpec(
        "Mock LLM requests per second",
        "Requests the mock answered, by route and status (mock_llm_requests_total); its own "
        "/metrics scrapes left out.",
        "reqps",
        (Query(f"sum by (route, status) ({rate('mock_llm_requests_total', NOT_METRICS)})",
               "{{route}} {{status}}"),),
        width=8),
    PanelSpec(
        "Mock LLM latency p50 / p95 / p99",
        "Time the mock took per chat completion (mock_llm_request_duration_seconds). Where it "
        "is far below the LLM API latency, that time goes to the proxy or the hop.",
        "s", quantiles("mock_llm_request_duration_seconds", '{route="/v1/chat/completions"}'),
        width=8),
    PanelSpec(
        "Bytes through toxiproxy's hops",
        "Bytes per second each hop forwarded, by direction (toxiproxy_proxy_sent_bytes_total). "
        "toxiproxy counts a connection's bytes when it closes: pooled connections show late.",
        "Bps",
        (Query(f"sum by (proxy, direction) ({rate('toxiproxy_proxy_sent_bytes_total')})",
               "{{proxy}} {{direction}}"),),
        width=8),
))

DATABASE_AND_REDIS = RowSpec("Postgres and Redis work per request", (
    PanelSpec(
        "Postgres transactions per request",
        f"{COMPOSE_ONLY} postgres-exporter. Commits and rollbacks in the proxy's database per "
        "request the proxy finished (pg_stat_database_xact_*).",
        "short",
        (per_request(f"sum({rate('pg_stat_database_xact_commit', LITELLM_DB)})", "commits"),
         per_request(f"sum({rate('pg_stat_database_xact_rollback', LITELLM_DB)})", "rollbacks")),
        compose_only=True),
    PanelSpec(
        "Postgres rows per request",
        f"{COMPOSE_ONLY} postgres-exporter. Rows the proxy's database read and wrote per "
        "request (pg_stat_database_tup_*).",
        "short",
        tuple(per_request(f"sum({rate(f'pg_stat_database_tup_{kind}', LITELLM_DB)})", kind)
              for kind in ("returned", "fetched", "inserted", "updated", "deleted")),
        compose_only=True),
    PanelSpec(
        "Redis commands per request by command",
        f"{COMPOSE_ONLY} redis-exporter. Commands Redis ran per request the proxy finished "
        "(redis_commands_total), by command.",
        "short",
        (Query(f"sum by (cmd) ({rate('redis_commands_total')}) / scalar({PROXY_REQUESTS})",
               "{{cmd}}"),),
        compose_only=True, width=24),
))

CONTAINERS = RowSpec("Containers (Compose with --profile containers)", (
    PanelSpec(
        "CPU per container",
        f"{COMPOSE_ONLY} cAdvisor (`docker compose --profile containers up`). CPU of each "
        "service's containers as a share of one core.",
        "percentunit",
        (Query(f"{BY_SERVICE} ({rate('container_cpu_usage_seconds_total', COMPOSE_PROJECT)})",
               SERVICE_LEGEND),),
        compose_only=True),
    PanelSpec(
        "Memory per container",
        f"{COMPOSE_ONLY} cAdvisor (`docker compose --profile containers up`). Working-set "
        "memory of each service's containers.",
        "bytes",
        (Query(f"{BY_SERVICE} (container_memory_working_set_bytes{COMPOSE_PROJECT})",
               SERVICE_LEGEND),),
        compose_only=True),
))

OVERVIEW = DashboardSpec(
    uid="proxylab-overview",
    title="proxylab: LiteLLM proxy under load",
    description="Traffic, latency and cost of every hop of the lab's request path. Matrix "
                "cells show as annotations (Compose runtime).",
    rows=(TRAFFIC, LATENCY, PROXY_PROCESS, UPSTREAMS, DATABASE_AND_REDIS, CONTAINERS),
    annotations=(("Proxy starts", f"changes(process_start_time_seconds{LITELLM}[{RATE}]) > 0"),),
)

DASHBOARDS = (OVERVIEW,)


def _panel(spec: PanelSpec, panel_id: int, grid: GridPos) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .grid_pos(grid)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(TooltipDisplayMode.MULTI))
    )
    for index, query in enumerate(spec.queries):
        panel.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
    return panel


def build(spec: DashboardSpec) -> dict:
    """The dashboard as Grafana's JSON model: fixed uid, no instance-specific id."""
    dashboard = (
        dashboard_builders.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["proxylab"])
        .readonly()
        .timezone("browser")
        .time("now-15m", "now")
        .refresh("5s")
        .tooltip(DashboardCursorSync.CROSSHAIR)
    )
    dashboard.annotation(
        dashboard_builders.AnnotationQuery()
        .name("Matrix cells")
        .datasource(GRAFANA_BUILTIN)
        .enable(True)
        .icon_color("purple")
        .target(
            dashboard_builders.AnnotationTarget()
            .type("tags")
            .tags([CELL_ANNOTATION_TAG])
            .match_any(False)
            .limit(500)
        )
    )
    for name, expr in spec.annotations:
        dashboard.annotation(
            dashboard_builders.AnnotationQuery()
            .name(name)
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("orange")
            .expr(expr)
        )
    panel_id, y = 1, 0
    for row in spec.rows:
        dashboard.with_row(
            dashboard_builders.Row(row.title)
            .id(panel_id)
            .grid_pos(GridPos(h=1, w=GRID_WIDTH, x=0, y=y))
        )
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel_spec in row.panels:
            if x + panel_spec.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            grid = GridPos(h=panel_spec.height, w=panel_spec.width, x=x, y=y)
            dashboard.with_panel(_panel(panel_spec, panel_id, grid))
            panel_id, x, row_height = (
                panel_id + 1,
                x + panel_spec.width,
                max(row_height, panel_spec.height),
            )
        y += row_height
    return json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))


def render(spec: DashboardSpec) -> str:
    """The committed file's exact text: sorted keys, two-space indent, final newline."""
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def write_all(target: Path = DASHBOARD_DIR) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in DASHBOARDS:
        path = target / spec.file_name
        path.write_text(render(spec))
        written.append(path)
    return written


def main() -> None:
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else DASHBOARD_DIR):
        print(path)


if __name__ == "__main__":
    main()
