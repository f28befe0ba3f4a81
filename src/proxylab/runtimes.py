"""Which runtime runs the stack: local processes (native) or Docker Compose containers.

Both stacks offer what the CLI and the matrix use: `prepare`, `up`, `down`, `status`,
`restart_proxy`, `proxy_pid`, `database`, `component_versions`, `mark_cell`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from proxylab.errors import LabError
from proxylab.settings import LabSettings

if TYPE_CHECKING:
    from proxylab.compose import ComposeStack
    from proxylab.stack import NativeStack

RUNTIMES = ("native", "compose")


def check_runtime(runtime: str) -> None:
    """Refuse an unknown runtime, or Compose without a working Docker engine, before any work."""
    if runtime not in RUNTIMES:
        raise LabError(f"unknown runtime {runtime!r}; choose {' or '.join(RUNTIMES)}")
    if runtime == "compose":
        from proxylab.compose import require_engine

        require_engine()


def pick_runtime(requested: str = "auto") -> tuple[str, str]:
    """The runtime to use and why: with `auto`, Compose when a Docker engine works, else native."""
    if requested == "auto":
        from proxylab.compose import engine_problem

        problem = engine_problem()
        if problem is None:
            return "compose", "a Docker engine with `docker compose` answers"
        return "native", f"no Compose here ({problem})"
    check_runtime(requested)
    return requested, "chosen with --runtime"


def make_stack(
    settings: LabSettings, runtime: str, *, log_dir: Path | None = None, tie_to_parent: bool = False
) -> NativeStack | ComposeStack:
    if runtime == "native":
        from proxylab.stack import NativeStack

        return NativeStack(settings, log_dir=log_dir, tie_to_parent=tie_to_parent)
    if runtime == "compose":
        from proxylab.compose import ComposeStack

        return ComposeStack(settings, log_dir=log_dir, tie_to_parent=tie_to_parent)
    raise LabError(f"unknown runtime {runtime!r}; choose {' or '.join(RUNTIMES)}")
