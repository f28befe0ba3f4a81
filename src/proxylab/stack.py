"""The native stack: Postgres, Redis, the mock LLM, toxiproxy, Prometheus and the LiteLLM proxy.

Every service is a real local process on 127.0.0.1 with its own port, started in dependency
order, checked for readiness, and logged to a file. The proxy reaches each of its upstreams
through a toxiproxy hop, so faults and latency can be injected per hop. The configuration files
under `proxy/` and `services/` are the ones Docker Compose uses too; only host names and
ports differ, filled in here by `render_template`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis
import yaml

from proxylab import install, metadata, versions
from proxylab.errors import LabError
from proxylab.procs import ProcessTable, RunningProcess, ServiceSpec
from proxylab.settings import REPO_ROOT, LabSettings

logger = logging.getLogger(__name__)

PROXY_CONFIG = REPO_ROOT / "proxy" / "config.yaml"
TOXIPROXY_PROXIES = REPO_ROOT / "services" / "toxiproxy" / "proxies.json"
PROMETHEUS_CONFIG = REPO_ROOT / "services" / "prometheus" / "prometheus.yml"
POSTGRES_INIT = REPO_ROOT / "services" / "postgres" / "init.sql"
REDIS_CONFIG = REPO_ROOT / "services" / "redis" / "redis.conf"
MOCK_LLM_APP = REPO_ROOT / "services" / "mock_llm" / "app.py"

# Start order; `down` goes the other way.
SERVICE_ORDER = ("postgres", "redis", "mock-llm", "toxiproxy", "prometheus", "litellm-proxy")
PROXY = "litellm-proxy"
PROMETHEUS_CALLBACK = "prometheus"
# Server options of Postgres in both runtimes (docker-compose.yml passes the same `-c` pairs).
POSTGRES_SERVER_OPTIONS = {"shared_preload_libraries": "pg_stat_statements",
                           "pg_stat_statements.track": "all"}


@dataclass(frozen=True)
class ProxyConfig:
    """What the proxy runs with; any change to it needs a proxy restart."""

    callbacks: tuple[str, ...] = ()
    version: str | None = None
    # Extra proxy settings merged into the shared config, as JSON (hashable, like the rest).
    settings_json: str = ""
    # Models routed besides the shared config's own, each like its first entry (to the mock).
    models: tuple[str, ...] = ()


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    alive: bool
    log_path: str | None


def template_values(settings: LabSettings) -> dict[str, str]:
    """The placeholders of the shared config files, as the native runtime fills them."""
    host = settings.host
    return {
        "TOXIPROXY_LISTEN_HOST": host,
        "TOXIPROXY_HOST": host,
        "TOXIPROXY_API_PORT": str(settings.toxiproxy_api_port),
        "MOCK_LLM_HOST": host,
        "MOCK_LLM_PORT": str(settings.mock_llm_port),
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "REDIS_HOST": host,
        "REDIS_PORT": str(settings.redis_port),
        "LLM_HOP_PORT": str(settings.llm_hop_port),
        "POSTGRES_HOP_PORT": str(settings.postgres_hop_port),
        "REDIS_HOP_PORT": str(settings.redis_hop_port),
        "PROXY_HOST": host,
        "PROXY_PORT": str(settings.proxy_port),
        "LITELLM_MASTER_KEY": settings.master_key,
        "SCRAPE_INTERVAL_S": str(settings.scrape_interval_s),
    }


def render_template(source: Path, values: dict[str, str]) -> str:
    """Fill `${NAME}` placeholders; a placeholder without a value is an error, not a blank."""
    try:
        return string.Template(source.read_text()).substitute(values)
    except KeyError as missing:
        raise LabError(f"{source}: no value for placeholder {missing}") from None


def proxy_environment(settings: LabSettings, database_url: str | None) -> dict[str, str]:
    """Environment of the LiteLLM proxy: upstreams through their toxiproxy hops."""
    env = {
        # Without this the proxy spends ~10 s at start trying to fetch a price map (FIELD-NOTES).
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "MOCK_LLM_API_BASE": settings.url(settings.llm_hop_port, "/v1"),
        "MOCK_LLM_API_KEY": "sk-mock",
        "REDIS_HOST": settings.host,
        "REDIS_PORT": str(settings.redis_hop_port),
        "LITELLM_MASTER_KEY": settings.master_key,
        "LITELLM_LOG": "WARNING",
    }
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def proxy_config_document(config: ProxyConfig) -> tuple[dict, list[str]]:
    """The shared proxy config with this configuration's callbacks, adapted to its release.

    Returns the document and the adaptations made for an older release (for the report).
    """
    document = yaml.safe_load(PROXY_CONFIG.read_text())
    if config.callbacks:
        document.setdefault("litellm_settings", {})["callbacks"] = list(config.callbacks)
    if config.settings_json:
        for section, values in json.loads(config.settings_json).items():
            document.setdefault(section, {}).update(values)
    add_models(document, config.models)
    return document, versions.adapt_config(document, config.version)


def add_models(document: dict, models: tuple[str, ...]) -> None:
    """One model_list entry per model not routed yet, a copy of the first entry for its name.

    The mock answers every model name; what differs between them is the behaviour the mock's
    behaviours file gives each.
    """
    model_list = document.setdefault("model_list", [])
    template = model_list[0]
    routed = {entry["model_name"] for entry in model_list}
    for name in models:
        if name in routed:
            continue
        entry = copy.deepcopy(template)
        entry["model_name"] = name
        provider = template["litellm_params"]["model"].split("/", 1)[0]
        entry["litellm_params"]["model"] = f"{provider}/{name}"
        model_list.append(entry)
        routed.add(name)


def render_proxy_config(config: ProxyConfig) -> str:
    return yaml.safe_dump(proxy_config_document(config)[0], sort_keys=False)


class NativeStack:
    """The stack as local processes; `processes.json` in the state dir remembers what runs."""

    def __init__(self, settings: LabSettings, *, log_dir: Path | None = None,
                 tie_to_parent: bool = False) -> None:
        self.settings = settings
        self.table = ProcessTable(settings.state_dir)
        self.log_dir = log_dir or settings.state_dir / "logs"
        self.tie_to_parent = tie_to_parent
        self.database: install.DatabaseAvailability | None = None
        self.proxy_venv: Path | None = None
        self.proxy_config: ProxyConfig | None = None
        # MOCK_LLM_* variables the mock gets besides its model names (a behaviours file).
        self.mock_env: dict[str, str] = {}

    # --- whole stack -------------------------------------------------------------------

    def up(self, proxy: ProxyConfig | None = ProxyConfig()) -> None:
        """Install what is missing, then start every service; on any failure stop them all."""
        self.refuse_if_running()
        if self.proxy_venv is None:
            self.prepare(proxy.version if proxy else None)
        try:
            self._start_postgres()
            self._start(self._redis_spec())
            self._start(self._mock_llm_spec())
            self._start(self._toxiproxy_spec())
            self._start(self._prometheus_spec())
            if proxy is not None:
                self.start_proxy(proxy)
        except BaseException:
            self.down()
            raise

    def prepare(self, proxy_version: str | None = None) -> None:
        """Install binaries and the proxy's virtualenv, and find out whether it can have a DB."""
        for binary in ("redis-server", "prometheus"):
            if shutil.which(binary) is None:
                raise LabError(f"{binary} is not installed; run scripts/bootstrap.sh")
        postgres_bin_dir()
        self.toxiproxy_binary = install.ensure_toxiproxy(self.settings)
        self.proxy_venv = install.ensure_proxy_env(self.settings, proxy_version)
        self.database = install.detect_proxy_database(self.settings, self.proxy_venv)
        logger.info("proxy database: %s", self.database.reason)

    def down(self) -> list[str]:
        """Stop every process this lab home started, and nothing else."""
        return self.table.stop_all()

    def status(self) -> list[ServiceStatus]:
        statuses = []
        for record in self.table.load():
            alive = record.as_psutil() is not None
            statuses.append(ServiceStatus(record.name, record.pid, alive, record.log_path))
        return statuses

    def refuse_if_running(self) -> None:
        records = self.table.load()
        alive = [record.name for record in records if record.as_psutil() is not None]
        if alive:
            raise LabError(f"the stack is already up ({', '.join(alive)}); run `proxylab down` first")
        if records:
            # A crashed CLI left records of processes that are gone; forget them.
            self.table.stop_all()

    def _start(self, spec: ServiceSpec) -> RunningProcess:
        record = self.table.start(spec, self.log_dir, tie_to_parent=self.tie_to_parent)
        self.table.wait_ready(spec, self.settings.service_start_timeout_s)
        return record

    # --- the proxy ---------------------------------------------------------------------

    def start_proxy(self, config: ProxyConfig) -> None:
        # Cheap when the release's virtualenv is built already (a marker file is compared).
        self.proxy_venv = install.ensure_proxy_env(self.settings, config.version)
        self.proxy_config = config
        self._start(self._proxy_spec(config))
        if PROMETHEUS_CALLBACK in config.callbacks:
            self._require_metrics_endpoint(config)

    def _require_metrics_endpoint(self, config: ProxyConfig) -> None:
        """With the Prometheus callback on, the proxy must serve /metrics/; old releases may not."""
        s = self.settings
        response = httpx.get(s.url(s.proxy_port, "/metrics/"), timeout=10, follow_redirects=True,
                             headers={"Authorization": f"Bearer {s.master_key}"})
        if response.status_code != 200:
            release = config.version or s.proxy_version
            raise LabError(f"LiteLLM {release} started with the Prometheus callback but /metrics/ "
                           f"answers {response.status_code}; see logs/litellm-proxy.log")

    def restart_proxy(self, config: ProxyConfig) -> None:
        """Stop and start the proxy so a new configuration begins from a fresh process."""
        self.table.stop(PROXY)
        self.start_proxy(config)

    def proxy_config_path(self) -> Path:
        """The config file the running proxy was started with (rewritten at every start)."""
        return self.settings.state_dir / "litellm-config.yaml"

    def proxy_pid(self) -> int | None:
        record = self.table.get(PROXY)
        return record.pid if record else None

    def component_versions(self) -> dict[str, str | None]:
        """Versions of what this stack runs, for a result's metadata (after `prepare`)."""
        return metadata.component_versions(
            proxy_python=self.proxy_venv / "bin" / "python" if self.proxy_venv else None,
            postgres_bin=postgres_bin_dir(), toxiproxy_version=self.settings.toxiproxy_version)

    def mark_cell(self, run_id: str, cell: dict) -> None:
        """Nothing to do natively: no Grafana here, and summary.json has each cell's times."""

    @property
    def database_url(self) -> str | None:
        if not (self.database and self.database.available):
            return None
        s = self.settings
        return (f"postgresql://{s.postgres_user}:{s.postgres_password}@{s.host}:"
                f"{s.postgres_hop_port}/{s.postgres_db}")

    # --- service definitions -----------------------------------------------------------

    def _http_ok(self, port: int, path: str, headers: dict[str, str] | None = None) -> bool:
        return httpx.get(self.settings.url(port, path), timeout=2, headers=headers).status_code == 200

    def _start_postgres(self) -> None:
        run_as = _postgres_os_user()
        data_dir = postgres_data_dir(self.settings, run_as)
        if not (data_dir / "PG_VERSION").exists():
            _initdb(self.settings, data_dir, run_as)
        s = self.settings
        options = [f"{name}={value}" for name, value in POSTGRES_SERVER_OPTIONS.items()]
        argv = [str(postgres_bin_dir() / "postgres"), "-D", str(data_dir), "-p", str(s.postgres_port),
                "-c", f"listen_addresses={s.host}", "-c", "unix_socket_directories=",
                *[arg for option in options for arg in ("-c", option)]]
        spec = ServiceSpec("postgres", argv, [s.postgres_port], self._postgres_ready,
                           run_as_user=run_as, stop_signal=signal.SIGINT)  # SIGINT: fast shutdown
        self._start(spec)
        _create_database(s)

    def _postgres_ready(self) -> bool:
        s = self.settings
        with psycopg.connect(host=s.host, port=s.postgres_port, user=s.postgres_user,
                             password=s.postgres_password, dbname="postgres", connect_timeout=2):
            return True

    def _redis_spec(self) -> ServiceSpec:
        s = self.settings
        argv = ["redis-server", str(REDIS_CONFIG), "--bind", s.host, "--port", str(s.redis_port)]
        return ServiceSpec("redis", argv, [s.redis_port],
                           lambda: redis.Redis(host=s.host, port=s.redis_port, socket_timeout=2).ping())

    def _mock_llm_spec(self) -> ServiceSpec:
        s = self.settings
        argv = [sys.executable, str(MOCK_LLM_APP), "--host", s.host, "--port", str(s.mock_llm_port)]
        env = {"MOCK_LLM_MODELS": s.model_name, **self.mock_env}
        return ServiceSpec("mock-llm", argv, [s.mock_llm_port],
                           lambda: self._http_ok(s.mock_llm_port, "/health"), env=env)

    def _toxiproxy_spec(self) -> ServiceSpec:
        s = self.settings
        proxies = s.state_dir / "toxiproxy-proxies.json"
        proxies.write_text(render_template(TOXIPROXY_PROXIES, template_values(s)))
        argv = [str(self.toxiproxy_binary), "-host", s.host, "-port", str(s.toxiproxy_api_port),
                "-config", str(proxies), "-proxy-metrics", "-runtime-metrics",
                # A fixed seed makes jittered toxics repeatable (FIELD-NOTES).
                "-seed", "1"]
        ports = [s.toxiproxy_api_port, s.llm_hop_port, s.postgres_hop_port, s.redis_hop_port]
        return ServiceSpec("toxiproxy", argv, ports, self._toxiproxy_ready)

    def _toxiproxy_ready(self) -> bool:
        # Ready once the API answers and every hop from the config file is listening.
        response = httpx.get(self.settings.url(self.settings.toxiproxy_api_port, "/proxies"), timeout=2)
        return response.status_code == 200 and len(response.json()) == 3

    def _prometheus_spec(self) -> ServiceSpec:
        s = self.settings
        config = s.state_dir / "prometheus.yml"
        config.write_text(render_template(PROMETHEUS_CONFIG, template_values(s)))
        argv = ["prometheus", f"--config.file={config}",
                f"--storage.tsdb.path={s.state_dir / 'prometheus-data'}",
                f"--web.listen-address={s.host}:{s.prometheus_port}",
                "--storage.tsdb.retention.time=7d"]
        return ServiceSpec("prometheus", argv, [s.prometheus_port],
                           lambda: self._http_ok(s.prometheus_port, "/-/ready"))

    def _proxy_spec(self, config: ProxyConfig) -> ServiceSpec:
        s = self.settings
        assert self.proxy_venv is not None
        rendered = self.proxy_config_path()
        rendered.write_text(render_proxy_config(config))
        argv = [str(self.proxy_venv / "bin" / "litellm"), "--config", str(rendered),
                "--host", s.host, "--port", str(s.proxy_port), "--num_workers", "1"]
        env = proxy_environment(s, self.database_url)
        # The proxy's venv, not the lab's, must be first on PATH (prisma, its own python).
        env["PATH"] = f"{self.proxy_venv / 'bin'}:{os.environ.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.proxy_venv)
        return ServiceSpec(PROXY, argv, [s.proxy_port],
                           lambda: self._http_ok(s.proxy_port, "/health/liveliness"), env=env)


