"""`proxylab compare` and `proxylab calibrate` on synthetic result directories with known shifts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import synthetic
from conftest import run_cli

from proxylab import compare, importers, stats
from proxylab.errors import LabError

CONFIGS = {"callbacks-off": {"callbacks": False}, "callbacks-on": {"callbacks": True}}


def _write(path: Path, scales: dict[str, float], seed: int, runs: int = 5,
           requests: int = 1000) -> Path:
    rng = np.random.default_rng(seed)
    cells = [(config_id, CONFIGS.get(config_id, {}), repeat,
              synthetic.latencies(rng, requests, scale=scale))
             for config_id, scale in scales.items() for repeat in range(1, runs + 1)]
    synthetic.write_result_dir(path, cells)
    return path


@pytest.fixture(scope="module")
def before_after(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """'after' is 20 % faster with callbacks on and unchanged with them off."""
    root = tmp_path_factory.mktemp("results")
    before = _write(root / "before", {"callbacks-off": 1.0, "callbacks-on": 1.25}, seed=1)
    after = _write(root / "after", {"callbacks-off": 1.0, "callbacks-on": 1.0}, seed=2)
    return before, after


def test_known_shift_is_significant_with_the_right_sign(before_after) -> None:
    before, after = before_after

    forward = compare.compare_directories(before, after)
    backward = compare.compare_directories(after, before)

    fixed = {c.label.split(":")[0]: c for c in forward.assessment.comparisons}
    assert set(fixed) == {"callbacks-off", "callbacks-on"}
    p95_on = fixed["callbacks-on"].verdict("p95_ms")
    assert p95_on.significant and p95_on.effect < 0, p95_on.text
    # The true change is 1 / 1.25 - 1 = -20 %; whether one interval covers it is a 95 %
    # matter, tested over many trials in test_verdicts. Here: the estimate is near it.
    assert -30.0 < p95_on.effect < -10.0, p95_on.text
    assert not fixed["callbacks-off"].verdict("p95_ms").significant
    reverse_p95 = next(c for c in backward.assessment.comparisons
                       if c.label.startswith("callbacks-on")).verdict("p95_ms")
    assert reverse_p95.significant and reverse_p95.effect > 0  # +25 % the other way


def test_unmatched_configurations_are_listed_and_disjoint_dirs_refused(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", {"callbacks-off": 1.0, "only-a": 1.0}, seed=3, runs=2,
               requests=200)
    b = _write(tmp_path / "b", {"callbacks-off": 1.0, "only-b": 1.0}, seed=4, runs=2,
               requests=200)
    c = _write(tmp_path / "c", {"something-else": 1.0}, seed=5, runs=2, requests=200)

    result = compare.compare_directories(a, b)

    assert [(pair.config_a, pair.config_b) for pair in result.pairs] == [
        ("callbacks-off", "callbacks-off")]
    assert (result.only_a, result.only_b) == (["only-a"], ["only-b"])
    assert "Only in a (not compared)" in compare.render_markdown(result)
    with pytest.raises(LabError, match="share no configuration"):
        compare.compare_directories(a, c)


def test_same_folder_name_on_both_sides_stays_distinct(tmp_path: Path) -> None:
    a = _write(tmp_path / "x" / "run", {"callbacks-off": 1.0}, seed=6, runs=2, requests=200)
    b = _write(tmp_path / "y" / "run", {"callbacks-off": 1.0}, seed=7, runs=2, requests=200)
    result = compare.compare_directories(a, b)
    assert len(result.assessment.groups) == 2


def test_comparison_files_are_written_and_json_is_strict(before_after, tmp_path: Path) -> None:
    before, after = before_after
    result = compare.compare_directories(before, after)

    paths = compare.write_comparison(result, tmp_path / "cmp")

    assert [path.name for path in paths] == ["report.md", "report.html", "verdicts.json"]
    markdown = paths[0].read_text()
    assert "## Verdicts" in markdown and "callbacks-on: after vs before" in markdown

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    document = json.loads(paths[2].read_text(), parse_constant=refuse)
    assert (document["schema"], document["schema_version"]) == ("proxylab.comparison", 2)
    assert {entry["label"] for entry in document["comparisons"]} == {
        "callbacks-off: after vs before", "callbacks-on: after vs before"}
    assert "<script src=" not in paths[1].read_text()


def test_cli_compare_prints_verdicts_and_writes_reports(before_after, tmp_path: Path,
                                                        lab_env: dict) -> None:
    before, after = before_after
    out = tmp_path / "cli-cmp"
    completed = run_cli(["compare", str(before), str(after), "--out", str(out)], lab_env,
                        timeout_s=300)
    assert completed.returncode == 0, completed.stderr
    assert "callbacks-on: after vs before" in completed.stdout
    assert "significant" in completed.stdout
    assert (out / "report.md").exists() and (out / "report.html").exists()


def test_cli_compare_default_folder_is_under_results(before_after, lab_env: dict) -> None:
    before, after = before_after
    completed = run_cli(["compare", str(before), str(after)], lab_env, timeout_s=300)
    assert completed.returncode == 0, completed.stderr
    expected = Path(lab_env["PROXYLAB_RESULTS_DIR"]) / "compare-before-vs-after"
    assert (expected / "report.html").exists()


def test_cli_calibrate_from_run(tmp_path: Path, lab_env: dict) -> None:
    aa = _write(tmp_path / "aa", {"callbacks-off": 1.0}, seed=8, runs=6, requests=1000)
    completed = run_cli(["calibrate", "--from-run", str(aa), "--repeats", "10",
                         "--target-percent", "5"], lab_env, timeout_s=300)
    assert completed.returncode == 0, completed.stderr
    assert "budget evaluated: 10 repeats" in completed.stdout
    assert "p95" in completed.stdout and "A/A check" in completed.stdout


def _fake_matrix(calls: list[dict]):
    """Stands in for matrix.run_matrix: saves synthetic A/A runs of the plan it is given."""
    def run_matrix(settings, plan, *, run_id=None, **_: object) -> Path:
        calls.append({"plan": plan, "run_id": run_id})
        rng = np.random.default_rng(21)
        cells = [(config.config_id, {"callbacks": config.callbacks, "user_mode": config.user_mode,
                                     "key_mode": config.key_mode}, repeat,
                  synthetic.latencies(rng, plan.requests))
                 for config in plan.configurations() for repeat in range(1, plan.repeats + 1)]
        run_dir = settings.results_dir / run_id
        synthetic.write_result_dir(run_dir, cells, users=plan.users)
        return run_dir
    return run_matrix


def test_calibrate_a_over_a_mode_runs_one_configuration_and_evaluates_that_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from proxylab import cli, matrix

    calls: list[dict] = []
    monkeypatch.setattr(matrix, "run_matrix", _fake_matrix(calls))
    monkeypatch.setenv("PROXYLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROXYLAB_RESULTS_DIR", str(tmp_path / "results"))
    runner = CliRunner()

    given = runner.invoke(cli.app, ["calibrate", "--repeats", "4", "--requests", "400",
                                    "--users", "8", "--run-id", "aa-test"])
    default = runner.invoke(cli.app, ["calibrate"])

    assert given.exit_code == 0, given.output
    plan = calls[0]["plan"]
    (config,) = plan.configurations()  # one configuration: the first value of every axis
    assert config.callbacks is False
    assert (plan.repeats, plan.requests, plan.users) == (4, 400, 8)
    assert calls[0]["run_id"] == "aa-test"
    run_dir = tmp_path / "results" / "aa-test"
    # The budget evaluated is the one just run, not the flags' meaning with --from-run.
    assert (f"A/A noise floor of {run_dir}: 4 runs of {config.config_id}, median 400 "
            f"successful requests per run") in given.output
    assert "budget evaluated: 4 repeats per configuration of 400 requests" in given.output
    assert "A/A check (must find no difference):" in given.output

    assert default.exit_code == 0, default.output
    assert calls[1]["plan"].repeats == 6
    assert calls[1]["run_id"].startswith("calibrate-")
    assert "budget evaluated: 6 repeats" in default.output


@pytest.mark.parametrize(("args", "expected"), [
    (["compare", "/nonexistent/a", "/nonexistent/b"], "not a proxylab result directory"),
    (["calibrate", "--users", "50", "--requests", "10"], "50 users need at least as many requests"),
    (["calibrate", "--from-run", "/nonexistent/a"], "not a proxylab result directory"),
    (["calibrate", "--repeats", "1"], "at least 2 runs"),
    (["calibrate", "--from-run", "/nonexistent/a", "--target-percent", "0"], "target-percent"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], expected: str,
                                              lab_env: dict) -> None:
    completed = run_cli(args, lab_env, timeout_s=120)
    assert completed.returncode == 2, completed
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], completed.stderr


def _seed_log(path: Path, latency_ms: np.ndarray, modes: str | None = None) -> Path:
    """A log in the original investigation's format, its summary computed from the latencies."""
    latency_ms = np.round(latency_ms)
    figures = stats.summarize(latency_ms, np.ones(latency_ms.size))
    lines = [f"=== {latency_ms.size} requests, 10 users, fire-as-fast-as-possible ==="]
    if modes:
        lines.append(modes)
    lines.append("Latency = time from request start until last byte of response received")
    lines += [f"  [OK] User {index % 10 + 1} request {index // 10 + 1:3d}: {value / 1000:.3f}s"
              for index, value in enumerate(latency_ms)]
    lines += ["", f"[OK] {latency_ms.size} succeeded, [FAIL] 0 failed", "",
              "Latency (successful):"]
    lines += [f"  {name}:  {getattr(figures, f'{name}_ms') / 1000:.3f}s"
              for name in ("min", "avg", "max", "p95", "p99")]
    lines += ["", "Requests above threshold (successful only):"]
    lines += [f"  Above {share.threshold_s:g}s: {share.count}/{latency_ms.size} "
              f"({share.percent:.1f}%)" for share in figures.above]
    path.write_text("\n".join(lines) + "\n")
    return path


