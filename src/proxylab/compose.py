"""The Compose runtime: the shared config files rendered for Compose, and `docker compose` driven.

docker-compose.yml runs the same services as the native stack from the same files. The files
with `${NAME}` placeholders (toxiproxy's proxy list, Prometheus' scrape config) are filled here
with Compose's host names and the ports the images listen on, into `.compose/`, which the
containers mount; the proxy config takes its hosts from environment variables that
docker-compose.yml sets, and is rendered once per callback setting. `ComposeStack` offers the
interface of `NativeStack` that the matrix uses, so a matrix runs on either runtime and writes
the same results. The lab's own load generator stays on the host and reaches the proxy through
its published port on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from proxylab import metadata, versions
from proxylab.errors import LabError
from proxylab.install import DatabaseAvailability
from proxylab.settings import REPO_ROOT, LabSettings
from proxylab.stack import (
    PROMETHEUS_CALLBACK,
    PROMETHEUS_CONFIG,
    TOXIPROXY_PROXIES,
    ProxyConfig,
    ServiceStatus,
    render_proxy_config,
    render_template,
)

logger = logging.getLogger(__name__)

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
# Rendered files; docker-compose.yml mounts its subfolders. Git ignores it.
# TODO: one folder per clone, not per lab home: two homes with different master keys or scrape
# intervals overwrite each other's rendering.
RENDER_DIR = REPO_ROOT / ".compose"
PROMETHEUS_COMPOSE_JOBS = REPO_ROOT / "services" / "prometheus" / "compose-jobs.yml"

# Where each service listens inside the Compose network (the images' own ports).
CONTAINER_PORTS = {
    "postgres": 5432,
    "redis": 6379,
    "mock-llm": 8080,
    "toxiproxy": 8474,
    "litellm": 4000,
    "prometheus": 9090,
    "grafana": 3000,
    "locust-master": 8089,
}
PROXY_SERVICE = "litellm"
# What the lab starts for a matrix: no Locust (the lab's generator runs on the host), and the
# proxy separately, once per configuration.
LAB_SERVICES = (
    "postgres",
    "redis",
    "mock-llm",
    "toxiproxy",
    "prometheus",
    "grafana",
    "postgres-exporter",
    "redis-exporter",
)

# Callback settings that have a rendered proxy config; PROXYLAB_PROXY_CALLBACKS picks one.
# A configuration that differs from both (a release that needs an adapted config, proxy
# settings of a scenario) gets its own file, "<variant>.<digest>", written before its start.
PROXY_VARIANTS = {"off": ProxyConfig(), "on": ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,))}
GRAFANA_ANNOTATION_TAG = "proxylab"
DOCKER_TIMEOUT_S = 60.0


class ComposeSettings(BaseSettings):
    """Settings only the Compose stack has; same prefix and .env file as `LabSettings`."""

    model_config = SettingsConfigDict(env_prefix="PROXYLAB_", env_file=".env", extra="ignore")

    grafana_port: int = Field(13000, ge=1024, le=32767)
    locust_port: int = Field(18089, ge=1024, le=32767)
    port_offset: int = Field(0, ge=0, le=10000)
    grafana_admin_user: str = "admin"
    # No default: docker-compose.yml refuses to start Grafana without it.
    grafana_admin_password: str | None = None

    @model_validator(mode="after")
    def _apply_port_offset(self) -> "ComposeSettings":
        # The same shift LabSettings gives its ports, so one offset moves the whole stack.
        if self.port_offset:
            for name in ("grafana_port", "locust_port"):
                object.__setattr__(self, name, getattr(self, name) + self.port_offset)
            object.__setattr__(self, "port_offset", 0)
        return self


def container_hop_ports() -> dict[str, int]:
    """toxiproxy's listen ports inside the Compose network: the lab's default hop ports.

    Fixed, not shifted by a port offset: nothing outside the Compose network reaches them.
    """
    fields = LabSettings.model_fields
    return {
        name: fields[name].default
        for name in ("llm_hop_port", "postgres_hop_port", "redis_hop_port")
    }


def compose_template_values(settings: LabSettings) -> dict[str, str]:
    """The placeholders of the shared config files as Compose fills them (see `template_values`)."""
    hops = container_hop_ports()
    return {
        # Every interface of the toxiproxy container, so other containers reach the hops.
        "TOXIPROXY_LISTEN_HOST": "0.0.0.0",
        "TOXIPROXY_HOST": "toxiproxy",
        "TOXIPROXY_API_PORT": str(CONTAINER_PORTS["toxiproxy"]),
        "MOCK_LLM_HOST": "mock-llm",
        "MOCK_LLM_PORT": str(CONTAINER_PORTS["mock-llm"]),
        "POSTGRES_HOST": "postgres",
        "POSTGRES_PORT": str(CONTAINER_PORTS["postgres"]),
        "REDIS_HOST": "redis",
        "REDIS_PORT": str(CONTAINER_PORTS["redis"]),
        "LLM_HOP_PORT": str(hops["llm_hop_port"]),
        "POSTGRES_HOP_PORT": str(hops["postgres_hop_port"]),
        "REDIS_HOP_PORT": str(hops["redis_hop_port"]),
        "PROXY_HOST": PROXY_SERVICE,
        "PROXY_PORT": str(CONTAINER_PORTS[PROXY_SERVICE]),
        "LITELLM_MASTER_KEY": settings.master_key,
        "SCRAPE_INTERVAL_S": str(settings.scrape_interval_s),
    }


def rendered_files(settings: LabSettings) -> dict[str, str]:
    """Every file `render` writes, as path below `.compose/` -> content."""
    values = compose_template_values(settings)
    files = {
        "toxiproxy/proxies.json": render_template(TOXIPROXY_PROXIES, values),
        "prometheus/prometheus.yml": _prometheus_config(values),
    }
    for name, config in PROXY_VARIANTS.items():
        files[f"litellm/config.callbacks-{name}.yaml"] = render_proxy_config(config)
    return files


def _prometheus_config(values: dict[str, str]) -> str:
    """The shared scrape config plus the jobs only Compose has (the exporters, cAdvisor)."""
    document = yaml.safe_load(render_template(PROMETHEUS_CONFIG, values))
    extra = yaml.safe_load(PROMETHEUS_COMPOSE_JOBS.read_text())
    document["scrape_configs"] = document["scrape_configs"] + extra["scrape_configs"]
    header = (
        f"# Rendered by `proxylab compose render` from {PROMETHEUS_CONFIG.relative_to(REPO_ROOT)}\n"
        f"# and {PROMETHEUS_COMPOSE_JOBS.relative_to(REPO_ROOT)}; edit those, not this file.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def render(settings: LabSettings, target: Path = RENDER_DIR) -> list[Path]:
    """Write the rendered files below `target`; return their paths.

    Each file is replaced in place (truncated and rewritten), never renamed over: a container
    that mounts its folder sees the new content on its next start.
    """
    written = []
    for relative, content in rendered_files(settings).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written


def compose_environment(
    settings: LabSettings, extra: ComposeSettings, proxy: ProxyConfig | None = None
) -> dict[str, str]:
    """The variables docker-compose.yml interpolates, from the lab's settings.

    The lab passes them in the environment, which wins over `.env`, so the stack always runs
    with the ports, keys and versions the lab's own clients (load, toxics, warm-up) use.
    """
    proxy = proxy or PROXY_VARIANTS["on"]
    env = {
        "PROXYLAB_MASTER_KEY": settings.master_key,
        "PROXYLAB_POSTGRES_USER": settings.postgres_user,
        "PROXYLAB_POSTGRES_PASSWORD": settings.postgres_password,
        "PROXYLAB_POSTGRES_DB": settings.postgres_db,
        "PROXYLAB_MODEL_NAME": settings.model_name,
        "PROXYLAB_SCRAPE_INTERVAL_S": str(settings.scrape_interval_s),
        "PROXYLAB_PROXY_VERSION": proxy.version or settings.proxy_version,
        "PROXYLAB_PROXY_TAG_PREFIX": versions.image_tag_prefix(proxy.version or settings.proxy_version),
        "PROXYLAB_PROXY_CALLBACKS": proxy_variant(proxy),
        "PROXYLAB_PROXY_PORT": str(settings.proxy_port),
        "PROXYLAB_PROMETHEUS_PORT": str(settings.prometheus_port),
        "PROXYLAB_TOXIPROXY_API_PORT": str(settings.toxiproxy_api_port),
        "PROXYLAB_MOCK_LLM_PORT": str(settings.mock_llm_port),
        "PROXYLAB_POSTGRES_PORT": str(settings.postgres_port),
        "PROXYLAB_REDIS_PORT": str(settings.redis_port),
        "PROXYLAB_GRAFANA_PORT": str(extra.grafana_port),
        "PROXYLAB_LOCUST_PORT": str(extra.locust_port),
        "PROXYLAB_GRAFANA_ADMIN_USER": extra.grafana_admin_user,
    }
    if extra.grafana_admin_password:
        env["PROXYLAB_GRAFANA_ADMIN_PASSWORD"] = extra.grafana_admin_password
    return env


def proxy_variant(config: ProxyConfig) -> str:
    """Name of the rendered proxy config for `config`: `on`, `off` or `on.<digest>` etc.

    The digest is of the rendered file, so a release or settings that change nothing in the
    config share the plain variant.
    """
    for name, variant in PROXY_VARIANTS.items():
        if variant.callbacks == config.callbacks:
            content = render_proxy_config(config)
            if content == render_proxy_config(variant):
                return name
            return f"{name}.{hashlib.sha256(content.encode()).hexdigest()[:10]}"
    raise LabError(
        f"the Compose runtime has proxy configs for callbacks {sorted(PROXY_VARIANTS)} "
        f"only, not {list(config.callbacks)}"
    )


def write_proxy_variant(config: ProxyConfig, target: Path | None = None) -> Path:
    """The rendered file of `config`'s variant below `target` (written if it is not there)."""
    target = RENDER_DIR if target is None else target
    path = target / "litellm" / f"config.callbacks-{proxy_variant(config)}.yaml"
    content = render_proxy_config(config)
    if not path.exists() or path.read_text() != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return path


