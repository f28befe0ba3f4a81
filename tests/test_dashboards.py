"""The committed Grafana dashboards equal a fresh build, and follow the provisioning's rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = REPO_ROOT / "grafana" / "dashboards"
DATASOURCES = REPO_ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = REPO_ROOT / "grafana" / "provisioning" / "dashboards" / "proxylab.yml"
READABLE_UID = re.compile(r"^[a-z][a-z0-9-]{2,39}$")


def _committed() -> dict[str, dict]:
    return {
        path.name: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    pytest.importorskip(
        "grafana_foundation_sdk",
        reason="the `dashboards` dependency group is not installed (uv sync --group dashboards)",
    )
    from proxylab import dashboards

    written = dashboards.write_all(tmp_path)
    assert sorted(path.name for path in written) == sorted(_committed()), (
        "grafana/dashboards/ has files the generator does not make, or lacks some"
    )
    for path in written:
        committed = (DASHBOARD_DIR / path.name).read_text()
        assert path.read_text() == committed, (
            f"{path.name} differs from a fresh build: run `python -m proxylab.dashboards`"
        )


def test_dashboards_use_the_provisioned_datasource_and_readable_uids() -> None:
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]
    dashboards = _committed()
    assert dashboards, "no committed dashboards"
    for name, dashboard in dashboards.items():
        assert "id" not in dashboard, f"{name}: an instance-specific dashboard id"
        assert READABLE_UID.match(dashboard["uid"]), f"{name}: uid {dashboard['uid']!r}"
        assert name == f"{dashboard['uid']}.json"
        panel_ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), f"{name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == datasource["uid"], f"{name}: {panel['title']}"
            assert panel["targets"], f"{name}: {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == datasource["uid"], f"{name}: {panel['title']}"


def test_provisioning_loads_the_committed_folder() -> None:
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    mounts = dict(
        entry.split(":")[:2]
        for entry in compose["services"]["grafana"]["volumes"]
        if entry.startswith("./")
    )
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert Path(home).parent.as_posix() == provider["options"]["path"]
    assert Path(home).name in _committed()