def _matrix_config(callbacks: bool, user_mode: str) -> tuple[str, dict]:
    """A configuration as a matrix cell records it (plan.CellConfig)."""
    config_id = f"callbacks-{'on' if callbacks else 'off'}.user-{user_mode}.key-shared"
    return config_id, {"callbacks": callbacks, "user_mode": user_mode, "key_mode": "shared",
                       "llm_latency_ms": 0, "toxics": "none", "proxy_version": "", "replica": 0}


@pytest.fixture(scope="module")
def imported_and_matrix(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Seed-format logs imported (callbacks on 20 % slower) and a matrix of two user modes."""
    root = tmp_path_factory.mktemp("import-vs-matrix")
    rng = np.random.default_rng(11)
    logs = [
        _seed_log(root / "callbacks_off_user_random.txt", synthetic.latencies(rng, 600),
                  "User mode: random, Key mode: shared"),
        _seed_log(root / "callbacks_on_user_random.txt",
                  synthetic.latencies(rng, 600, scale=1.2), "User mode: random, Key mode: shared"),
        # No mode line, as in the oldest logs: callbacks is all it records.
        _seed_log(root / "callbacks_off_baseline.txt", synthetic.latencies(rng, 600)),
    ]
    imported = root / "seed"
    importers.import_into_result_dir(logs, imported)
    cells = [(*_matrix_config(callbacks, user_mode), repeat, synthetic.latencies(rng, 600))
             for callbacks in (False, True) for user_mode in ("none", "random")
             for repeat in (1, 2)]
    matrix = root / "matrix"
    synthetic.write_result_dir(matrix, cells)
    return imported, matrix


def test_imported_logs_pair_with_matrix_configurations_by_what_both_record(
        imported_and_matrix) -> None:
    imported, matrix = imported_and_matrix

    result = compare.compare_directories(imported, matrix)

    assert [(pair.config_a, pair.config_b, pair.keys) for pair in result.pairs] == [
        ("callbacks_off_user_random", "callbacks-off.user-random.key-shared",
         ("callbacks", "key_mode", "user_mode")),
        ("callbacks_on_user_random", "callbacks-on.user-random.key-shared",
         ("callbacks", "key_mode", "user_mode")),
    ]
    (baseline,) = result.unpaired_a
    assert baseline.config_id == "callbacks_off_baseline"
    assert baseline.reason == ("ambiguous: callbacks-off.user-none.key-shared, "
                               "callbacks-off.user-random.key-shared all agree with it on "
                               "callbacks only")
    assert result.only_b == ["callbacks-off.user-none.key-shared",
                             "callbacks-on.user-none.key-shared"]
    # The imported callbacks-on log is 20 % slower than the matrix's: b is faster.
    on = next(c for c in result.assessment.comparisons if "callbacks-on" in c.label)
    assert on.label == ("matrix callbacks-on.user-random.key-shared vs "
                        "seed callbacks_on_user_random")
    assert on.verdict("p50_ms").effect < 0


def test_pairing_prefers_the_partner_agreeing_on_more_keys_and_refuses_disagreement() -> None:
    pairs, unpaired_a, unpaired_b = compare.pair_configurations(
        {"log": {"callbacks": True, "user_mode": "random", "source_format": "seed-log",
                 "variant": "x"},
         "other-switch": {"callbacks": False, "cache": True},
         "nothing-recorded": {"source_format": "locust-csv"}},
        {"on-none": {"callbacks": True, "user_mode": "none"},
         "on-random": {"callbacks": True, "user_mode": "random"},
         "off-random": {"callbacks": False, "user_mode": "random", "cache": False}})

    assert pairs == [compare.ConfigPair("log", "on-random", ("callbacks", "user_mode"))]
    assert [entry.config_id for entry in unpaired_a] == ["other-switch", "nothing-recorded"]
    assert "differs from it on a key both record" in unpaired_a[0].reason
    assert "records no configuration" in unpaired_a[1].reason
    assert [entry.config_id for entry in unpaired_b] == ["on-none", "off-random"]


def test_cli_compare_says_which_pairs_were_compared(imported_and_matrix, tmp_path: Path,
                                                    lab_env: dict) -> None:
    imported, matrix = imported_and_matrix
    completed = run_cli(["compare", str(imported), str(matrix), "--out", str(tmp_path / "cmp")],
                        lab_env, timeout_s=300)

    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert ("compared: callbacks_on_user_random <-> callbacks-on.user-random.key-shared "
            "(on callbacks, key_mode, user_mode)") in lines
    assert any(line.startswith("not compared, no partner in matrix: seed callbacks_off_baseline "
                               "(ambiguous: ") for line in lines), completed.stdout
    assert ("not compared, no partner in seed: matrix callbacks-on.user-none.key-shared (no "
            "configuration of the other side chose it as its single best partner)") in lines
    document = json.loads((tmp_path / "cmp" / "verdicts.json").read_text())
    assert {pair["baseline"] for pair in document["pairs"]} == {
        "callbacks_off_user_random", "callbacks_on_user_random"}
