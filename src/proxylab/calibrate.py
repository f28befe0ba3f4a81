"""A/A calibration: the noise floor of this machine and the budget a comparison needs.

Repeats of one unchanged configuration differ only by noise, so their spread is the floor
under which no verdict can see a difference. From it, this module gives the smallest change
a comparison of R repeats of N requests per configuration can detect, and the number of
repeats needed for a target change.

The run-to-run spread of a statistic has two parts: sampling noise within a run, which
shrinks as 1/sqrt(requests), and drift between runs (machine load, proxy state), which
does not. The within-run part is estimated by resampling each run's requests; the rest of
the measured spread is attributed to drift. That is how a budget with a different number
of requests per run is extrapolated.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from proxylab import verdicts
from proxylab.errors import LabError

logger = logging.getLogger(__name__)

MAX_SUGGESTED_REPEATS = 200
WITHIN_RUN_BOOTSTRAP_SAMPLES = 300


@dataclass(frozen=True)
class NoiseRow:
    """The noise of one statistic and what it allows.

    For latency statistics the spreads are coefficients of variation in %; for shares they
    are standard deviations in percentage points. ``spread_upper`` is a one-sided 95 %
    upper bound of the measured spread (chi-square on the pooled degrees of freedom): with
    few runs the spread itself is uncertain.
    """

    statistic: str
    unit: str  # "%" or "pp"
    mean: float
    spread: float
    spread_upper: float
    within: float  # part expected from sampling requests, at the measured request count
    between: float  # drift between runs, independent of the request count
    spread_at_budget: float
    mde_at_budget: float | None
    suggested_repeats: int | None  # for the target effect; None when out of reach


@dataclass(frozen=True)
class Calibration:
    """The noise floor of a set of A/A runs and the budgets it implies."""

    source: str
    config_ids: tuple[str, ...]
    runs: int
    requests_per_run: int
    degrees_of_freedom: int
    repeats: int  # budget evaluated: runs per configuration
    requests: int  # budget evaluated: successful requests per run
    target_effect_percent: float
    rows: tuple[NoiseRow, ...]
    aa_check: verdicts.Comparison | None
    warnings: tuple[str, ...]


def _within_spread(runs: Sequence[verdicts.Run], options: verdicts.VerdictOptions,
                   rng: np.random.Generator) -> np.ndarray:
    """Mean within-run variance of each statistic from block-resampled requests (relative or pp²)."""
    shares = np.array([verdicts.is_share(name) for name in options.statistics])
    variances = []
    for run in runs:
        latency_ms = verdicts.send_ordered_latency_ms(run, options.split)
        resampled = verdicts.block_resamples(latency_ms, WITHIN_RUN_BOOTSTRAP_SAMPLES, rng)
        values = verdicts.statistics_matrix(resampled, options.statistics)
        point = verdicts.statistics_matrix(latency_ms, options.statistics)[0]
        variance = values.var(axis=0, ddof=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(point > 0, variance / point**2, 0.0)
        variances.append(np.where(shares, variance, relative))
    return np.mean(variances, axis=0)


def calibrate(runs: Sequence[verdicts.Run], *, repeats: int | None = None,
              requests: int | None = None, target_effect_percent: float = 10.0,
              options: verdicts.VerdictOptions | None = None, source: str = "") -> Calibration:
    """Noise floor of repeats of one configuration (or several, pooled per configuration).

    Every configuration with at least two runs contributes its run-to-run spread; spreads
    are pooled on their degrees of freedom. ``repeats`` and ``requests`` name the budget to
    evaluate (default: the runs' own); the suggestion is the fewest repeats per configuration
    whose minimum detectable effect is at most ``target_effect_percent``.
    """
    options = options or verdicts.VerdictOptions()
    groups = {cid: [run for run in group if run.latency_ms(options.split).size]
              for cid, group in verdicts.group_by_config(runs).items()}
    groups = {cid: group for cid, group in groups.items() if len(group) >= 2}
    if not groups:
        raise LabError("calibration needs at least 2 runs with successful requests of one "
                       "configuration; run more repeats")
    used = [run for group in groups.values() for run in group]
    requests_per_run = int(np.median([run.latency_ms(options.split).size for run in used]))
    repeats = repeats or max(len(group) for group in groups.values())
    requests = requests or requests_per_run
    if repeats < 2 or requests < 1:
        raise LabError("a budget needs at least 2 repeats and 1 request per run")

    shares = [verdicts.is_share(name) for name in options.statistics]
    pooled = np.zeros(len(options.statistics))
    means = np.zeros(len(options.statistics))
    df = 0
    for group in groups.values():
        values = verdicts.run_values(group, options)
        variance = values.var(axis=0, ddof=1)
        mean = values.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(mean > 0, variance / mean**2, 0.0)
        pooled += (len(group) - 1) * np.where(shares, variance, relative)
        means += mean * len(group)
        df += len(group) - 1
    total_variance = pooled / df
    means /= len(used)
    rng = np.random.default_rng([options.seed, 0xA0A0])
    # The within-run part comes from block resampling (correlated neighbours kept together);
    # its extrapolation to other run lengths assumes the same correlation at every length.
    within_variance = _within_spread(used, options, rng)
    # Upper bound of a variance from df degrees of freedom: df * s^2 / chi2(0.05; df).
    upper_factor = math.sqrt(df / scipy_stats.chi2.ppf(0.05, df))

    rows = []
    for column, name in enumerate(options.statistics):
        share = shares[column]
        if share and means[column] == 0:
            continue  # nothing above this threshold in any run: no noise to speak of
        scale = 1.0 if share else 100.0
        total = math.sqrt(total_variance[column])
        within = math.sqrt(within_variance[column])
        between_variance = max(0.0, total_variance[column] - within_variance[column])
        at_budget = math.sqrt(between_variance
                              + within_variance[column] * requests_per_run / requests)
        mde = verdicts.minimum_detectable_effect(scale * at_budget, repeats, repeats,
                                                 options.confidence, options.power)
        suggested = None
        if not share:
            suggested = suggest_repeats(scale * at_budget, target_effect_percent, options)
        rows.append(NoiseRow(statistic=name, unit="pp" if share else "%", mean=float(means[column]),
                             spread=scale * total, spread_upper=scale * total * upper_factor,
                             within=scale * within, between=scale * math.sqrt(between_variance),
                             spread_at_budget=scale * at_budget, mde_at_budget=mde,
                             suggested_repeats=suggested))

    warnings = []
    if df < 5:
        warnings.append(f"the spread rests on {df} degrees of freedom ({len(used)} runs): it may "
                        f"be {upper_factor:.1f}x larger than measured; calibrate with at least "
                        f"6 repeats")
    for name in ("p95", "p99"):
        q = 0.95 if name == "p95" else 0.99
        if verdicts.requests_beyond(requests_per_run, q) < options.min_tail_requests:
            warnings.append(f"{name} rests on {verdicts.requests_beyond(requests_per_run, q)} "
                            f"requests per run: use at least "
                            f"{math.ceil(options.min_tail_requests / (1 - q)):,} requests")
    return Calibration(source=source, config_ids=tuple(groups), runs=len(used),
                       requests_per_run=requests_per_run, degrees_of_freedom=df,
                       repeats=repeats, requests=requests,
                       target_effect_percent=target_effect_percent, rows=tuple(rows),
                       aa_check=aa_check(groups, options), warnings=tuple(warnings))


def suggest_repeats(spread_percent: float, target_effect_percent: float,
                    options: verdicts.VerdictOptions) -> int | None:
    """Fewest runs per configuration whose minimum detectable effect reaches the target."""
    for repeats in range(2, MAX_SUGGESTED_REPEATS + 1):
        mde = verdicts.minimum_detectable_effect(spread_percent, repeats, repeats,
                                                 options.confidence, options.power)
        if mde is not None and mde <= target_effect_percent:
            return repeats
    return None


def aa_check(groups: dict[str, list[verdicts.Run]],
             options: verdicts.VerdictOptions) -> verdicts.Comparison | None:
    """The verdict machinery on odd against even repeats of the best-repeated configuration.

    Both halves measure the same thing, so anything but "no difference" is a false alarm
    (expected in about 5 % of statistics) or a sign of drift along the run order.
    """
    config_id, group = max(groups.items(), key=lambda item: len(item[1]))
    if len(group) < 4:
        return None
    ordered = sorted(group, key=lambda run: run.repeat)
    return verdicts.compare_runs(ordered[0::2], ordered[1::2], options=options,
                                 label=f"A/A {config_id}: even vs odd repeats",
                                 baseline_name="odd repeats", candidate_name="even repeats")


def calibrate_run_dir(run_dir: Path, **kwargs) -> Calibration:
    """calibrate() on a saved result directory."""
    return calibrate(verdicts.load_runs(run_dir), source=str(run_dir), **kwargs)


def render_text(calibration: Calibration) -> str:
    """The noise floor as a plain-text table, with the budget and warnings."""
    lines = [
        (f"A/A noise floor of {calibration.source or 'the runs'}: {calibration.runs} runs of "
        f"{', '.join(calibration.config_ids)}, median {calibration.requests_per_run} successful "
        f"requests per run ({calibration.degrees_of_freedom} degrees of freedom)"),
        (f"budget evaluated: {calibration.repeats} repeats per configuration of "
        f"{calibration.requests} requests; target effect {calibration.target_effect_percent:g} %"),
        "",
        (f"{'statistic':12} {'mean':>10} {'run CV':>8} {'95% up':>8} {'within':>8} {'drift':>8} "
        f"{'MDE':>8} {'repeats':>8}"),
    ]
    for row in calibration.rows:
        mean = (f"{row.mean:.2f} %" if row.unit == "pp" else f"{row.mean / 1000:.3f} s")
        spread = [f"{value:.1f} {row.unit}" for value in
                  (row.spread, row.spread_upper, row.within, row.between)]
        mde = "–" if row.mde_at_budget is None else f"±{row.mde_at_budget:.1f} {row.unit}"
        if row.unit == "pp":
            repeats = "–"
        else:
            repeats = (f">{MAX_SUGGESTED_REPEATS}" if row.suggested_repeats is None
                       else str(row.suggested_repeats))
        lines.append(f"{verdicts.statistic_title(row.statistic):12} {mean:>10} "
                     + " ".join(f"{value:>8}" for value in spread) + f" {mde:>8} {repeats:>8}")
    lines += ["", ("run CV: run-to-run spread (shares: standard deviation in points); 95% up: its "
              "upper bound; within: part from sampling requests; drift: the rest; MDE: smallest "
              "change detectable at the budget; repeats: per configuration for the target effect")]
    if calibration.aa_check is not None:
        lines += ["", "A/A check (must find no difference):"]
        lines += [f"  {verdict.text}" for verdict in calibration.aa_check.verdicts
                  if not verdicts.is_share(verdict.statistic)]
        lines += [f"  WARNING: {warning.problem}; {warning.advice}"
                  for warning in calibration.aa_check.warnings]
    for warning in calibration.warnings:
        lines.append(f"WARNING: {warning}")
    return "\n".join(lines)
