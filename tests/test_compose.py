"""Checks of docker-compose.yml that need no Docker engine, and of the Compose runtime's refusal.

The file is loaded twice: by the Go loader Docker Compose v2 itself uses (tools/composecheck,
built here with `go build`), and by the small interpolator of tests/composefile.py for the
checks of this project's own rules: pinned images, loopback ports, mounts, host names, health
checks, Dockerfile sources.
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from composefile import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO_ROOT,
    bind_mounts,
    command,
    environment,
    published_ports,
    raw_compose,
    read_env_file,
    resolved_compose,
    variables,
)

from proxylab import compose
from proxylab.settings import LabSettings

COMPOSECHECK_DIR = REPO_ROOT / "tools" / "composecheck"
GO_BUILD_TIMEOUT_S = 600
# Services without a health check, and why.
NO_HEALTHCHECK = {"locust-worker": "serves nothing to probe; the master's web UI lists workers"}
# Host names that are no Compose service: loopback and "every interface" addresses.
NOT_SERVICE_HOSTS = {"127.0.0.1", "0.0.0.0", "localhost"}
VERSION_IN_TAG = re.compile(r"\d+\.\d+")
SECRET_NAME = re.compile(r"PASS|KEY|SECRET|TOKEN|DATABASE_URL")
# Secret-looking variables that hold no secret, and why.
NOT_SECRETS = {"MOCK_LLM_API_KEY": "the mock accepts any key; the native stack sends the same"}
HOST_PORT = re.compile(
    r"(?:[a-z][a-z0-9+.-]*://)?(?:[^@/\s\"']*@)?([A-Za-z0-9][A-Za-z0-9_.-]*):(\d+)"
)


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return resolved_compose()["services"]


@pytest.fixture(scope="module")
def lab_settings() -> LabSettings:
    # Defaults only: neither the developer's .env nor PROXYLAB_* variables may change the check.
    return LabSettings(
        _env_file=None, **{name: field.default for name, field in LabSettings.model_fields.items()}
    )


# --- the file itself -----------------------------------------------------------------------


def test_top_level_has_a_name_and_no_version_key() -> None:
    document = raw_compose()
    assert document.get("name") == "proxylab"
    assert "version" not in document, "the `version` key is obsolete in Compose v2"


def test_every_service_says_where_it_sits_on_the_request_path() -> None:
    lines = COMPOSE_FILE.read_text().splitlines()
    missing = []
    for name in raw_compose()["services"]:
        index = lines.index(f"  {name}:")
        if not lines[index - 1].strip().startswith("#") or "request path" not in _comment_above(
            lines, index
        ):
            missing.append(name)
    assert not missing, f"services without a request-path comment above them: {missing}"


def _comment_above(lines: list[str], index: int) -> str:
    comment = []
    while index > 0 and lines[index - 1].strip().startswith("#"):
        index -= 1
        comment.insert(0, lines[index].strip("# "))
    return " ".join(comment).lower()


def test_every_image_is_pinned(services: dict[str, dict]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image"
        assert "@sha256:" in image or _tag(image), f"{name}: image {image} has no tag"
        tag = _tag(image)
        assert tag != "latest", f"{name}: image {image} uses `latest`"
        if "build" not in service:
            # A pulled image needs a version in its tag; `7` or `main-stable` moves under us.
            assert VERSION_IN_TAG.search(tag), f"{name}: image tag {tag!r} names no exact version"


def _tag(image: str) -> str | None:
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def test_proxy_image_follows_the_lab_pin_and_skips_compromised_releases(
    lab_settings: LabSettings,
) -> None:
    from proxylab.settings import DEFAULT_PROXY_VERSION

    try:
        from proxylab.versions import COMPROMISED_PROXY_VERSIONS
    except ImportError:  # before the version axis, the list lived with the settings
        from proxylab.settings import COMPROMISED_PROXY_VERSIONS

    raw_image = raw_compose()["services"]["litellm"]["image"]
    assert variables(raw_image) == [("PROXYLAB_PROXY_TAG_PREFIX", ":-", "v"),
                                    ("PROXYLAB_PROXY_VERSION", ":-", DEFAULT_PROXY_VERSION)]
    assert read_env_file()["PROXYLAB_PROXY_VERSION"] == DEFAULT_PROXY_VERSION
    assert read_env_file()["PROXYLAB_PROXY_TAG_PREFIX"] == "v"
    for version in COMPROMISED_PROXY_VERSIONS:
        assert version not in raw_image


def test_toxiproxy_image_is_the_version_the_native_stack_builds(
    services: dict[str, dict], lab_settings: LabSettings
) -> None:
    assert _tag(services["toxiproxy"]["image"]) == lab_settings.toxiproxy_version.removeprefix("v")


def test_every_dockerfile_base_image_is_pinned() -> None:
    for dockerfile in _dockerfiles():
        for line in _instructions(dockerfile):
            if line.upper().startswith("FROM "):
                image = [part for part in line.split()[1:] if not part.startswith("--")][0]
                tag = _tag(image)
                assert tag and tag != "latest" and VERSION_IN_TAG.search(tag), (
                    f"{dockerfile}: {line}"
                )


def test_every_dockerfile_copy_source_exists() -> None:
    checked = 0
    for dockerfile in _dockerfiles():
        context = dockerfile.parent
        for line in _instructions(dockerfile):
            keyword = line.split(None, 1)[0].upper()
            if keyword not in ("COPY", "ADD"):
                continue
            arguments = shlex.split(line)[1:]
            if any(argument.startswith("--from") for argument in arguments):
                continue  # copies from another build stage, not from the context
            paths = [argument for argument in arguments if not argument.startswith("--")]
            if paths and paths[0].startswith("["):
                paths = json.loads(" ".join(paths))
            for source in paths[:-1]:
                assert glob.glob(str(context / source)), (
                    f"{dockerfile}: COPY source {source} is missing"
                )
                checked += 1
    assert checked, "no COPY source was found to check; is the Dockerfile parser broken?"


def _dockerfiles() -> list[Path]:
    found = []
    for name, service in raw_compose()["services"].items():
        build = service.get("build")
        if build:
            context = REPO_ROOT / (build if isinstance(build, str) else build["context"])
            dockerfile = context / (
                build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
            )
            assert dockerfile.is_file(), f"{name}: no {dockerfile}"
            found.append(dockerfile)
    assert found, "no service is built; the mock LLM should be"
    return found


def _instructions(dockerfile: Path) -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    joined, current = [], ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        joined.append(current + stripped)
        current = ""
    return joined


def test_every_mounted_path_exists(services: dict[str, dict], lab_settings: LabSettings) -> None:
    rendered = set(compose.rendered_files(lab_settings))
    render_dir = compose.RENDER_DIR.relative_to(REPO_ROOT)
    for name, service in services.items():
        for source, target, read_only in bind_mounts(service):
            if source.startswith("/"):
                # Host paths are for optional tools (cAdvisor) only, and never written to.
                assert service.get("profiles"), f"{name}: host path {source} in a default service"
                assert read_only, f"{name}: host path {source} is mounted writable"
                continue
            path = Path(os.path.normpath(REPO_ROOT / source))
            relative = path.relative_to(REPO_ROOT)
            if relative.parts[0] == render_dir.parts[0]:
                # Made by `proxylab compose render`, so it need not exist in a fresh clone.
                inside = relative.relative_to(render_dir)
                assert any(
                    Path(file).is_relative_to(inside) or Path(file) == inside for file in rendered
                ), f"{name}: {source} is not something `proxylab compose render` writes"
            else:
                assert path.exists(), f"{name}: mounted path {source} does not exist"
            assert read_only, f"{name}: config mount {source} should be read-only"


def test_every_host_port_is_bound_to_loopback(services: dict[str, dict]) -> None:
    seen = {}
    for name, service in services.items():
        for host_ip, host_port, container_port in published_ports(service):
            assert host_ip and ipaddress.ip_address(host_ip) == ipaddress.ip_address("127.0.0.1"), (
                f"{name}: port {container_port} is published on {host_ip or 'every interface'}"
            )
            assert host_port, f"{name}: port {container_port} gets a random host port"
            assert host_port not in seen, (
                f"{name} and {seen.get(host_port)} both publish {host_port}"
            )
            seen[host_port] = name


def test_published_ports_reach_the_port_each_service_listens_on(services: dict[str, dict]) -> None:
    for name, service in services.items():
        for _host_ip, _host_port, container_port in published_ports(service):
            assert int(container_port) == compose.CONTAINER_PORTS[name], (
                f"{name} publishes {container_port}, but listens on {compose.CONTAINER_PORTS[name]}"
            )


def test_host_ports_default_to_the_lab_settings(lab_settings: LabSettings) -> None:
    """Host ports come from the lab's own settings variables, with the lab's defaults."""
    extra = compose.ComposeSettings(_env_file=None)
    env_example = read_env_file()
    for name, service in raw_compose()["services"].items():
        for entry in service.get("ports") or []:
            found = variables(str(entry))
            assert len(found) == 1, f"{name}: host port {entry} is not set by one variable"
            variable, operator, default = found[0]
            field = variable.removeprefix("PROXYLAB_").lower()
            expected = getattr(lab_settings, field, None) or getattr(extra, field, None)
            assert operator == ":-" and str(expected) == default, (
                f"{name}: {variable} defaults to {default}, the lab's setting to {expected}"
            )
            assert env_example.get(variable) == default, f".env.example lacks {variable}={default}"


def test_every_service_has_a_healthcheck_and_waits_for_healthy_dependencies(
    services: dict[str, dict],
) -> None:
    for name, service in services.items():
        if name not in NO_HEALTHCHECK:
            assert service.get("healthcheck", {}).get("test"), f"{name}: no health check"
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for dependency, condition in depends_on.items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            assert condition.get("condition") == "service_healthy", f"{name} -> {dependency}"
            assert dependency not in NO_HEALTHCHECK, (
                f"{name} waits for {dependency}, which has no check"
            )


def test_credentials_come_from_env_and_are_required() -> None:
    text = COMPOSE_FILE.read_text()
    required = {name for name, operator, _ in variables(text) if operator == ":?"}
    assert {
        "PROXYLAB_MASTER_KEY",
        "PROXYLAB_POSTGRES_USER",
        "PROXYLAB_POSTGRES_PASSWORD",
        "PROXYLAB_GRAFANA_ADMIN_PASSWORD",
    } <= required
    for name, operator, message in variables(text):
        if operator == ":?":
            assert name in message, f"the message for {name} does not name it: {message!r}"
    # No credential is written into the file itself: every secret-looking variable is filled
    # from a required one.
    for name, service in raw_compose()["services"].items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and key not in NOT_SECRETS:
                assert any(operator == ":?" for _, operator, _ in variables(value)), (
                    f"{name}: {key} is not taken from a required variable"
                )


def test_every_host_name_in_the_configs_is_a_service(
    services: dict[str, dict], lab_settings: LabSettings
) -> None:
    texts = {
        f"rendered {path}": content
        for path, content in compose.rendered_files(lab_settings).items()
    }
    for path in (REPO_ROOT / "grafana" / "provisioning").rglob("*.yml"):
        texts[str(path.relative_to(REPO_ROOT))] = path.read_text()
    for name, service in services.items():
        texts[f"{name} environment"] = "\n".join(
            f"{key}={value}" for key, value in environment(service).items()
        )
        texts[f"{name} command"] = " ".join(command(service))
    hosts_found = 0
    for where, text in texts.items():
        for host, _port in HOST_PORT.findall(text):
            hosts_found += 1
            assert host in services or host in NOT_SERVICE_HOSTS, (
                f"{where}: host {host} is no service"
            )
    for name, service in services.items():
        for key, value in environment(service).items():
            if key.endswith("_HOST"):
                assert value in services, f"{name}: {key}={value} is no service"
    assert hosts_found > 10, f"only {hosts_found} host:port pairs found; is the pattern broken?"


def test_render_writes_every_file_without_placeholders(
    tmp_path: Path, lab_settings: LabSettings
) -> None:
    written = compose.render(lab_settings, tmp_path)
    assert sorted(path.relative_to(tmp_path).as_posix() for path in written) == sorted(
        compose.rendered_files(lab_settings)
    )
    for path in written:
        text = path.read_text()
        assert "${" not in text, f"{path} still has a placeholder"
    prometheus = (tmp_path / "prometheus" / "prometheus.yml").read_text()
    assert f"scrape_interval: {lab_settings.scrape_interval_s}s" in prometheus


# --- the Go loader of Docker Compose ---------------------------------------------------------


@pytest.fixture(scope="module")
def composecheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        pytest.skip("Go is not installed: the compose-spec loader check cannot be built")
    binary = tmp_path_factory.mktemp("composecheck") / "composecheck"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly", "CGO_ENABLED": "0"}
    # Modules come from the module proxy only, never straight from their repositories.
    proxy = subprocess.run(
        [go, "env", "GOPROXY"], capture_output=True, text=True, env=env
    ).stdout.strip()
    proxies = [
        entry for entry in re.split(r"[,|]", proxy) if entry and entry not in ("direct", "off")
    ]
    if proxies:
        env["GOPROXY"] = ",".join(proxies)
    completed = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=COMPOSECHECK_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=GO_BUILD_TIMEOUT_S,
    )
    assert completed.returncode == 0, f"go build failed:\n{completed.stdout}\n{completed.stderr}"
    return binary


def _run_composecheck(
    binary: Path, compose_file: Path, env_file: Path | None
) -> subprocess.CompletedProcess:
    argv = [str(binary), "-file", str(compose_file)]
    if env_file is not None:
        argv += ["-env-file", str(env_file)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_compose_loader_accepts_the_file_with_the_example_env(composecheck: Path) -> None:
    completed = _run_composecheck(composecheck, COMPOSE_FILE, ENV_EXAMPLE)
    assert completed.returncode == 0, completed.stderr
    project = json.loads(completed.stdout)
    assert project["name"] == "proxylab"
    assert set(project["services"]) == set(raw_compose()["services"])


def test_compose_loader_and_the_test_interpolation_agree(
    composecheck: Path, services: dict[str, dict]
) -> None:
    project = json.loads(_run_composecheck(composecheck, COMPOSE_FILE, ENV_EXAMPLE).stdout)
    for name, loaded in project["services"].items():
        assert loaded["image"] == services[name]["image"], name
        ports = [
            (port.get("host_ip"), port.get("published"), str(port["target"]))
            for port in loaded.get("ports") or []
        ]
        assert sorted(ports) == sorted(published_ports(services[name])), name
        assert {
            key: str(value) for key, value in (loaded.get("environment") or {}).items()
        } == environment(services[name]), name


def test_compose_loader_refuses_to_start_without_credentials(
    composecheck: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    completed = _run_composecheck(composecheck, COMPOSE_FILE, empty)
    assert completed.returncode == 1
    for name in (
        "PROXYLAB_MASTER_KEY",
        "PROXYLAB_POSTGRES_PASSWORD",
        "PROXYLAB_GRAFANA_ADMIN_PASSWORD",
    ):
        assert f"required variable {name} is missing a value" in completed.stderr, completed.stderr


def test_compose_loader_rejects_an_invalid_file(composecheck: Path, tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace(
            "condition: service_healthy", "condition: service_healty", 1
        )
    )
    completed = _run_composecheck(composecheck, broken, ENV_EXAMPLE)
    assert completed.returncode == 1
    assert "condition value must be one of" in completed.stderr, completed.stderr


# --- the Compose runtime without a Docker engine --------------------------------------------

# Shell bodies of stand-in `docker` commands, one per state of a machine.
ENGINE_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
FAKE_DOCKER = {
    "engine down": f"echo '{ENGINE_DOWN}' >&2; exit 1",
    "no compose plugin": 'if [ "$1" = info ]; then echo 28.2.2; exit 0; fi\n'
    'echo "docker: unknown command: docker $1" >&2; exit 1',
    "working": 'if [ "$1" = info ]; then echo 28.2.2; exit 0; fi\n'
    'if [ "$1 $2" = "compose version" ]; then echo 2.40.0; exit 0; fi\nexit 1',
}


def _cli_with_docker(
    tmp_path: Path, docker: str | None, args: list[str]
) -> subprocess.CompletedProcess:
    """The CLI with PATH holding only a stand-in `docker` (or none at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if docker is not None:
        script = bin_dir / "docker"
        script.write_text(f"#!/bin/sh\n{FAKE_DOCKER[docker]}\n")
        script.chmod(0o755)
    env = {
        **os.environ,
        "PATH": str(bin_dir),
        "PROXYLAB_HOME": str(tmp_path / "home"),
        "PROXYLAB_RESULTS_DIR": str(tmp_path / "results"),
    }
    return subprocess.run(
        [sys.executable, "-m", "proxylab.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("docker", "args"),
    [
        (None, ["up"]),
        ("no compose plugin", ["up"]),
        ("engine down", ["up", "--callbacks"]),
        ("engine down", ["down"]),
        ("engine down", ["status"]),
        ("engine down", ["matrix", "--requests", "20"]),
        ("engine down", ["runtime"]),
    ],
)
def test_compose_runtime_refuses_in_one_line_without_a_working_engine(
    tmp_path: Path, docker: str | None, args: list[str]
) -> None:
    completed = _cli_with_docker(tmp_path, docker, [*args, "--runtime", "compose"])
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert completed.returncode == 2, completed.stderr
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("proxylab: error: the compose runtime needs Docker"), lines[0]
    assert "--runtime native" in lines[0]
    assert not (tmp_path / "results").exists(), "a refused matrix must not create its result dir"


@pytest.mark.parametrize(
    ("docker", "requested", "chosen"),
    [
        ("working", "auto", "compose"),
        ("engine down", "auto", "native"),
        (None, "auto", "native"),
        ("working", "native", "native"),
        ("working", "compose", "compose"),
    ],
)
def test_runtime_is_compose_only_when_docker_works(
    tmp_path: Path, docker: str | None, requested: str, chosen: str
) -> None:
    completed = _cli_with_docker(tmp_path, docker, ["runtime", "--runtime", requested])
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == chosen
    assert completed.stderr.startswith(f"runtime {chosen}: "), completed.stderr


def test_unknown_runtime_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PROXYLAB_HOME": str(tmp_path / "home")}
    completed = subprocess.run(
        [sys.executable, "-m", "proxylab.cli", "status", "--runtime", "podman"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "unknown runtime 'podman'" in completed.stderr


# --- what ComposeStack asks of docker compose, with a recording stand-in ------------------

RECORDING_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(json.dumps({{"args": args, "callbacks": os.environ.get("PROXYLAB_PROXY_CALLBACKS"),
                           "proxy_port": os.environ.get("PROXYLAB_PROXY_PORT")}}) + "\\n")
if args[:1] == ["info"]:
    print("28.2.2")
elif args[:2] == ["compose", "version"]:
    print("2.40.0")
elif "ps" in args:
    state = {state!r}
    if os.path.exists(state):
        print(json.dumps({{"Service": "litellm", "ID": "c0ffee", "State": "running"}}))
elif args[:1] == ["inspect"]:
    print("c0ffee0123 4242")
if "up" in args and "litellm" in args:
    open({state!r}, "w").close()
"""


def test_compose_stack_drives_docker_compose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lab_settings: LabSettings
) -> None:
    from proxylab.stack import PROMETHEUS_CALLBACK, ProxyConfig, render_proxy_config

    log = tmp_path / "calls.jsonl"
    script = tmp_path / "docker"
    script.write_text(
        RECORDING_DOCKER.format(
            python=sys.executable, log=str(log), state=str(tmp_path / "proxy-up")
        )
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(compose, "RENDER_DIR", tmp_path / "rendered")
    monkeypatch.setattr(compose, "render", lambda settings, target=None: [])
    stack = compose.ComposeStack(lab_settings)

    stack.up(proxy=None)
    stack.restart_proxy(ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,)))
    stack.restart_proxy(ProxyConfig())
    # An older release needs an adapted config; its own rendered file must be the one used.
    older = ProxyConfig(callbacks=(PROMETHEUS_CALLBACK,), version="1.81.8")
    stack.restart_proxy(older)
    older_file = compose.write_proxy_variant(older, tmp_path / "rendered")
    pid = stack.proxy_pid()
    with pytest.raises(Exception, match="callbacks"):
        stack.restart_proxy(ProxyConfig(callbacks=("langfuse",)))

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    compose_calls = [
        call for call in calls if call["args"][:2] == ["compose", "--project-directory"]
    ]
    ups = [call for call in compose_calls if "up" in call["args"]]
    assert ups[0]["args"][-len(compose.LAB_SERVICES) :] == list(compose.LAB_SERVICES)
    assert "--wait" in ups[0]["args"]
    older_variant = compose.proxy_variant(older)
    assert older_variant.startswith("on.") and older_variant != "on"
    assert [call["callbacks"] for call in ups[1:]] == ["on", "off", older_variant]
    assert older_file.name == f"config.callbacks-{older_variant}.yaml"
    assert older_file.read_text() == render_proxy_config(older)
    assert render_proxy_config(older) != render_proxy_config(ProxyConfig(
        callbacks=(PROMETHEUS_CALLBACK,)))
    assert all(
        call["args"][-1] == "litellm" and "--force-recreate" in call["args"] for call in ups[1:]
    )
    assert all(call["proxy_port"] == str(lab_settings.proxy_port) for call in compose_calls)
    assert pid == 4242


@pytest.mark.parametrize(("version", "image"), [
    ("1.108.7", "ghcr.io/berriai/litellm:v1.108.7"),
    ("1.83.0", "ghcr.io/berriai/litellm:v1.83.0"),
    ("1.81.8", "ghcr.io/berriai/litellm:main-v1.81.8"),
])
def test_each_release_gets_the_official_image_tag_of_its_era(version: str, image: str,
                                                             lab_settings: LabSettings) -> None:
    from proxylab.stack import ProxyConfig

    env = compose.compose_environment(
        lab_settings, compose.ComposeSettings(_env_file=None, grafana_admin_password="x"),
        ProxyConfig(version=version))

    assert resolved_compose(env)["services"]["litellm"]["image"] == image
