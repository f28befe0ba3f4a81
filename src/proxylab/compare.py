"""`proxylab compare`: the same configurations in two result directories, judged run against run.

The typical use is one matrix before and after a fix, or imported logs against a matrix.
Configurations are paired by what their cells record (callbacks, user mode, key mode, ...):
keys recorded on both sides must agree, and of several candidates the one agreeing on the
most keys wins; a configuration without a single best partner is listed with the reason and
not compared. The runs of the first directory are the baseline, those of the second the
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

# Keys that say how a log was written, not what ran: a Locust CSV and a seed log of the same
# configuration are still partners.
DESCRIPTIVE_KEYS = frozenset({"source_format", "latency_definition"})


@dataclass(frozen=True)
class ConfigPair:
    """A configuration of a paired with one of b, and the recorded keys they agree on."""

    config_a: str  # config_id in a
    config_b: str  # config_id in b
    keys: tuple[str, ...]  # empty: paired by identical config_id, nothing recorded on both

    def describe(self) -> str:
        on = f"on {', '.join(self.keys)}" if self.keys else "by identical config_id"
        return f"{self.config_a} <-> {self.config_b} ({on})"


@dataclass(frozen=True)
class Unpaired:
    """A configuration of one side that has no single partner on the other."""

    config_id: str
    reason: str


@dataclass
class DirectoryComparison:
    """Two result directories, how their configurations were paired, and the verdicts."""

    dir_a: Path
    dir_b: Path
    name_a: str
    name_b: str
    pairs: list[ConfigPair]
    unpaired_a: list[Unpaired]
    unpaired_b: list[Unpaired]
    assessment: verdicts.Assessment

    @property
    def only_a(self) -> list[str]:
        return [entry.config_id for entry in self.unpaired_a]

    @property
    def only_b(self) -> list[str]:
        return [entry.config_id for entry in self.unpaired_b]

    def pairing_lines(self) -> list[str]:
        """Which configurations were compared and which had no partner, one line each."""
        lines = [f"compared: {pair.describe()}" for pair in self.pairs]
        lines += [f"not compared, no partner in {self.name_b}: {self.name_a} {entry.config_id} "
                  f"({entry.reason})" for entry in self.unpaired_a]
        lines += [f"not compared, no partner in {self.name_a}: {self.name_b} {entry.config_id} "
                  f"({entry.reason})" for entry in self.unpaired_b]
        return lines


def _names(dir_a: Path, dir_b: Path) -> tuple[str, str]:
    """Short names for the two sides, distinct even when both folders share a name."""
    if dir_a.name != dir_b.name:
        return dir_a.name, dir_b.name
    return f"A {dir_a.name}", f"B {dir_b.name}"


def _recorded(config: dict) -> dict[str, str]:
    """The configuration's recorded keys, values made comparable; None means not recorded."""
    return {key: json.dumps(value, sort_keys=True, default=str) for key, value in config.items()
            if value is not None and key not in DESCRIPTIVE_KEYS}


def _agreement(config_a: dict[str, str], id_a: str, config_b: dict[str, str],
               id_b: str) -> tuple[str, ...] | None:
    """Keys both record and agree on, or None when they are no partners.

    Any disagreement on a key both record rules the pair out; with nothing recorded on
    both, only an identical config_id makes partners.
    """
    shared = sorted(set(config_a) & set(config_b))
    if any(config_a[key] != config_b[key] for key in shared):
        return None
    if not shared and id_a != id_b:
        return None
    return tuple(shared)


def _best_partners(config_id: str, config: dict[str, str],
                   others: dict[str, dict[str, str]]) -> list[tuple[str, tuple[str, ...]]]:
    """The partners agreeing on the most keys (an identical config_id breaks a tie)."""
    candidates = [(other_id, keys) for other_id, other in others.items()
                  if (keys := _agreement(config, config_id, other, other_id)) is not None]
    if not candidates:
        return []
    most = max(len(keys) for _, keys in candidates)
    best = [(other_id, keys) for other_id, keys in candidates if len(keys) == most]
    same_id = [(other_id, keys) for other_id, keys in best if other_id == config_id]
    return same_id or best


