"""The `measured` fixture: figures recorded by passing tests appear after the run, once each."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]


def test_measured_figures_are_printed_in_their_own_section(pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_floor="""
        def test_floor(measured):
            measured("p95 run CV 2.2 %\\np99 run CV 2.6 %")

        def test_nothing_measured():
            pass
    """)

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines([r"=+ measured figures =+", r"test_floor.py::test_floor",
                                  r"  p95 run CV 2.2 %", r"  p99 run CV 2.6 %"])
    assert result.stdout.str().count("p95 run CV 2.2 %") == 1  # captured, not echoed
    assert "test_nothing_measured" not in result.stdout.str()
