"""Installs what the stack runs that is not a Debian package: toxiproxy and LiteLLM.

Debian packages and the lab's own environment come from `scripts/bootstrap.sh`, which runs
before any Python of the lab can. Everything here is idempotent and cached under
`settings.home`, so a second run costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from proxylab.errors import LabError
from proxylab.settings import REPO_ROOT, LabSettings
from proxylab.versions import version_refusal

logger = logging.getLogger(__name__)

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
PRISMA_GENERATE_TIMEOUT_S = 180


def find_uv(settings: LabSettings) -> str:
    """The uv binary that bootstrap put in the lab's tools venv, else one on PATH."""
    bundled = settings.home / "tools" / "bin" / "uv"
    if bundled.exists():
        return str(bundled)
    on_path = shutil.which("uv")
    if on_path:
        return on_path
    raise LabError("uv is not installed; run scripts/bootstrap.sh first")


def ensure_toxiproxy(settings: LabSettings) -> Path:
    """Path of a toxiproxy server binary, built with `go install` when none is there."""
    on_path = shutil.which("toxiproxy-server")
    if on_path:
        return Path(on_path)
    target = settings.bin_dir / f"toxiproxy-server-{settings.toxiproxy_version}"
    if target.exists():
        return target
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise LabError("toxiproxy-server is not on PATH and Go is missing to build it; install Go")
    logger.info("building toxiproxy %s with go install", settings.toxiproxy_version)
    settings.bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.bin_dir) as gobin:
        env = {**os.environ, "GOBIN": gobin, "CGO_ENABLED": "0"}
        run_checked([go, "install", f"{TOXIPROXY_MODULE}@{settings.toxiproxy_version}"], env=env,
                    what="building toxiproxy")
        Path(gobin, "server").rename(target)
    return target


def proxy_lock_file(settings: LabSettings, version: str) -> Path:
    """The lock of a LiteLLM release: committed for pinned ones, else resolved once and cached.

    A release without a committed lock is resolved from the same requirements as the pinned
    one (LiteLLM with its proxy extra, prometheus-client, prisma) into the lab's home, so it is
    built once and the exact set of packages is kept beside the virtualenv.
    """
    committed = REPO_ROOT / "proxy" / f"requirements-{version}.lock"
    if committed.exists():
        return committed
    cached = settings.home / "locks" / f"requirements-{version}.lock"
    if cached.exists():
        return cached
    template = REPO_ROOT / "proxy" / f"requirements-{settings.proxy_version}.in"
    requirements = re.sub(r"^litellm\[proxy\]==\S+$", f"litellm[proxy]=={version}",
                          template.read_text(), flags=re.M)
    cached.parent.mkdir(parents=True, exist_ok=True)
    source = cached.with_suffix(".in")
    source.write_text(requirements)
    logger.info("resolving the packages of LiteLLM %s", version)
    run_checked([find_uv(settings), "pip", "compile", "-q", str(source), "-o", str(cached), "-p", "3.11"],
                what=f"resolving LiteLLM {version} (is it a published release?)")
    return cached


def ensure_proxy_env(settings: LabSettings, version: str | None = None) -> Path:
    """A virtualenv with LiteLLM `version` (default: the pinned one), built once and reused."""
    version = version or settings.proxy_version
    refusal = version_refusal(version)
    if refusal:
        raise LabError(refusal)
    lock = proxy_lock_file(settings, version)
    venv = settings.venvs_dir / f"litellm-{version}"
    marker = venv / ".proxylab-installed"
    fingerprint = hashlib.sha256(lock.read_bytes()).hexdigest()
    if marker.exists() and marker.read_text() == fingerprint:
        return venv
    uv = find_uv(settings)
    logger.info("installing LiteLLM %s into %s", version, venv)
    run_checked([uv, "venv", "-q", "--allow-existing", "-p", "3.11", str(venv)], what="creating venv")
    run_checked([uv, "pip", "sync", "-q", "-p", str(venv / "bin" / "python"), str(lock)],
                what=f"installing LiteLLM {version}")
    marker.write_text(fingerprint)
    return venv


@dataclass(frozen=True)
class DatabaseAvailability:
    """Whether the proxy can use Postgres here, and in one line why (not)."""

    available: bool
    reason: str


def detect_proxy_database(settings: LabSettings, venv: Path) -> DatabaseAvailability:
    """Try to obtain Prisma's engines the way LiteLLM would, by generating its client.

    The engines are downloaded from Prisma's own servers, which some machines cannot reach;
    then the proxy must run without a database and every report says so.
    """
    if settings.proxy_db == "off":
        return DatabaseAvailability(False, "proxy database turned off (PROXYLAB_PROXY_DB=off)")
    schemas = sorted(venv.glob("lib/python3*/site-packages/litellm_proxy_extras/schema.prisma"))
    prisma = venv / "bin" / "prisma"
    if not schemas or not prisma.exists():
        return _database_verdict(settings, "LiteLLM's Prisma schema or CLI is not installed")
    try:
        completed = subprocess.run(
            [str(prisma), "generate", "--schema", str(schemas[0])],
            capture_output=True, text=True, timeout=PRISMA_GENERATE_TIMEOUT_S,
            env={**os.environ, "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"},
        )
    except subprocess.TimeoutExpired:
        return _database_verdict(settings, "fetching Prisma engines timed out")
    if completed.returncode == 0:
        return DatabaseAvailability(True, "Prisma engines available; the proxy uses Postgres")
    lines = [line.strip() for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
    detail = next((line for line in reversed(lines) if "rror" in line), lines[-1] if lines else "")
    # The download URL adds nothing for the reader; keep the reason.
    detail = re.sub(r"request to \S+ failed, reason: ", "download failed: ", detail)
    return _database_verdict(settings, f"Prisma engines could not be obtained ({detail[:200]})")


def _database_verdict(settings: LabSettings, reason: str) -> DatabaseAvailability:
    if settings.proxy_db == "on":
        raise LabError(f"PROXYLAB_PROXY_DB=on but the proxy cannot have a database: {reason}")
    return DatabaseAvailability(False, f"no proxy database: {reason}")


def run_checked(argv: list[str], *, what: str, env: dict[str, str] | None = None) -> None:
    """Run an install step; on failure raise a LabError with its exit code and last output."""
    completed = subprocess.run(argv, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        logger.error("command failed: %s\nexit code: %s\nstdout:\n%s\nstderr:\n%s",
                     " ".join(argv), completed.returncode, completed.stdout, completed.stderr)
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:] or [""]
        raise LabError(f"{what} failed (exit {completed.returncode}): {tail[0][:200]}")
