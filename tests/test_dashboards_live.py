"""Every query of the committed Grafana dashboards, run against the native stack's Prometheus.

Grafana cannot be installed here, so the dashboards are checked where their data comes from:
the test starts the native stack (proxy with its Prometheus callback) in a private lab home on
its own ports, sends a short burst through the proxy (plus a few requests that must fail, so
the failure panels have data), and asks Prometheus for every panel's and annotation's query.
Each must parse; each panel not marked Compose-only must return at least one finite value.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from conftest import DASHBOARD_TEST_PORT_OFFSET
from proxylab import load
from proxylab.settings import LabSettings

pytestmark = pytest.mark.stack

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
COMPOSE_ONLY = "Compose only:"  # the prefix proxylab.dashboards gives such panels
PORT_OFFSET = DASHBOARD_TEST_PORT_OFFSET
# Stands in for Grafana's $__rate_interval: long enough to cover the burst while the test waits.
RATE_INTERVAL = "2m"
BURST_REQUESTS = 300
BURST_USERS = 10
FAILING_REQUESTS = 10
UP_TIMEOUT_S = 600
# Some series arrive late by design (toxiproxy counts a connection's bytes when it closes).
DATA_DEADLINE_S = 60


def _queries() -> list[dict]:
    """Every query of the committed dashboards: panel targets and Prometheus annotations."""
    found = []
    files = sorted(DASHBOARD_DIR.glob("*.json"))
    assert files, f"no dashboards in {DASHBOARD_DIR}"
    for path in files:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found.append(
                    {
                        "where": f"{path.name}: {panel['title']} [{target['refId']}]",
                        "expr": target["expr"],
                        "expect_data": not panel.get("description", "").startswith(COMPOSE_ONLY),
                    }
                )
        for annotation in dashboard.get("annotations", {}).get("list", []):
            if annotation.get("expr"):
                # Marks events (proxy restarts): none need to happen during the burst.
                found.append(
                    {
                        "where": f"{path.name}: annotation {annotation['name']}",
                        "expr": annotation["expr"],
                        "expect_data": False,
                    }
                )
    return found


def _settings(home: Path) -> LabSettings:
    values = {name: field.default for name, field in LabSettings.model_fields.items()}
    values.update(home=home, results_dir=home / "results", port_offset=PORT_OFFSET, proxy_db="off")
    return LabSettings(_env_file=None, **values)


def _cli(
    args: list[str], env: dict[str, str], home: Path, timeout_s: float
) -> subprocess.CompletedProcess:
    # The lab home as working directory: a developer's .env in the repository must not apply.
    return subprocess.run(
        [sys.executable, "-m", "proxylab.cli", *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def native_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> LabSettings:
    # Not under tmp_path (mode 700 all the way up): the `postgres` account must reach its
    # cluster inside the home, or it would go to /var/tmp and outlive the test.
    home = Path(tempfile.mkdtemp(prefix="proxylab-dashboards-home-"))
    home.chmod(0o755)
    shared_home = REPO_ROOT / ".proxylab"
    for name in ("venvs", "bin", "tools"):
        if (shared_home / name).exists():
            (home / name).symlink_to(shared_home / name)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROXYLAB_")}
    # No proxy database: the DB panels are Compose-only, and probing Prisma costs minutes here.
    env.update(
        PROXYLAB_HOME=str(home),
        PROXYLAB_RESULTS_DIR=str(home / "results"),
        PROXYLAB_PORT_OFFSET=str(PORT_OFFSET),
        PROXYLAB_PROXY_DB="off",
    )

    def _down() -> None:
        completed = _cli(["down"], env, home, timeout_s=120)
        print(completed.stderr[-500:])
        shutil.rmtree(home, ignore_errors=True)

    request.addfinalizer(_down)
    completed = _cli(["up", "--callbacks"], env, home, timeout_s=UP_TIMEOUT_S)
    if completed.returncode != 0:
        pytest.fail(
            f"`proxylab up --callbacks` failed (exit {completed.returncode}):\n"
            f"{completed.stderr[-3000:]}"
        )
    return _settings(home)


@pytest.fixture(scope="module")
def burst(native_stack: LabSettings, tmp_path_factory: pytest.TempPathFactory) -> LabSettings:
    settings = native_stack
    spec = load.LoadSpec(
        config_id="dashboards",
        total_requests=BURST_REQUESTS,
        users=BURST_USERS,
        spawn_rate=BURST_USERS,
        user_mode="sequential",
        key_mode="shared",
        max_run_time_s=120,
    )
    outcome = load.run_load(settings, spec, tmp_path_factory.mktemp("burst"), None)
    rows = outcome.raw_path.read_text().strip().splitlines()[1:]
    assert len(rows) == BURST_REQUESTS, (
        f"the burst finished {len(rows)} of {BURST_REQUESTS} requests"
    )
    headers = {"Authorization": f"Bearer {settings.master_key}"}
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "fail"}]}
    with httpx.Client(
        base_url=settings.url(settings.proxy_port), headers=headers, timeout=30
    ) as client:
        statuses = [
            client.post("/v1/chat/completions", json=body).status_code
            for _ in range(FAILING_REQUESTS)
        ]
    assert all(status >= 400 for status in statuses), statuses
    # Wait for Prometheus to have scraped the whole burst, a couple of scrape intervals at least.
    expected = BURST_REQUESTS + FAILING_REQUESTS
    deadline = time.monotonic() + 6 * settings.scrape_interval_s + 10
    total = 0.0
    while time.monotonic() < deadline:
        result = _query(settings, "sum(litellm_proxy_total_requests_metric_total)")
        total = float(result["data"]["result"][0]["value"][1]) if result["data"]["result"] else 0.0
        if total >= expected:
            break
        time.sleep(1)
    assert total >= expected, f"Prometheus saw {total} proxy requests, expected {expected}"
    time.sleep(2 * settings.scrape_interval_s)
    return settings


def _query(settings: LabSettings, expr: str) -> dict:
    response = httpx.get(
        settings.url(settings.prometheus_port, "/api/v1/query"),
        params={"query": expr, "time": f"{time.time():.3f}"},
        timeout=10,
    )
    body = response.json()
    assert response.status_code == 200 and body.get("status") == "success", (
        f"{expr}\n -> HTTP {response.status_code}: {body.get('errorType')}: {body.get('error')}"
    )
    return body


def _finite_values(body: dict) -> list[float]:
    result = body["data"]["result"]
    if body["data"]["resultType"] == "scalar":
        result = [{"value": result}]
    return [
        float(series["value"][1]) for series in result if math.isfinite(float(series["value"][1]))
    ]


def test_every_dashboard_query_parses_and_native_panels_have_data(burst: LabSettings) -> None:
    queries = _queries()
    pending = {query["where"]: query for query in queries}
    results: dict[str, list[float]] = {}
    deadline = time.monotonic() + DATA_DEADLINE_S
    while pending:
        for where, query in list(pending.items()):
            expr = query["expr"].replace("$__rate_interval", RATE_INTERVAL)
            values = _finite_values(_query(burst, expr))  # fails here on a parse error
            results[where] = values
            if values or not query["expect_data"]:
                del pending[where]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(burst.scrape_interval_s)
    for query in queries:
        mark = "data" if results.get(query["where"]) else "none"
        print(f"{mark:5} {'native' if query['expect_data'] else 'parse-only':10} {query['where']}")
    missing = [f"{where}: {query['expr']}" for where, query in pending.items()]
    assert not missing, "panels without data natively:\n" + "\n".join(missing)
    assert sum(query["expect_data"] for query in queries) >= 15, "fewer native panels than expected"
