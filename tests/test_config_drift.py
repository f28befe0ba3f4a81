"""The native and the Compose runtime run the same configuration: a setting in one is in the other.

Each test compares what the native stack gives a service (its command line, its environment,
its rendered config files, read from `NativeStack`'s own service specs) with what
docker-compose.yml and `proxylab compose render` give the same service. Host names and ports
may differ, and are translated; anything else that one side has and the other lacks fails,
unless it is listed below with the reason.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from composefile import (
    COMPOSE_FILE,
    REPO_ROOT,
    command,
    environment,
    raw_compose,
    read_env_file,
    resolved_compose,
    variables,
)

from proxylab import compose, stack
from proxylab.install import DatabaseAvailability
from proxylab.settings import LabSettings

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SHARED_TEMPLATES = (stack.TOXIPROXY_PROXIES, stack.PROMETHEUS_CONFIG)

# Environment only a native process needs: the proxy's own virtualenv first on PATH.
NATIVE_PROCESS_ENV = {
    "PATH": "the proxy's venv, which the image replaces",
    "VIRTUAL_ENV": "the proxy's venv, which the image replaces",
}
# Command-line options one runtime has and the other does not, and why.
COMPOSE_ONLY_FLAGS = {"redis": {"--protected-mode": "other containers are not loopback clients"}}
NATIVE_ONLY_FLAGS = {
    "postgres": {
        "-D": "the image's entrypoint sets the data directory",
        "-p": "the image listens on 5432; the host port is published",
    }
}
# Lab settings with no Compose variable, and why.
NATIVE_ONLY_SETTINGS = {
    "home": "where native processes keep state; Compose keeps it in volumes",
    "results_dir": "written by the lab on the host in both runtimes",
    "host": "the loopback address native services bind; containers use service names",
    "llm_hop_port": "inside the Compose network the hops keep the default ports",
    "postgres_hop_port": "inside the Compose network the hops keep the default ports",
    "redis_hop_port": "inside the Compose network the hops keep the default ports",
    "proxy_db": "the LiteLLM image ships Prisma's engines: Compose always has the database",
    "toxiproxy_version": "the image tag; test_compose checks it is the same version",
    "service_start_timeout_s": "ComposeStack passes it to `docker compose up --wait-timeout`",
    "port_offset": "applied by the lab to the ports it passes to docker compose",
}
# Compose variables that are no lab setting, and why.
COMPOSE_ONLY_VARIABLES = {
    "PROXYLAB_PROXY_CALLBACKS": "picks the rendered proxy config; natively `up --callbacks`",
    "PROXYLAB_PROXY_TAG_PREFIX": "the image tag's era (versions.image_tag_prefix); natively a venv",
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> LabSettings:
    # Defaults, so both runtimes' hop ports coincide; a private home for the rendered files.
    defaults = {name: field.default for name, field in LabSettings.model_fields.items()}
    defaults["home"] = tmp_path_factory.mktemp("drift-home")
    return LabSettings(_env_file=None, **defaults)


@pytest.fixture(scope="module")
def native(settings: LabSettings) -> stack.NativeStack:
    native_stack = stack.NativeStack(settings)
    # The specs only need these paths as strings; nothing is started.
    native_stack.toxiproxy_binary = Path("toxiproxy-server")
    native_stack.proxy_venv = Path("/proxylab-test/venv")
    native_stack.database = DatabaseAvailability(True, "as in Compose")
    return native_stack


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return resolved_compose()["services"]


def _to_compose(value: str, settings: LabSettings) -> str:
    """A native value as Compose writes it: every upstream of the proxy is the toxiproxy service."""
    return value.replace(settings.host, "toxiproxy")


def _flags(argv: list[str]) -> dict[str, str | None]:
    """Options of a command line: `--name value`, `--name=value`, `-name value` and bare flags."""
    found: dict[str, str | None] = {}
    index = 0
    while index < len(argv):
        part = argv[index]
        if part.startswith("-") and not part.lstrip("-")[:1].isdigit():
            name, equals, value = part.partition("=")
            if equals:
                found[name] = value
            elif index + 1 < len(argv) and not argv[index + 1].startswith("-"):
                found[name] = argv[index + 1]
                index += 1
            else:
                found[name] = None
        index += 1
    return found


def _assert_same_flags(
    service: str, native_argv: list[str], compose_argv: list[str], address_flags: set[str]
) -> None:
    native_flags = _flags(native_argv)
    compose_flags = _flags(compose_argv)
    native_only = set(native_flags) - set(compose_flags) - set(NATIVE_ONLY_FLAGS.get(service, {}))
    compose_only = set(compose_flags) - set(native_flags) - set(COMPOSE_ONLY_FLAGS.get(service, {}))
    assert not native_only, f"{service}: only the native command has {sorted(native_only)}"
    assert not compose_only, f"{service}: only the Compose command has {sorted(compose_only)}"
    for name in set(native_flags) & set(compose_flags) - address_flags:
        assert native_flags[name] == compose_flags[name], (
            f"{service}: {name} is {native_flags[name]!r} natively, "
            f"{compose_flags[name]!r} in Compose"
        )


# --- placeholders of the shared files -------------------------------------------------------


def test_placeholders_have_a_value_in_both_runtimes(settings: LabSettings) -> None:
    used = {name for path in SHARED_TEMPLATES for name in PLACEHOLDER.findall(path.read_text())}
    native = set(stack.template_values(settings))
    in_compose = set(compose.compose_template_values(settings))
    assert used == native, f"native values: missing {used - native}, unused {native - used}"
    assert used == in_compose, (
        f"Compose values: missing {used - in_compose}, unused {in_compose - used}"
    )


def test_runtime_independent_placeholders_have_the_same_value(settings: LabSettings) -> None:
    native = stack.template_values(settings)
    in_compose = compose.compose_template_values(settings)
    for name in ("LITELLM_MASTER_KEY", "SCRAPE_INTERVAL_S"):
        assert native[name] == in_compose[name], name


def test_proxy_config_takes_every_host_from_variables_both_runtimes_set(
    native: stack.NativeStack, services: dict[str, dict]
) -> None:
    text = stack.PROXY_CONFIG.read_text()
    assert not PLACEHOLDER.search(text), "the proxy config is not templated: it reads os.environ/"
    referenced = set(re.findall(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)", text))
    native_env = native._proxy_spec(stack.ProxyConfig()).env
    compose_env = environment(services["litellm"])
    assert referenced <= set(native_env), f"native proxy lacks {referenced - set(native_env)}"
    assert referenced <= set(compose_env), f"Compose proxy lacks {referenced - set(compose_env)}"


# --- the proxy ------------------------------------------------------------------------------


def test_proxy_environment_is_the_same_in_both_runtimes(
    native: stack.NativeStack, settings: LabSettings, services: dict[str, dict]
) -> None:
    native_env = {
        key: value
        for key, value in native._proxy_spec(stack.ProxyConfig()).env.items()
        if key not in NATIVE_PROCESS_ENV
    }
    compose_env = environment(services["litellm"])
    assert set(native_env) == set(compose_env), (
        f"only native: {sorted(set(native_env) - set(compose_env))}, "
        f"only Compose: {sorted(set(compose_env) - set(native_env))}"
    )
    for key, value in native_env.items():
        assert _to_compose(value, settings) == compose_env[key], key


def test_proxy_reaches_every_upstream_through_a_toxiproxy_hop(
    settings: LabSettings, services: dict[str, dict]
) -> None:
    rendered = json.loads(compose.rendered_files(settings)["toxiproxy/proxies.json"])
    hop_ports = {int(proxy["listen"].rsplit(":", 1)[1]) for proxy in rendered}
    compose_env = environment(services["litellm"])
    endpoints = re.findall(r"@?([a-z][a-z0-9-]*):(\d+)", " ".join(compose_env.values()))
    endpoints.append((compose_env["REDIS_HOST"], compose_env["REDIS_PORT"]))
    assert len(endpoints) >= 3
    for host, port in endpoints:
        assert host == "toxiproxy" and int(port) in hop_ports, (
            f"the proxy reaches {host}:{port} directly"
        )


def test_proxy_command_is_the_same_in_both_runtimes(
    native: stack.NativeStack, services: dict[str, dict]
) -> None:
    native_argv = native._proxy_spec(stack.ProxyConfig()).argv[1:]
    _assert_same_flags(
        "litellm",
        native_argv,
        command(services["litellm"]),
        address_flags={"--config", "--host", "--port"},
    )


@pytest.mark.parametrize("callbacks", ["off", "on"])
def test_proxy_config_variants_equal_the_native_rendering(
    native: stack.NativeStack, settings: LabSettings, callbacks: str
) -> None:
    config = compose.PROXY_VARIANTS[callbacks]
    native._proxy_spec(config)  # writes the config the native proxy would start with
    native_text = (settings.state_dir / "litellm-config.yaml").read_text()
    assert (
        compose.rendered_files(settings)[f"litellm/config.callbacks-{callbacks}.yaml"]
        == native_text
    )


def test_a_proxy_setting_axis_reaches_both_runtimes_alike(
    native: stack.NativeStack, settings: LabSettings, tmp_path: Path
) -> None:
    from proxylab.matrix import proxy_config
    from proxylab.plan import MatrixPlan

    plan = MatrixPlan(callbacks=[False, True], user_modes=["none"],
                      proxy_setting_axes={"litellm_settings.request_timeout": [300, 600]})
    variants = set()
    for config in plan.configurations():
        proxy = proxy_config(config, plan)
        native._proxy_spec(proxy)  # writes the config the native proxy would start with
        native_text = native.proxy_config_path().read_text()
        compose_file = compose.write_proxy_variant(proxy, tmp_path)
        assert compose_file.read_text() == native_text, config.config_id
        assert yaml.safe_load(native_text)["litellm_settings"]["request_timeout"] == dict(
            config.proxy_settings)["litellm_settings.request_timeout"]
        # The container is pointed at this variant's file, not at the plain one.
        environment = compose.compose_environment(settings, compose.ComposeSettings(), proxy)
        assert compose_file.name == f"config.callbacks-{environment['PROXYLAB_PROXY_CALLBACKS']}.yaml"
        variants.add(environment["PROXYLAB_PROXY_CALLBACKS"])
    assert len(variants) == len(plan.configurations())


def test_compose_proxy_config_path_matches_a_rendered_variant() -> None:
    raw = " ".join(command(raw_compose()["services"]["litellm"]))
    match = re.search(
        r"/etc/litellm/config\.callbacks-\$\{PROXYLAB_PROXY_CALLBACKS:-(\w+)\}\.yaml", raw
    )
    assert match and match.group(1) in compose.PROXY_VARIANTS
    assert read_env_file()["PROXYLAB_PROXY_CALLBACKS"] in compose.PROXY_VARIANTS


# --- the other services ---------------------------------------------------------------------


def test_toxiproxy_runs_with_the_same_options(
    native: stack.NativeStack, services: dict[str, dict]
) -> None:
    _assert_same_flags(
        "toxiproxy",
        native._toxiproxy_spec().argv[1:],
        command(services["toxiproxy"]),
        address_flags={"-host", "-port", "-config"},
    )


def test_postgres_runs_with_the_same_server_options(services: dict[str, dict]) -> None:
    compose_argv = command(services["postgres"])
    options = dict(
        compose_argv[index + 1].split("=", 1)
        for index, part in enumerate(compose_argv)
        if part == "-c"
    )
    assert options == stack.POSTGRES_SERVER_OPTIONS
    mounts = " ".join(services["postgres"]["volumes"][:1])
    assert mounts.startswith(
        f"./{stack.POSTGRES_INIT.relative_to(REPO_ROOT)}:/docker-entrypoint-initdb.d/"
    )
    assert (
        environment(services["postgres"])["POSTGRES_DB"]
        == LabSettings.model_fields["postgres_db"].default
    )


def test_redis_runs_with_the_same_config_and_options(
    native: stack.NativeStack, services: dict[str, dict]
) -> None:
    native_argv = native._redis_spec().argv
    compose_argv = command(services["redis"])
    assert Path(native_argv[1]) == stack.REDIS_CONFIG
    mounted = {
        source: target
        for source, target, *_ in (entry.split(":") for entry in services["redis"]["volumes"])
    }
    assert mounted[f"./{stack.REDIS_CONFIG.relative_to(REPO_ROOT)}"] == compose_argv[1]
    _assert_same_flags(
        "redis", native_argv[2:], compose_argv[2:], address_flags={"--bind", "--port"}
    )


def test_prometheus_runs_with_the_same_options(
    native: stack.NativeStack, services: dict[str, dict]
) -> None:
    _assert_same_flags(
        "prometheus",
        native._prometheus_spec().argv[1:],
        command(services["prometheus"]),
        address_flags={"--config.file", "--storage.tsdb.path", "--web.listen-address"},
    )


def test_prometheus_scrapes_the_same_jobs_the_same_way(settings: LabSettings) -> None:
    native = yaml.safe_load(
        stack.render_template(stack.PROMETHEUS_CONFIG, stack.template_values(settings))
    )
    rendered = yaml.safe_load(compose.rendered_files(settings)["prometheus/prometheus.yml"])
    compose_only = {
        job["job_name"]
        for job in yaml.safe_load(compose.PROMETHEUS_COMPOSE_JOBS.read_text())["scrape_configs"]
    }
    assert native["global"] == rendered["global"]
    native_jobs = {job["job_name"]: job for job in native["scrape_configs"]}
    compose_jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert set(compose_jobs) - compose_only == set(native_jobs)
    for name, job in native_jobs.items():
        strip = lambda job: {key: value for key, value in job.items() if key != "static_configs"}  # noqa: E731
        assert strip(job) == strip(compose_jobs[name]), name


def test_mock_llm_gets_the_same_environment(
    native: stack.NativeStack, services: dict[str, dict]
) -> None:
    assert native._mock_llm_spec().env == environment(services["mock-llm"])


# --- settings and Compose variables ---------------------------------------------------------


def _compose_variables() -> dict[str, set[str | None]]:
    """Every variable docker-compose.yml reads -> the defaults it gives it (None: no default)."""
    found: dict[str, set[str | None]] = {}
    for name, operator, argument in variables(COMPOSE_FILE.read_text()):
        found.setdefault(name, set()).add(argument if operator in (":-", "-") else None)
    return found


def test_every_compose_variable_is_a_lab_setting_with_the_same_default() -> None:
    lab = LabSettings.model_fields
    extra = compose.ComposeSettings.model_fields
    for name, defaults in _compose_variables().items():
        assert name.startswith("PROXYLAB_"), f"{name}: Compose variables share the lab's prefix"
        if name in COMPOSE_ONLY_VARIABLES:
            continue
        field = name.removeprefix("PROXYLAB_").lower()
        assert field in lab or field in extra, (
            f"{name} is no setting of LabSettings or ComposeSettings"
        )
        default = (lab.get(field) or extra[field]).default
        for given in defaults - {None}:
            assert given == str(default), (
                f"{name} defaults to {given} in Compose, {default} in the lab"
            )


def test_every_lab_setting_has_a_compose_variable_or_a_reason() -> None:
    used = {name.removeprefix("PROXYLAB_").lower() for name in _compose_variables()}
    missing = set(LabSettings.model_fields) - used - set(NATIVE_ONLY_SETTINGS)
    assert not missing, f"lab settings with no Compose counterpart: {sorted(missing)}"
    stale = set(NATIVE_ONLY_SETTINGS) - set(LabSettings.model_fields)
    assert not stale, f"reasons for settings that no longer exist: {sorted(stale)}"


def test_the_lab_passes_every_variable_compose_reads(settings: LabSettings) -> None:
    passed = set(
        compose.compose_environment(
            settings, compose.ComposeSettings(_env_file=None, grafana_admin_password="x")
        )
    )
    read = set(_compose_variables())
    assert passed == read, f"not passed: {sorted(read - passed)}, not read: {sorted(passed - read)}"


def test_env_example_sets_exactly_the_variables_compose_reads() -> None:
    example = set(read_env_file())
    read = set(_compose_variables())
    assert example == read, f"missing: {sorted(read - example)}, unused: {sorted(example - read)}"


def test_grafana_step_is_the_scrape_interval(services: dict[str, dict]) -> None:
    datasource = yaml.safe_load(
        (REPO_ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["jsonData"]["timeInterval"] == "${PROXYLAB_SCRAPE_INTERVAL_S}s"
    assert environment(services["grafana"])["PROXYLAB_SCRAPE_INTERVAL_S"] == str(
        LabSettings.model_fields["scrape_interval_s"].default
    )
