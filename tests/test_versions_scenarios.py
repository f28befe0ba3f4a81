"""The LiteLLM release axis and the scenario packs of known regressions."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, run_cli
from proxylab import verdicts
from proxylab.errors import LabError
from proxylab.plan import MatrixPlan
from proxylab.scenarios import check_signature, load_scenario
from proxylab.stack import ProxyConfig, proxy_config_document
from proxylab.versions import adapt_config, version_refusal

SCENARIOS = sorted((REPO_ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("version", ["1.82.7", "1.82.8"])
def test_compromised_releases_are_refused(version: str) -> None:
    assert "compromised" in version_refusal(version)


def test_malformed_version_is_refused_and_good_one_accepted() -> None:
    assert "not of the form" in version_refusal("latest")
    assert version_refusal("1.99.0") is None


def test_old_release_loses_the_metrics_auth_setting_and_says_so() -> None:
    old, old_changes = proxy_config_document(ProxyConfig(version="1.80.0"))
    new, new_changes = proxy_config_document(ProxyConfig(version="1.108.7"))

    assert "require_auth_for_metrics_endpoint" not in old["litellm_settings"]
    assert old_changes and "1.85" in old_changes[0]
    assert new["litellm_settings"]["require_auth_for_metrics_endpoint"] is True
    assert new_changes == []
    assert adapt_config({"litellm_settings": {}}, None) == []


def test_each_release_is_its_own_configuration_and_proxy() -> None:
    plan = MatrixPlan(callbacks=[False], user_modes=["none"], proxy_versions=["1.99.0", "1.108.7"])
    configs = plan.configurations()

    assert [config.config_id for config in configs] == [
        "litellm-1.99.0.callbacks-off.user-none.key-shared",
        "litellm-1.108.7.callbacks-off.user-none.key-shared"]
    assert configs[0].proxy_group() != configs[1].proxy_group()


def test_proxy_settings_reach_the_rendered_config() -> None:
    settings = {"litellm_settings": {"disable_end_user_cost_tracking": True}}
    document, _ = proxy_config_document(ProxyConfig(settings_json=json.dumps(settings)))

    assert document["litellm_settings"]["disable_end_user_cost_tracking"] is True
    assert document["litellm_settings"]["num_retries"] == 0  # the shared settings stay


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.name)
def test_scenario_files_validate(path: Path) -> None:
    scenario = load_scenario(path)
    configs = scenario.plan().configurations()

    assert {config.proxy_version for config in configs} == {scenario.versions.before, scenario.versions.after}
    assert scenario.requires_database


@pytest.mark.parametrize(("change", "message"), [
    ({"signature": {"axis": "weather"}}, "unknown axis 'weather'"),
    ({"versions": {"before": "1.82.7", "after": "1.99.0"}}, "compromised"),
    ({"surprise": 1}, "surprise"),
    ({"matrix": {"user_modes": ["nobody"]}}, "unknown user mode 'nobody'"),
])
def test_bad_scenario_is_one_line(tmp_path: Path, change: dict, message: str) -> None:
    document = yaml.safe_load(SCENARIOS[0].read_text())
    for key, value in change.items():
        document[key] = {**document[key], **value} if isinstance(document.get(key), dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))

    with pytest.raises(LabError) as raised:
        load_scenario(path)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def _cell(version: str, callbacks: bool, p95_ms: float, statements: float | None) -> dict:
    database = {"statements_per_request": statements} if statements is not None else {"available": False}
    return {"config": {"proxy_version": version, "callbacks": callbacks, "user_mode": "none"},
            "statistics": {"all": {"p95_ms": p95_ms}}, "attribution": {"database": database}}


def test_signature_check_tells_a_regression_from_its_fix() -> None:
    scenario = load_scenario(REPO_ROOT / "scenarios" / "prometheus-budget-metrics.yaml")
    summary = {"cells": [
        _cell("1.81.8", False, 500, 2.0), _cell("1.81.8", True, 800, 5.0),  # regression present
        _cell("1.81.9", False, 500, 2.0), _cell("1.81.9", True, 510, 2.1),  # fixed
    ]}

    lines = check_signature(scenario, summary)

    assert all(line.startswith("ok") for line in lines), lines
    assert any("increase 3.000" in line for line in lines)


def test_signature_check_flags_a_missing_regression_and_unmeasured_db() -> None:
    scenario = load_scenario(REPO_ROOT / "scenarios" / "prometheus-budget-metrics.yaml")
    flat = {"cells": [_cell(version, callbacks, 500, None)
                      for version in ("1.81.8", "1.81.9") for callbacks in (False, True)]}

    lines = check_signature(scenario, flat)

    assert any(line.startswith("MISMATCH before") and "not measured" in line for line in lines)
    assert any(line.startswith("MISMATCH before") and "p95 ratio 1.000" in line for line in lines)


def _proxy_database(lab_env: dict):
    """Whether the test home's proxy can have a database, as `scenario run` detects it."""
    from proxylab import install
    from proxylab.settings import LabSettings

    settings = LabSettings(home=Path(lab_env["PROXYLAB_HOME"]))
    return install.detect_proxy_database(settings, install.ensure_proxy_env(settings))