# --- Postgres helpers ---------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """The newest Debian PostgreSQL server's binaries (`/usr/lib/postgresql/<major>/bin`)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda path: int(re.sub(r"\D", "", path.parent.parent.name) or 0))
    if not candidates:
        raise LabError("PostgreSQL server is not installed; run scripts/bootstrap.sh")
    return candidates[-1].parent


def postgres_data_dir(settings: LabSettings, run_as: str | None) -> Path:
    """The cluster's folder: in the lab's state dir, unless the server's account cannot reach it.

    Running as root, the server runs as `postgres`, which cannot enter a private home such as
    /root; the cluster then lives in /var/tmp under a name derived from the lab's home.
    """
    preferred = settings.state_dir / "postgres"
    if run_as is None or _reachable_by_others(settings.state_dir):
        return preferred
    tag = hashlib.sha256(str(settings.home.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"proxylab-postgres-{tag}"


def _reachable_by_others(folder: Path) -> bool:
    """Whether every folder from / down to `folder` lets other accounts pass through."""
    folder = folder.resolve()
    for part in [folder, *folder.parents]:
        if part.exists() and not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _postgres_os_user() -> str | None:
    # Postgres refuses to run as root; Debian's package creates the `postgres` account.
    return "postgres" if os.geteuid() == 0 else None


def _initdb(settings: LabSettings, data_dir: Path, run_as: str | None) -> None:
    logger.info("creating a private Postgres cluster in %s", data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if run_as:
        shutil.chown(data_dir, run_as, run_as)
    data_dir.chmod(0o700)
    with tempfile.NamedTemporaryFile("w", dir=data_dir.parent, delete=False) as pwfile:
        pwfile.write(settings.postgres_password)
    try:
        if run_as:
            shutil.chown(pwfile.name, run_as, run_as)
        completed = subprocess.run(
            [str(postgres_bin_dir() / "initdb"), "-D", str(data_dir), "-U", settings.postgres_user,
             "--auth=scram-sha-256", f"--pwfile={pwfile.name}", "-E", "UTF8", "--no-instructions"],
            capture_output=True, text=True, user=run_as,
        )
    finally:
        os.unlink(pwfile.name)
    if completed.returncode != 0:
        shutil.rmtree(data_dir, ignore_errors=True)
        raise LabError(f"initdb failed: {completed.stderr.strip().splitlines()[-1:]}")


def _create_database(settings: LabSettings) -> None:
    s = settings
    common = dict(host=s.host, port=s.postgres_port, user=s.postgres_user, password=s.postgres_password)
    with psycopg.connect(dbname="postgres", autocommit=True, **common) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.postgres_db,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{s.postgres_db}"')
    with psycopg.connect(dbname=s.postgres_db, autocommit=True, **common) as connection:
        connection.execute(POSTGRES_INIT.read_text())
