"""An isolated lab home on its own shifted ports, for the attribution and fault tests.

tests/test_native_stack.py uses conftest.lab_env; these tests use their own home and the
offset conftest gives them (ATTRIBUTION_TEST_PORT_OFFSET) so both can run on one machine. The home reuses the built LiteLLM and toxiproxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import ATTRIBUTION_TEST_PORT_OFFSET, PROXYLAB, REPO_ROOT
from proxylab.settings import LabSettings
from proxylab.stack import postgres_data_dir

PORT_OFFSET = ATTRIBUTION_TEST_PORT_OFFSET


def make_home() -> Path:
    # Not under pytest's tmp_path, which pytest prunes while a stack may still use it.
    home = Path(tempfile.mkdtemp(prefix="proxylab-test500-home-"))
    shared_home = REPO_ROOT / ".proxylab"
    for name in ("venvs", "bin", "tools"):
        if (shared_home / name).exists():
            (home / name).symlink_to(shared_home / name)
    return home


def cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "PROXYLAB_HOME": str(home), "PROXYLAB_RESULTS_DIR": str(home / "results"),
            "PROXYLAB_PORT_OFFSET": str(PORT_OFFSET)}


def stop_and_remove(home: Path) -> None:
    """`proxylab down` for the home (a failed test may have left its stack up), then delete it.

    Its Postgres cluster goes too, also when it lives outside the home (in /var/tmp, where
    the stack puts it when the server's account cannot enter the home).
    """
    settings = LabSettings(home=home, results_dir=home / "results", port_offset=PORT_OFFSET)
    cluster = postgres_data_dir(settings, "postgres" if os.geteuid() == 0 else None)
    subprocess.run([*PROXYLAB, "down"], env=cli_env(home), cwd=REPO_ROOT, capture_output=True,
                   timeout=120)
    if os.environ.get("PROXYLAB_KEEP_TEST_HOME") != "1":
        shutil.rmtree(home, ignore_errors=True)
        if not cluster.resolve().is_relative_to(home.resolve()):
            shutil.rmtree(cluster, ignore_errors=True)