def test_scenario_run_refuses_without_a_database(lab_env: dict) -> None:
    database = _proxy_database(lab_env)
    if database.available:
        pytest.skip(f"this machine's proxy has a database; the refusal cannot be shown here "
                    f"({database.reason})")
    results_dir = Path(lab_env["PROXYLAB_RESULTS_DIR"])
    before = set(results_dir.iterdir()) if results_dir.exists() else set()

    completed = run_cli(["scenario", "run", str(SCENARIOS[0])], lab_env, timeout_s=300)

    # Decided by the detection above, so a crash fails here instead of passing as a skip.
    assert completed.returncode == 2, completed.stdout + completed.stderr[-3000:]
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr[-3000:]
    assert "needs the proxy's database" in lines[0]
    assert database.reason in lines[0]
    assert "run it with --runtime compose" in lines[0]
    # Refused before anything ran: no result directory appeared.
    assert (set(results_dir.iterdir()) if results_dir.exists() else set()) == before


@pytest.mark.stack
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda path: path.name)
def test_scenario_signature_on_a_database_backed_proxy(path: Path, tmp_path: Path, lab_env: dict) -> None:
    database = _proxy_database(lab_env)
    if not database.available:
        pytest.skip(f"needs a proxy with a database to show the regression: {database.reason}")
    document = yaml.safe_load(path.read_text())
    document["matrix"].update(requests=600, repeats=2)  # smaller than the pack, same shape
    small = tmp_path / path.name
    small.write_text(yaml.safe_dump(document))

    completed = run_cli(["scenario", "run", str(small), "--run-id", f"scenario-{path.stem}"], lab_env,
                        timeout_s=3000)

    assert completed.returncode == 0, completed.stdout + completed.stderr[-3000:]
    assert "MISMATCH" not in completed.stdout


@pytest.mark.stack
def test_matrix_over_two_releases_records_each(lab_env: dict) -> None:
    completed = run_cli(["matrix", "--callbacks", "off", "--user-mode", "none", "--proxy-version",
                         "1.99.0,1.108.7", "--requests", "40", "--users", "2", "--warmup", "4",
                         "--run-id", "releases"], lab_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "releases"
    summary = json.loads((run_dir / "summary.json").read_text())

    assert {cell["config"]["proxy_version"] for cell in summary["cells"]} == {"1.99.0", "1.108.7"}
    assert summary["proxy_releases"]["1.99.0"]["installed"] == "1.99.0"
    assert summary["proxy_releases"]["1.108.7"]["installed"] == "1.108.7"
    assert all(cell["statistics"]["all"]["failed"] == 0 for cell in summary["cells"])
    # Each cell names the release its proxy ran, and ran the config file adapted for it.
    for cell in summary["cells"]:
        assert cell["litellm_version"] == cell["config"]["proxy_version"], cell["cell_id"]
        assert (run_dir / cell["proxy_config_file"]).is_file()
    assert summary["metadata"]["versions"]["litellm"] == "1.99.0, 1.108.7"
    text = (run_dir / "report.md").read_text()
    assert "LiteLLM 1.99.0, 1.108.7 (one configuration each)" in text
    assert "LiteLLM 1.99.0:" in text
    assert "### proxy_version 1.108.7 vs 1.99.0" in text


@pytest.mark.parametrize(("order", "expected"), [
    ("grouped", ["off1", "off2", "off3", "on1", "on2", "on3"]),
    ("abba", ["off1", "on1", "on2", "off2", "off3", "on3"]),
])
def test_cell_order_interleaves_configurations(order: str, expected: list[str]) -> None:
    plan = MatrixPlan(callbacks=[False, True], user_modes=["none"], repeats=3, order=order)

    assert [("on" if config.callbacks else "off") + str(repeat)
            for config, repeat in plan.cell_order()] == expected


def test_random_order_is_seeded_and_keeps_one_block_per_repeat() -> None:
    def order(seed: int) -> list[tuple[bool, int]]:
        plan = MatrixPlan(callbacks=[False, True], user_modes=["none", "random"], repeats=4,
                          order="random", order_seed=seed)
        return [(config.config_id, repeat) for config, repeat in plan.cell_order()]

    assert order(7) == order(7)
    assert [repeat for _, repeat in order(7)] == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    assert any(order(seed) != order(7) for seed in range(8, 20))


def test_replicas_are_twins_with_their_own_proxy_start_and_an_axis_of_their_own() -> None:
    plan = MatrixPlan(callbacks=[False], user_modes=["none"], replicas=2, repeats=2, order="abba")
    ids = [f"{config.config_id}.r{repeat}" for config, repeat in plan.cell_order()]

    assert ids == ["callbacks-off.user-none.key-shared.replica-1.r1",
                   "callbacks-off.user-none.key-shared.replica-2.r1",
                   "callbacks-off.user-none.key-shared.replica-2.r2",
                   "callbacks-off.user-none.key-shared.replica-1.r2"]
    first, second = plan.configurations()
    assert first.proxy_group() != second.proxy_group()
    planned = verdicts.plan_comparisons({c.config_id: asdict(c) for c in plan.configurations()})
    assert [(p.axis, p.baseline, p.candidate) for p in planned] == [
        ("replica", first.config_id, second.config_id)]
    # Without replicas the configuration and its name are as before.
    assert MatrixPlan(callbacks=[False], user_modes=["none"]).configurations()[0].config_id == (
        "callbacks-off.user-none.key-shared")
