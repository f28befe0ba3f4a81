"""What a result must carry to be trusted later: versions, machine, git commit, time."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import subprocess
from pathlib import Path

import psutil

from proxylab.settings import REPO_ROOT

logger = logging.getLogger(__name__)


def _first_line(argv: list[str]) -> str | None:
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (completed.stdout or completed.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def package_version(python: Path, package: str) -> str | None:
    """Version of `package` as installed for the interpreter `python` (another venv's too)."""
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return _first_line([str(python), "-c", code])


def _version_in(line: str | None) -> str | None:
    """The first dotted version number in a tool's `--version` line."""
    found = re.search(r"\d+\.\d+(?:\.\d+)?", line or "")
    return found.group(0) if found else line


def component_versions(*, proxy_python: Path | None, postgres_bin: Path | None,
                       toxiproxy_version: str) -> dict[str, str | None]:
    postgres = _first_line([str(postgres_bin / "postgres"), "--version"]) if postgres_bin else None
    return {
        "litellm": package_version(proxy_python, "litellm") if proxy_python else None,
        "locust": importlib.metadata.version("locust"),
        "postgres": _version_in(postgres),
        "redis": _version_in(_first_line(["redis-server", "--version"])),
        # A `go install` build reports "git" as its version; the module version is what we built.
        "toxiproxy": toxiproxy_version.removeprefix("v"),
        "prometheus": _version_in(_first_line(["prometheus", "--version"])),
        "python": platform.python_version(),
    }


def machine() -> dict[str, object]:
    cpu_model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu_model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                          if line.startswith("model name")), None)
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_bytes": psutil.virtual_memory().total,
    }


def git_commit() -> dict[str, object]:
    commit = _first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True)
    return {"commit": commit, "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
