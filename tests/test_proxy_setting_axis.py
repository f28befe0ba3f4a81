"""Proxy settings as a matrix axis: parsing, configurations, the rendered config, verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import synthetic
from conftest import run_cli
from proxylab import report, verdicts
from proxylab.errors import LabError
from proxylab.matrix import proxy_config
from proxylab.plan import MatrixPlan, parse_proxy_setting
from proxylab.scenarios import load_scenario
from proxylab.stack import proxy_config_document
from proxylab.versions import callbacks_refusal

TIMEOUT_AXIS = {"litellm_settings.request_timeout": [300, 600]}


def _timeout_plan(**extra) -> MatrixPlan:
    return MatrixPlan(callbacks=[False], user_modes=["none"], proxy_setting_axes=TIMEOUT_AXIS,
                      **extra)


@pytest.mark.parametrize(("text", "expected"), [
    ("litellm_settings.request_timeout=300,600", ("litellm_settings.request_timeout", [300, 600])),
    ("general_settings.flag=true,False", ("general_settings.flag", [True, False])),
    ("router_settings.share= 0.5 ,1.5", ("router_settings.share", [0.5, 1.5])),
    ("litellm_settings.mode=fast,60s", ("litellm_settings.mode", ["fast", "60s"])),
])
def test_parse_proxy_setting_types_values_like_yaml(text: str, expected: tuple) -> None:
    assert parse_proxy_setting(text) == expected


@pytest.mark.parametrize("text", ["litellm_settings.request_timeout", "=1,2",
                                  "litellm_settings.request_timeout=", "litellm_settings.x=1,,2"])
def test_parse_proxy_setting_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="takes SECTION.KEY=V1,V2"):
        parse_proxy_setting(text)


def test_each_value_is_a_configuration_with_its_own_id_and_proxy() -> None:
    low, high = _timeout_plan().configurations()

    assert low.config_id == "callbacks-off.user-none.key-shared.request_timeout-300"
    assert high.config_id == "callbacks-off.user-none.key-shared.request_timeout-600"
    assert low.proxy_group() != high.proxy_group()
    assert low.record()["litellm_settings.request_timeout"] == 300
    assert "proxy_settings" not in low.record()


def test_boolean_values_name_configurations_as_typed() -> None:
    plan = MatrixPlan(callbacks=[False], user_modes=["none"],
                      proxy_setting_axes={"general_settings.disable_spend_logs": [False, True]})

    assert [config.config_id.rsplit(".", 1)[1] for config in plan.configurations()] == [
        "disable_spend_logs-false", "disable_spend_logs-true"]


def test_settings_for_merges_fixed_settings_and_axis_values() -> None:
    plan = _timeout_plan(proxy_settings={"litellm_settings": {"num_retries": 2},
                                         "general_settings": {"disable_spend_logs": True}})
    low, high = plan.configurations()

    assert plan.settings_for(high) == {"litellm_settings": {"num_retries": 2, "request_timeout": 600},
                                       "general_settings": {"disable_spend_logs": True}}
    # The plan's own settings are not changed by merging in an axis value.
    assert plan.proxy_settings["litellm_settings"] == {"num_retries": 2}
    assert plan.settings_for(low)["litellm_settings"]["request_timeout"] == 300


def test_each_configuration_renders_its_value_into_the_proxy_config() -> None:
    plan = _timeout_plan()
    rendered = [proxy_config_document(proxy_config(config, plan))[0]
                for config in plan.configurations()]

    assert [document["litellm_settings"]["request_timeout"] for document in rendered] == [300, 600]
    assert all(document["litellm_settings"]["num_retries"] == 0 for document in rendered)


def test_a_fixed_setting_cannot_also_be_an_axis() -> None:
    with pytest.raises(ValueError, match="both a fixed proxy setting and an axis"):
        _timeout_plan(proxy_settings={"litellm_settings": {"request_timeout": 10}})


def test_saved_plan_resumes_with_its_axes() -> None:
    plan = _timeout_plan(proxy_settings={"general_settings": {"disable_spend_logs": True}})
    saved = json.loads(json.dumps(plan.model_dump()))  # as summary.json holds it

    resumed = MatrixPlan.from_summary(saved)

    assert resumed == plan
    assert [c.config_id for c in resumed.configurations()] == [
        c.config_id for c in plan.configurations()]


def test_saved_plan_with_an_unknown_key_is_refused_in_one_line() -> None:
    with pytest.raises(LabError, match="unknown to this version of the lab"):
        MatrixPlan.from_summary({**_timeout_plan().model_dump(), "weather": "fine"})


def test_verdicts_compare_the_values_of_a_setting_like_any_axis(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    configs = _timeout_plan().configurations()
    cells = [(config.config_id, config.record(), repeat, synthetic.latencies(rng, 400))
             for config in configs for repeat in (1, 2)]
    summary = synthetic.write_result_dir(tmp_path / "run", cells)

    planned = verdicts.plan_comparisons({c.config_id: c.record() for c in configs})
    text = report.render_markdown(summary, report.verdict_section(tmp_path / "run", summary))

    assert [(p.axis, p.baseline, p.candidate) for p in planned] == [
        ("litellm_settings.request_timeout", configs[0].config_id, configs[1].config_id)]
    assert "### litellm_settings.request_timeout 600 vs 300" in text


def test_a_scenario_may_vary_a_setting_in_its_matrix(tmp_path: Path) -> None:
    document = yaml.safe_load((Path(__file__).parents[1] / "scenarios" /
                               "end-user-negative-cache.yaml").read_text())
    document["matrix"]["proxy_setting_axes"] = {"litellm_settings.user_api_key_cache_ttl": [5, 60]}
    path = tmp_path / "ttl.yaml"
    path.write_text(yaml.safe_dump(document))

    configs = load_scenario(path).plan().configurations()

    assert {config.proxy_settings for config in configs} == {
        (("litellm_settings.user_api_key_cache_ttl", 5),),
        (("litellm_settings.user_api_key_cache_ttl", 60),)}


# --- releases whose Prometheus callback is enterprise-only -------------------------------


def test_callbacks_on_with_an_enterprise_only_prometheus_release_is_refused() -> None:
    with pytest.raises(ValueError, match="LiteLLM 1.79.3 cannot run with callbacks on"):
        MatrixPlan(callbacks=[False, True], proxy_versions=["1.79.3", "1.108.7"])
    # Without the callback the release runs; from 1.80.0 the callback is open source.
    assert MatrixPlan(callbacks=[False], proxy_versions=["1.79.3"]).proxy_versions == ["1.79.3"]
    assert callbacks_refusal("1.80.0") is None
    assert "enterprise-only" in callbacks_refusal("1.79.3")


def test_an_enterprise_only_pinned_release_is_refused_before_anything_starts(tmp_path: Path) -> None:
    from proxylab.matrix import run_matrix
    from proxylab.settings import LabSettings

    settings = LabSettings(_env_file=None, home=tmp_path / "home", results_dir=tmp_path / "results",
                           proxy_version="1.79.3")

    with pytest.raises(LabError, match="LiteLLM 1.79.3 cannot run with callbacks on"):
        run_matrix(settings, MatrixPlan(callbacks=[True], user_modes=["none"]), run_id="refused")
    assert not (tmp_path / "results").exists()
    assert not (tmp_path / "home" / "state").exists()


# --- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--proxy-setting", "litellm_settings.request_timeout"],
     "--proxy-setting: takes SECTION.KEY=V1,V2, got 'litellm_settings.request_timeout'"),
    (["--proxy-setting", "server.request_timeout=1,2"],
     "--proxy-setting: unknown proxy config section 'server'"),
    (["--proxy-setting", "request_timeout=1,2"], "--proxy-setting: 'request_timeout' is not of the form"),
    (["--proxy-setting", "litellm_settings.request_timeout=5,5"], "--proxy-setting: litellm_settings"
     ".request_timeout repeats a value"),
    (["--proxy-setting", "litellm_settings.request_timeout=5", "--proxy-setting",
      "litellm_settings.request_timeout=6"], "is given twice"),
    (["--callbacks", "on", "--proxy-version", "1.79.3"],
     "LiteLLM 1.79.3 cannot run with callbacks on"),
])
def test_bad_matrix_input_is_one_line_and_exit_2(args: list[str], expected: str,
                                                  lab_env: dict) -> None:
    completed = run_cli(["matrix", *args], lab_env, timeout_s=120)

    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert expected in lines[0]
    state = Path(lab_env["PROXYLAB_HOME"]) / "state" / "processes.json"
    assert not state.exists() or json.loads(state.read_text()) == []


# --- on the native stack ---------------------------------------------------------------------


@pytest.mark.stack
def test_matrix_over_a_setting_runs_each_value_on_its_own_proxy(lab_env: dict) -> None:
    # request_timeout only bounds the wait for the (instant) mock: harmless at both values.
    completed = run_cli(["matrix", "--callbacks", "off", "--user-mode", "none", "--proxy-setting",
                         "litellm_settings.request_timeout=300,600", "--requests", "40",
                         "--users", "2", "--warmup", "4", "--run-id", "setting-axis"], lab_env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    run_dir = Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "setting-axis"
    summary = json.loads((run_dir / "summary.json").read_text())
    cells = summary["cells"]

    assert sorted(cell["config"]["litellm_settings.request_timeout"] for cell in cells) == [300, 600]
    assert len({cell["proxy_start"] for cell in cells}) == 2
    for cell in cells:
        # The copy of the file this cell's proxy process was started with.
        ran_with = yaml.safe_load((run_dir / cell["proxy_config_file"]).read_text())
        assert ran_with["litellm_settings"]["request_timeout"] == (
            cell["config"]["litellm_settings.request_timeout"]), cell["cell_id"]
        assert cell["statistics"]["all"]["failed"] == 0
    assert "### litellm_settings.request_timeout 600 vs 300" in (run_dir / "report.md").read_text()
