"""Mixed mock behaviours: the flags' parsing, the proxy config's models, the load's draws.

The draw test runs the real locustfile headless against a mock subprocess (no proxy, no
stack): the mock echoes each request's model, so the raw table's model column is checked
against what the mock actually answered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mock_process import running_mock

from conftest import run_cli
from proxylab import compose, model_mix, stack
from proxylab.errors import LabError
from proxylab.matrix import proxy_config
from proxylab.plan import CellConfig, MatrixPlan, configured_models
from proxylab.rawlog import read_raw

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO_ROOT / "locustfiles" / "chat.py"


@pytest.fixture()
def behaviours(tmp_path: Path) -> Path:
    path = tmp_path / "behaviours.json"
    path.write_text(json.dumps({"models": {"mock-slow": {"latency_ms": 50},
                                           "mock-flaky": {"error_500_share": 0.5}}}))
    return path


# --- parsing and validation -----------------------------------------------------------------


def test_model_mix_parses_names_and_shares_in_order() -> None:
    mix = model_mix.parse_model_mix(" mock-gpt=0.9 , mock-slow=0.1")

    assert mix == {"mock-gpt": 0.9, "mock-slow": 0.1}
    assert list(mix) == ["mock-gpt", "mock-slow"]
    assert model_mix.mix_spec(mix) == "mock-gpt=0.9,mock-slow=0.1"


@pytest.mark.parametrize(("text", "expected"), [
    ("mock-gpt=0.9,mock-slow=0.2", "shares sum to 1.1, expected 1"),
    ("mock-gpt=0.5", "shares sum to 0.5"),
    ("mock-gpt", "expected MODEL=SHARE"),
    ("=1", "expected MODEL=SHARE"),
    ("mock-gpt=abc", "not a number"),
    ("mock-gpt=1.5,mock-slow=-0.5", "must be above 0"),
    ("mock-gpt=0.5,mock-gpt=0.5", "given twice"),
])
def test_bad_model_mix_is_refused_with_its_reason(text: str, expected: str) -> None:
    with pytest.raises(LabError, match=expected):
        model_mix.parse_model_mix(text)


def test_behaviours_file_shape_is_checked(tmp_path: Path) -> None:
    not_json = tmp_path / "broken.json"
    not_json.write_text("{models: ")
    no_models = tmp_path / "empty.yaml"
    no_models.write_text("models: {}\n")
    good_yaml = tmp_path / "good.yaml"
    good_yaml.write_text("models:\n  mock-slow: {latency_ms: 10}\n")

    with pytest.raises(LabError, match="no such file"):
        model_mix.read_behaviours(tmp_path / "missing.json")
    with pytest.raises(LabError, match="not JSON or YAML"):
        model_mix.read_behaviours(not_json)
    with pytest.raises(LabError, match="at least one model"):
        model_mix.read_behaviours(no_models)
    assert model_mix.read_behaviours(good_yaml) == {"mock-slow": {"latency_ms": 10}}


def test_plan_routes_the_config_models_and_the_files(behaviours: Path) -> None:
    plan = MatrixPlan(mock_behaviours=str(behaviours), model_mix={"mock-gpt": 0.8,
                                                                  "mock-slow": 0.2})

    assert configured_models() == ["mock-gpt"]
    assert plan.routed_models() == ["mock-gpt", "mock-slow", "mock-flaky"]
    assert plan.mock_behaviours == str(behaviours.resolve())


def test_plan_refuses_a_mix_model_nobody_defines(behaviours: Path) -> None:
    with pytest.raises(LabError, match="'mock-slow' is neither in the proxy config"):
        MatrixPlan(model_mix={"mock-gpt": 0.5, "mock-slow": 0.5})
    with pytest.raises(LabError, match="'mock-fast' is neither"):
        MatrixPlan(mock_behaviours=str(behaviours), model_mix={"mock-fast": 1.0})


@pytest.mark.parametrize(("args", "expected"), [
    (["--model-mix", "mock-gpt=0.9,mock-slow=0.1"], "'mock-slow' is neither in the proxy config"),
    (["--model-mix", "mock-gpt=0.7"], "--model-mix: shares sum to 0.7, expected 1"),
    (["--mock-behaviours", "/nonexistent/behaviours.json"], "no such file"),
])
def test_bad_mix_flags_are_one_line_and_exit_2(args: list[str], expected: str,
                                               lab_env: dict) -> None:
    completed = run_cli(["matrix", *args], lab_env, timeout_s=120)

    assert completed.returncode == 2, completed.stderr
    error_lines = [line for line in completed.stderr.splitlines() if "error" in line.lower()]
    assert len(error_lines) == 1 and expected in error_lines[0], completed.stderr
    assert "Traceback" not in completed.stderr


# --- the proxy config -------------------------------------------------------------------------


def test_proxy_config_gets_one_entry_per_model_like_the_first(behaviours: Path) -> None:
    plan = MatrixPlan(mock_behaviours=str(behaviours))
    config = proxy_config(CellConfig(callbacks=False, user_mode="none", key_mode="shared"), plan)

    document = yaml.safe_load(stack.render_proxy_config(config))

    entries = {entry["model_name"]: entry["litellm_params"] for entry in document["model_list"]}
    assert list(entries) == ["mock-gpt", "mock-slow", "mock-flaky"]
    assert entries["mock-slow"] == {**entries["mock-gpt"], "model": "openai/mock-slow"}
    assert entries["mock-flaky"]["api_base"] == "os.environ/MOCK_LLM_API_BASE"


def test_no_behaviours_file_leaves_the_shared_config_alone() -> None:
    config = proxy_config(CellConfig(callbacks=False, user_mode="none", key_mode="shared"),
                          MatrixPlan())

    assert config.models == ()
    assert stack.render_proxy_config(config) == stack.render_proxy_config(stack.ProxyConfig())


def test_compose_renders_the_models_as_the_native_stack_does(tmp_path: Path) -> None:
    config = stack.ProxyConfig(callbacks=(stack.PROMETHEUS_CALLBACK,),
                               models=("mock-gpt", "mock-slow"))

    written = compose.write_proxy_variant(config, tmp_path)

    assert written.read_text() == stack.render_proxy_config(config)
    assert compose.proxy_variant(config).startswith("on.")  # its own file, not the plain one
    names = [entry["model_name"] for entry in yaml.safe_load(written.read_text())["model_list"]]
    assert names == ["mock-gpt", "mock-slow"]


def test_native_mock_gets_the_behaviours_file(tmp_path: Path, behaviours: Path) -> None:
    from proxylab.settings import LabSettings

    native = stack.NativeStack(LabSettings(_env_file=None, home=tmp_path))
    assert "MOCK_LLM_BEHAVIOURS_FILE" not in native._mock_llm_spec().env
    native.mock_env = {"MOCK_LLM_BEHAVIOURS_FILE": str(behaviours)}

    assert native._mock_llm_spec().env == {"MOCK_LLM_MODELS": "mock-gpt",
                                           "MOCK_LLM_BEHAVIOURS_FILE": str(behaviours)}


# --- the load's draws, against the mock -------------------------------------------------------

MIX_REQUESTS = 400
SLOW_SHARE = 0.25


def _run_locust(url: str, out: Path, extra: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
               "--users", "4", "--spawn-rate", "4", "--run-time", "60s", "--only-summary",
               "--total-requests", str(MIX_REQUESTS), "--raw-csv", str(out / "raw.csv"),
               "--config-id", "mix-test", "--exit-code-on-error", "0", "--loglevel", "WARNING",
               *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_locust_users_draw_models_in_the_requested_proportion(tmp_path: Path,
                                                              behaviours: Path) -> None:
    mix = f"mock-gpt={1 - SLOW_SHARE:g},mock-slow={SLOW_SHARE:g}"
    with running_mock(tmp_path, {"MOCK_LLM_BEHAVIOURS_FILE": str(behaviours)}) as url:
        first = _run_locust(url, tmp_path, ["--model-mix", mix, "--model-mix-seed", "7"])
        assert first.returncode == 0, first.stderr[-2000:]
        frame = read_raw(tmp_path / "raw.csv")
        (tmp_path / "raw.csv").rename(tmp_path / "first.csv")
        again = _run_locust(url, tmp_path, ["--model-mix", mix, "--model-mix-seed", "7"])
        assert again.returncode == 0, again.stderr[-2000:]
        repeated = read_raw(tmp_path / "raw.csv")

    slow = frame["model"] == "mock-slow"
    share = slow.mean()
    # Binomial sd at n=400, p=0.25 is 0.022: 4 sd either side.
    measured = (f"{int(slow.sum())} of {len(frame)} requests asked for mock-slow "
                f"({share:.3f}, asked {SLOW_SHARE}); models {frame['model'].value_counts().to_dict()}")
    print(measured)
    assert len(frame) == MIX_REQUESTS and (frame["ok"] == 1).all(), frame["error"].unique()
    assert set(frame["model"]) == {"mock-gpt", "mock-slow"}, measured
    assert abs(share - SLOW_SHARE) <= 4 * (SLOW_SHARE * (1 - SLOW_SHARE) / MIX_REQUESTS) ** 0.5, \
        measured
    # The mock gave mock-slow its own 50 ms; the others answer at once: the column is the model
    # the request really asked for.
    assert frame.loc[slow, "latency_ms"].min() >= 50 * 0.95, measured
    assert frame.loc[~slow, "latency_ms"].median() < 25, measured
    # Seeded per user: the same seed draws the same model for every (user, request).
    key = ["user_index", "request_index"]
    assert (frame.sort_values(key)["model"].tolist()
            == repeated.sort_values(key)["model"].tolist())


def test_without_a_mix_every_row_records_the_one_model(tmp_path: Path) -> None:
    with running_mock(tmp_path, {}) as url:
        completed = _run_locust(url, tmp_path, ["--model", "mock-gpt", "--total-requests", "8"])
    assert completed.returncode == 0, completed.stderr[-2000:]

    frame = read_raw(tmp_path / "raw.csv")

    assert len(frame) == 8 and (frame["model"] == "mock-gpt").all()


def test_raw_table_without_a_model_column_still_reads(tmp_path: Path) -> None:
    old = tmp_path / "raw.csv"
    old.write_text("config_id,user_index,request_index,sent_unix_s,finished_unix_s,latency_ms,"
                   "status_code,ok,error,overhead_ms,ttft_ms,proxy_response_ms\n"
                   "c,1,1,100.0,100.25,250.0,200,1,,12.5,,\n")

    frame = read_raw(old)

    assert frame.loc[0, "latency_ms"] == 250.0 and frame["model"].isna().all()


# --- end to end, through the proxy on the native stack ----------------------------------------

SLOW_EXTRA_MS = 300
STACK_REQUESTS = 80
STACK_SLOW_SHARE = 0.25
# Both models share the proxy and its queue; only the mock's 300 ms differs between them. The
# proxy's own time per request varies by tens of ms on a busy two-core machine, so the medians'
# difference is held to 300 ms +- 60 ms.
SLOW_EXTRA_TOLERANCE_MS = 60


@pytest.mark.stack
def test_mock_behaviours_and_model_mix_through_the_proxy(tmp_path: Path) -> None:
    from lab500 import cli_env, make_home, stop_and_remove

    path = tmp_path / "behaviours.json"
    path.write_text(json.dumps({"models": {"mock-slow": {"latency_ms": SLOW_EXTRA_MS}}}))
    home = make_home()
    try:
        env = cli_env(home)
        completed = run_cli(["matrix", "--callbacks", "off", "--user-mode", "none",
                             "--mock-behaviours", str(path), "--model-mix",
                             f"mock-gpt={1 - STACK_SLOW_SHARE:g},mock-slow={STACK_SLOW_SHARE:g}",
                             "--requests", str(STACK_REQUESTS), "--users", "2", "--warmup", "6",
                             "--run-id", "mix"], env, timeout_s=900)
        assert completed.returncode == 0, completed.stderr[-3000:]
        run_dir = Path(env["PROXYLAB_RESULTS_DIR"]) / "mix"
        summary = json.loads((run_dir / "summary.json").read_text())
        (cell,) = summary["cells"]
        frame = read_raw(run_dir / cell["raw_table"])
        report = (run_dir / "report.md").read_text()
    finally:
        stop_and_remove(home)

    medians = frame.groupby("model")["latency_ms"].median()
    counts = frame["model"].value_counts().to_dict()
    measured = (f"median latency by model {medians.round(1).to_dict()} ms over {counts}; "
                f"mock-slow - mock-gpt = {medians['mock-slow'] - medians['mock-gpt']:.1f} ms "
                f"(mock adds {SLOW_EXTRA_MS} ms)")
    print(measured)

    assert (frame["ok"] == 1).all(), frame["error"].unique()
    assert set(counts) == {"mock-gpt", "mock-slow"}, measured
    assert abs(medians["mock-slow"] - medians["mock-gpt"] - SLOW_EXTRA_MS) <= (
        SLOW_EXTRA_TOLERANCE_MS), measured
    assert frame.loc[frame["model"] == "mock-slow", "latency_ms"].min() >= SLOW_EXTRA_MS * 0.95
    assert summary["metadata"]["mock_behaviours"]["models"] == {
        "mock-slow": {"latency_ms": SLOW_EXTRA_MS}}
    assert "Model mix of the load: `mock-gpt` 0.75, `mock-slow` 0.25." in report
