"""`proxylab compare`: the same configurations in two result directories, judged run against run.

The typical use is one matrix before and after a fix. Configurations are matched by
config_id; the runs of the first directory are the baseline, those of the second the
candidate, and every verdict comes from the same machinery as within one matrix
(proxylab.verdicts), so the two kinds of report read alike.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from proxylab import html_report, results, verdicts
from proxylab.errors import LabError

logger = logging.getLogger(__name__)


@dataclass
class DirectoryComparison:
    """Two result directories, the configurations they share, and the verdicts on them."""

    dir_a: Path
    dir_b: Path
    name_a: str
    name_b: str
    matched: list[str]  # config_ids in both
    only_a: list[str]
    only_b: list[str]
    assessment: verdicts.Assessment


def _names(dir_a: Path, dir_b: Path) -> tuple[str, str]:
    """Short names for the two sides, distinct even when both folders share a name."""
    if dir_a.name != dir_b.name:
        return dir_a.name, dir_b.name
    return f"A {dir_a.name}", f"B {dir_b.name}"


def compare_directories(dir_a: Path, dir_b: Path,
                        options: verdicts.VerdictOptions | None = None) -> DirectoryComparison:
    """Verdicts on every configuration found in both directories: b against a."""
    # TODO: configurations are matched by identical config_id only; imported logs named
    # differently (callbacks_on_baseline vs callbacks_off_baseline) need an explicit mapping.
    summary_a = results.load_summary(dir_a)
    summary_b = results.load_summary(dir_b)
    groups_a = verdicts.group_by_config(verdicts.load_runs(dir_a, summary_a))
    groups_b = verdicts.group_by_config(verdicts.load_runs(dir_b, summary_b))
    matched = [cid for cid in groups_a if cid in groups_b]
    if not matched:
        raise LabError(f"{dir_a} and {dir_b} share no configuration (config_id); nothing to "
                       f"compare")
    name_a, name_b = _names(dir_a, dir_b)
    groups: dict[str, list[verdicts.Run]] = {}
    planned = []
    for cid in matched:
        label_a, label_b = f"{name_a}: {cid}", f"{name_b}: {cid}"
        groups[label_a] = groups_a[cid]
        groups[label_b] = groups_b[cid]
        planned.append(verdicts.PlannedComparison("run", label_a, label_b,
                                                  f"{cid}: {name_b} vs {name_a}"))
    assessment = verdicts.assess(groups, planned, options)
    return DirectoryComparison(dir_a=dir_a, dir_b=dir_b, name_a=name_a, name_b=name_b,
                               matched=matched, only_a=[c for c in groups_a if c not in groups_b],
                               only_b=[c for c in groups_b if c not in groups_a],
                               assessment=assessment)


def render_markdown(comparison: DirectoryComparison) -> str:
    lines = [f"# proxylab comparison `{comparison.name_b}` against `{comparison.name_a}`", "",
             f"- **Baseline (a):** `{comparison.dir_a}`",
             f"- **Candidate (b):** `{comparison.dir_b}`",
             f"- **Configurations in both:** {len(comparison.matched)}"]
    if comparison.only_a:
        lines.append(f"- **Only in a (not compared):** "
                     f"{', '.join(f'`{cid}`' for cid in comparison.only_a)}")
    if comparison.only_b:
        lines.append(f"- **Only in b (not compared):** "
                     f"{', '.join(f'`{cid}`' for cid in comparison.only_b)}")
    lines += ["", *verdicts.markdown_section(comparison.assessment)]
    return "\n".join(lines) + "\n"


def headlines(comparison: DirectoryComparison) -> list[str]:
    """One line per configuration: the verdict on the primary statistic."""
    primary = comparison.assessment.options.primary_statistic
    return [entry.headline(primary) for entry in comparison.assessment.comparisons]


def write_comparison(comparison: DirectoryComparison, out_dir: Path) -> list[Path]:
    """report.md, report.html and verdicts.json of a comparison into ``out_dir``.

    The folder is rewritten on every call: it holds nothing but what this derives from
    the two result directories.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(comparison)
    paths = [out_dir / "report.md", out_dir / "report.html", out_dir / "verdicts.json"]
    results.write_text_atomic(paths[0], markdown)
    results.write_text_atomic(paths[1], html_report.render_html(
        f"proxylab comparison {comparison.name_b} vs {comparison.name_a}", markdown,
        comparison.assessment))
    document = {
        "schema": "proxylab.comparison", "schema_version": 1, "created_at": results.now_iso(),
        "baseline_dir": str(comparison.dir_a), "candidate_dir": str(comparison.dir_b),
        "matched": comparison.matched, "only_baseline": comparison.only_a,
        "only_candidate": comparison.only_b,
        "options": {key: value for key, value in vars(comparison.assessment.options).items()},
        "comparisons": [entry.to_dict() for entry in comparison.assessment.comparisons],
    }
    results.write_text_atomic(paths[2], json.dumps(_finite(document), indent=2) + "\n")
    logger.info("comparison written to %s", out_dir)
    return paths


def _finite(value: object) -> object:
    """Strict JSON: NaN (an interval that could not be computed) becomes null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