def pair_configurations(configs_a: dict[str, dict], configs_b: dict[str, dict]
                        ) -> tuple[list[ConfigPair], list[Unpaired], list[Unpaired]]:
    """Pair each configuration of a with its single best partner in b.

    Several configurations of a may pair with the same one of b (three imported
    callbacks-off logs against one matrix configuration): each pair is its own comparison.
    """
    recorded_a = {cid: _recorded(config) for cid, config in configs_a.items()}
    recorded_b = {cid: _recorded(config) for cid, config in configs_b.items()}
    pairs: list[ConfigPair] = []
    unpaired_a: list[Unpaired] = []
    for cid, config in recorded_a.items():
        best = _best_partners(cid, config, recorded_b)
        if len(best) == 1:
            pairs.append(ConfigPair(cid, best[0][0], best[0][1]))
        elif best:
            unpaired_a.append(Unpaired(cid, _ambiguity(best)))
        elif config:
            unpaired_a.append(Unpaired(cid, "every configuration of the other side differs from "
                                            "it on a key both record"))
        else:
            unpaired_a.append(Unpaired(cid, "it records no configuration and no config_id of the "
                                            "other side is the same"))
    partnered_b = {pair.config_b for pair in pairs}
    unpaired_b = [Unpaired(cid, "no configuration of the other side chose it as its single best "
                                "partner") for cid in recorded_b if cid not in partnered_b]
    return pairs, unpaired_a, unpaired_b


def _ambiguity(best: list[tuple[str, tuple[str, ...]]]) -> str:
    """Why a configuration has no single partner: equally good candidates."""
    key_sets = {keys for _, keys in best}
    if len(key_sets) == 1:
        return (f"ambiguous: {', '.join(other for other, _ in best)} all agree with it on "
                f"{', '.join(best[0][1])} only")
    return "ambiguous: " + ", ".join(f"{other} (agrees on {', '.join(keys)})"
                                     for other, keys in best)


def _comparison_label(pair: ConfigPair, name_a: str, name_b: str) -> str:
    if pair.config_a == pair.config_b:
        return f"{pair.config_a}: {name_b} vs {name_a}"
    return f"{name_b} {pair.config_b} vs {name_a} {pair.config_a}"


def compare_directories(dir_a: Path, dir_b: Path,
                        options: verdicts.VerdictOptions | None = None) -> DirectoryComparison:
    """Verdicts on every pair of configurations of the two directories: b against a."""
    summary_a = results.load_summary(dir_a)
    summary_b = results.load_summary(dir_b)
    groups_a = verdicts.group_by_config(verdicts.load_runs(dir_a, summary_a))
    groups_b = verdicts.group_by_config(verdicts.load_runs(dir_b, summary_b))
    pairs, unpaired_a, unpaired_b = pair_configurations(
        {cid: runs[0].config for cid, runs in groups_a.items()},
        {cid: runs[0].config for cid, runs in groups_b.items()})
    if not pairs:
        raise LabError(f"{dir_a} and {dir_b} share no configuration (no recorded configuration "
                       f"of one has a single partner in the other); nothing to compare")
    name_a, name_b = _names(dir_a, dir_b)
    groups: dict[str, list[verdicts.Run]] = {}
    planned = []
    for pair in pairs:
        label_a, label_b = f"{name_a}: {pair.config_a}", f"{name_b}: {pair.config_b}"
        groups[label_a] = groups_a[pair.config_a]
        groups[label_b] = groups_b[pair.config_b]
        planned.append(verdicts.PlannedComparison("run", label_a, label_b,
                                                  _comparison_label(pair, name_a, name_b)))
    assessment = verdicts.assess(groups, planned, options)
    return DirectoryComparison(dir_a=dir_a, dir_b=dir_b, name_a=name_a, name_b=name_b,
                               pairs=pairs, unpaired_a=unpaired_a, unpaired_b=unpaired_b,
                               assessment=assessment)


def render_markdown(comparison: DirectoryComparison) -> str:
    lines = [f"# proxylab comparison `{comparison.name_b}` against `{comparison.name_a}`", "",
             f"- **Baseline (a):** `{comparison.dir_a}`",
             f"- **Candidate (b):** `{comparison.dir_b}`",
             f"- **Pairs compared:** {len(comparison.pairs)} (configurations paired by the keys "
             f"both record)"]
    lines += [f"  - `{pair.config_a}` ↔ `{pair.config_b}`: "
              f"{'agree on ' + ', '.join(pair.keys) if pair.keys else 'identical config_id'}"
              for pair in comparison.pairs]
    if comparison.unpaired_a:
        lines.append("- **Only in a (not compared):** " + "; ".join(
            f"`{entry.config_id}` ({entry.reason})" for entry in comparison.unpaired_a))
    if comparison.unpaired_b:
        lines.append("- **Only in b (not compared):** " + "; ".join(
            f"`{entry.config_id}` ({entry.reason})" for entry in comparison.unpaired_b))
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
        # Version 2: "pairs" replaced "matched"; unpaired configurations carry their reason.
        "schema": "proxylab.comparison", "schema_version": 2, "created_at": results.now_iso(),
        "baseline_dir": str(comparison.dir_a), "candidate_dir": str(comparison.dir_b),
        "pairs": [{"baseline": pair.config_a, "candidate": pair.config_b, "keys": list(pair.keys)}
                  for pair in comparison.pairs],
        "only_baseline": [vars(entry) for entry in comparison.unpaired_a],
        "only_candidate": [vars(entry) for entry in comparison.unpaired_b],
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