def engine_problem() -> str | None:
    """Why `docker compose` cannot run here, in one line; None when it can."""
    docker = shutil.which("docker")
    if docker is None:
        return "the `docker` command is not installed"
    try:
        info = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT_S,
        )
        if info.returncode != 0:
            return f"no working Docker engine ({_last_line(info.stderr or info.stdout)})"
        plugin = subprocess.run(
            [docker, "compose", "version", "--short"],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within a minute"
    if plugin.returncode != 0:
        return "the Docker Compose v2 plugin (`docker compose`) is not installed"
    return None


def require_engine() -> None:
    problem = engine_problem()
    if problem:
        raise LabError(f"the compose runtime needs Docker: {problem}; use --runtime native")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


@dataclass(frozen=True)
class _Container:
    service: str
    container_id: str
    state: str


class ComposeStack:
    """The stack as Compose services; Docker, not a state file, remembers what runs."""

    def __init__(
        self, settings: LabSettings, *, log_dir: Path | None = None, tie_to_parent: bool = False
    ) -> None:
        self.settings = settings
        self.extra = ComposeSettings()
        # Where `down` saves every service's log first; only a matrix asks for that.
        self.log_dir = log_dir
        # TODO: containers cannot die with the CLI as native processes do (tie_to_parent); a
        # killed CLI leaves them up until `proxylab down --runtime compose`.
        self.tie_to_parent = tie_to_parent
        self.database: DatabaseAvailability | None = None
        self.proxy_venv: Path | None = None  # the proxy runs from its image, not a venv
        self.proxy_config: ProxyConfig | None = None
        self._warned_no_grafana_login = False

    # --- whole stack -------------------------------------------------------------------

    def prepare(self, proxy_version: str | None = None) -> None:
        """Check the engine and render the config files; images are pulled by `up`."""
        require_engine()
        render(self.settings)
        self.database = DatabaseAvailability(
            True, "the LiteLLM image ships Prisma's engines; the proxy uses Postgres"
        )

    def up(self, proxy: ProxyConfig | None = ProxyConfig()) -> None:
        """Start the lab's services and wait until Docker reports them healthy."""
        self.refuse_if_running()
        self.prepare(proxy.version if proxy else None)
        try:
            self._compose(
                ["up", "--detach", "--wait", "--wait-timeout", self._wait_timeout(), *LAB_SERVICES]
            )
            if proxy is not None:
                self.start_proxy(proxy)
        except BaseException:
            try:
                self.down()
            except LabError as error:
                # The start's own error matters more; this one only says what was left behind.
                logger.error("stopping the Compose stack after a failed start failed: %s", error)
            raise

    def down(self) -> list[str]:
        """Stop and remove the project's containers (volumes stay); return the services stopped."""
        require_engine()
        running = sorted(
            {container.service for container in self._containers() if container.state == "running"}
        )
        if self.log_dir is not None:
            self._save_logs(running)
        self._compose(["down", "--remove-orphans"])
        return running

    def status(self) -> list[ServiceStatus]:
        require_engine()
        containers = self._containers()
        pids = self._pids([container.container_id for container in containers])
        return [
            ServiceStatus(
                container.service,
                pids.get(container.container_id),
                container.state == "running",
                f"docker compose logs {container.service}",
            )
            for container in containers
        ]

    def refuse_if_running(self) -> None:
        require_engine()
        running = sorted({container.service for container in self._containers()})
        if running:
            raise LabError(
                f"the Compose stack is already up ({', '.join(running)}); "
                "run `proxylab down --runtime compose` first"
            )

    def _wait_timeout(self) -> str:
        return str(int(self.settings.service_start_timeout_s))

    # --- the proxy ---------------------------------------------------------------------

    def start_proxy(self, config: ProxyConfig) -> None:
        """(Re)create the proxy's container with `config` and wait until it is healthy."""
        write_proxy_variant(config)  # refuses a callback set without a rendered config
        self.proxy_config = config
        self._compose(
            [
                "up",
                "--detach",
                "--wait",
                "--wait-timeout",
                self._wait_timeout(),
                "--no-deps",
                "--force-recreate",
                PROXY_SERVICE,
            ],
            proxy=config,
        )

    def restart_proxy(self, config: ProxyConfig) -> None:
        """A new container, so a new configuration begins from a fresh process."""
        self.start_proxy(config)

    def proxy_config_path(self) -> Path:
        """The rendered config file the proxy container mounts for its current configuration."""
        if self.proxy_config is None:
            raise LabError("the proxy has not been started by this lab")
        return write_proxy_variant(self.proxy_config)

    def proxy_pid(self) -> int | None:
        """Host PID of the proxy container's main process, for CPU and memory sampling.

        TODO: assumes the image's entrypoint execs `litellm`, so the main process is the proxy;
        a shell that stays as PID 1 would hide the proxy's CPU from `load.run_load`.
        """
        containers = [
            c for c in self._containers() if c.service == PROXY_SERVICE and c.state == "running"
        ]
        if not containers:
            return None
        return self._pids([containers[0].container_id]).get(containers[0].container_id)

    # --- results metadata and annotations ----------------------------------------------

    def component_versions(self) -> dict[str, str | None]:
        """Versions from the image tags Compose resolves, plus the host's load generator."""
        config = json.loads(self._compose(["config", "--format", "json"]).stdout)
        images = {name: service.get("image", "") for name, service in config["services"].items()}

        def tag(service: str) -> str | None:
            image = images.get(service, "")
            return (
                image.rsplit(":", 1)[1].removeprefix("main-v").removeprefix("v")
                if ":" in image
                else None
            )

        host = metadata.component_versions(
            proxy_python=None, postgres_bin=None, toxiproxy_version=self.settings.toxiproxy_version
        )
        return {
            **host,
            "litellm": tag(PROXY_SERVICE),
            "postgres": tag("postgres"),
            "redis": tag("redis"),
            "toxiproxy": tag("toxiproxy"),
            "prometheus": tag("prometheus"),
            "images": images,
        }

    def mark_cell(self, run_id: str, cell: dict) -> None:
        """Add the cell to Grafana's timeline: one region annotation tagged for the dashboards."""
        if not self.extra.grafana_admin_password:
            if not self._warned_no_grafana_login:
                logger.warning(
                    "no PROXYLAB_GRAFANA_ADMIN_PASSWORD: matrix cells are not annotated in Grafana"
                )
                self._warned_no_grafana_login = True
            return
        body = {
            "time": _epoch_ms(cell["started_at"]),
            "timeEnd": _epoch_ms(cell["finished_at"]),
            "tags": [GRAFANA_ANNOTATION_TAG, f"run:{run_id}", f"config:{cell['config_id']}"],
            "text": f"{run_id} {cell['cell_id']}",
        }
        login = f"{self.extra.grafana_admin_user}:{self.extra.grafana_admin_password}"
        headers = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
        try:
            response = httpx.post(
                self.settings.url(self.extra.grafana_port, "/api/annotations"),
                json=body,
                headers=headers,
                timeout=5,
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            # An annotation helps find a cell; losing one must not stop the matrix.
            logger.warning("Grafana annotation for cell %s failed: %s", cell["cell_id"], error)

    # --- docker compose ----------------------------------------------------------------

    def _compose(
        self, args: list[str], *, proxy: ProxyConfig | None = None, timeout_s: float | None = None
    ) -> subprocess.CompletedProcess:
        argv = [
            "docker",
            "compose",
            "--project-directory",
            str(REPO_ROOT),
            "--file",
            str(COMPOSE_FILE),
            *args,
        ]
        env = {
            **os.environ,
            **compose_environment(self.settings, self.extra, proxy or self.proxy_config),
        }
        timeout_s = timeout_s or self.settings.service_start_timeout_s + DOCKER_TIMEOUT_S
        try:
            completed = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=REPO_ROOT
            )
        except subprocess.TimeoutExpired:
            raise LabError(
                f"`docker compose {args[0]}` did not finish within {timeout_s:.0f} s"
            ) from None
        if completed.returncode != 0:
            logger.error(
                "command failed: %s\nexit code: %s\nstdout:\n%s\nstderr:\n%s",
                " ".join(argv),
                completed.returncode,
                completed.stdout,
                completed.stderr,
            )
            raise LabError(
                f"`docker compose {args[0]}` failed (exit {completed.returncode}): "
                f"{_last_line(completed.stderr or completed.stdout)}"
            )
        return completed

    def _containers(self) -> list[_Container]:
        output = self._compose(["ps", "--all", "--format", "json"]).stdout
        # Compose prints one JSON object per line (older releases: one JSON array).
        entries: list[dict] = []
        for line in output.splitlines():
            line = line.strip()
            if line:
                parsed = json.loads(line)
                entries.extend(parsed if isinstance(parsed, list) else [parsed])
        return [
            _Container(entry["Service"], entry["ID"], entry.get("State", "")) for entry in entries
        ]

    def _pids(self, container_ids: list[str]) -> dict[str, int | None]:
        if not container_ids:
            return {}
        completed = subprocess.run(
            ["docker", "inspect", "--format", "{{.Id}} {{.State.Pid}}", *container_ids],
            capture_output=True,
            text=True,
            timeout=DOCKER_TIMEOUT_S,
        )
        pids: dict[str, int | None] = {}
        for line in completed.stdout.splitlines():
            full_id, pid = line.split()
            short = next((cid for cid in container_ids if full_id.startswith(cid)), full_id)
            pids[short] = int(pid) or None  # 0: not running
        return pids

    def _save_logs(self, services: list[str]) -> None:
        assert self.log_dir is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in services:
            try:
                logs = self._compose(["logs", "--no-color", "--timestamps", service])
            except LabError as error:
                logger.warning("could not save the log of %s: %s", service, error)
                continue
            (self.log_dir / f"{service}.log").write_text(logs.stdout + logs.stderr)


def _epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)
