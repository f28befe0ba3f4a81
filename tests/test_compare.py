"""`proxylab compare` and `proxylab calibrate` on synthetic result directories with known shifts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import synthetic
from conftest import run_cli

from proxylab import compare
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

    assert result.matched == ["callbacks-off"]
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
    assert document["schema"] == "proxylab.comparison"
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


@pytest.mark.parametrize(("args", "expected"), [
    (["compare", "/nonexistent/a", "/nonexistent/b"], "not a proxylab result directory"),
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
