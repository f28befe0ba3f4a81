"""Verdicts: whether a latency difference between configurations is real, how large, how sure.

Requests inside one run share the proxy's state, the machine's load and each other's queue,
so they are not independent samples; the run (one matrix cell) is the unit of comparison.
Each run is reduced to its statistics (avg, p50, p95, p99 and the share of requests above
each threshold, computed exactly as in proxylab.stats), and two configurations are compared
over those per-run values:

- the effect: the relative change of a latency statistic's mean over runs (candidate /
  baseline - 1, in %), or the difference of a share's mean in percentage points (a share
  can be zero in the baseline, where a ratio is undefined);
- a bootstrap confidence interval that resamples runs within each configuration. Over few
  runs a plain percentile interval is too narrow (about 84 % coverage at 3 runs), so with
  at least 4 runs per side it is Hesterberg's expanded percentile interval, widened for the
  smaller side's size. Below 4 runs a percentile interval cannot reach beyond the runs' own
  range, so the bootstrap standard error of the log ratio is used with a t quantile on
  m + k - 2 degrees of freedom instead. With one run per configuration the interval falls
  back to resampling circular blocks of send-ordered requests within the runs (block length
  by Politis-White), which keeps a run's own correlation but cannot see run-to-run
  variation, and every verdict says so;
- a Mann-Whitney U rank test over the runs as a second opinion, with a note when there are
  too few runs for it to ever reach significance;
- the minimum detectable effect at this budget, from the run-to-run spread;
- Holm's step-down correction for the call "significant", within two families per
  comparison (the latency statistics; the shares above each threshold): each statistic gets a p-value from its bootstrap standard error, on the
  interval's own scale and degrees of freedom, and is called significant only when its
  interval excludes zero and its Holm-adjusted p is below the level. Intervals stay at the
  nominal level (the bootstrap cannot resolve the tails a per-statistic widening would
  need); a statistic whose interval alone excludes zero is reported as unconfirmed.

A practical floor (5 % by default) separates real differences from ones too small to care
about. Every random draw comes from a numpy Generator seeded from the options' seed and the
comparison's label, so the same data always gives the same verdict.

Measured behaviour (tests/test_verdicts.py, 200 seeded trials of 6 runs per configuration,
2,000 log-normal requests per run, 3 % run-to-run drift): identical configurations get
"no difference" for avg/p50/p95/p99 in 100/100/99.5/99.5 % of trials, and the intervals alone
exclude zero in 2-3.5 %; a 10 % slowdown is called significant in 94.5/94/88.5/72.5 % of trials
(without the correction: 99/99/97/80 %; documented power for p95: at least 85 %); intervals
cover the true change in 94.5-98 % of trials. With 3 runs per side the power for p95 falls
to about 34 % (100 seeded trials): budget more runs for effects near 10 %.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from arch.bootstrap import CircularBlockBootstrap, optimal_block_length
from scipy import stats as scipy_stats

from proxylab import results, stats
from proxylab.errors import LabError
from proxylab.rawlog import read_raw

logger = logging.getLogger(__name__)

LATENCY_STATISTICS: tuple[str, ...] = ("avg_ms", "p50_ms", "p95_ms", "p99_ms")
QUANTILES: dict[str, float] = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}
SPLITS = ("all", "first_request", "later_requests")

OUTCOME_SIGNIFICANT = "significant"
OUTCOME_BELOW_FLOOR = "below_floor"
OUTCOME_EQUIVALENT = "equivalent"
OUTCOME_UNDETECTABLE = "undetectable"
OUTCOME_UNCONFIRMED = "unconfirmed"  # the interval excludes zero, Holm's correction does not
OUTCOME_UNDEFINED = "undefined"

METHOD_RUNS = "runs"
METHOD_REQUESTS = "requests"

# Runs sharing proxy processes: from this many distinct starts on, their spread is trusted.
MIN_PROXY_STARTS = 4

# Below this many runs on the smaller side, intervals use the bootstrap standard error.
MIN_RUNS_FOR_PERCENTILE = 4

# Bounds the memory of one request-bootstrap chunk (values, not bytes).
_CHUNK_VALUES = 4_000_000


def share_statistic(threshold_s: float) -> str:
    """Name of the statistic "percent of successful requests above threshold_s seconds"."""
    return f"above_{threshold_s:g}s_percent"


def is_share(statistic: str) -> bool:
    return statistic.startswith("above_")


def statistic_title(statistic: str) -> str:
    """Short human name: `p95`, `avg`, `above 2 s`."""
    if is_share(statistic):
        return f"above {statistic.removeprefix('above_').removesuffix('s_percent')} s"
    return statistic.removesuffix("_ms")


@dataclass(frozen=True)
class VerdictOptions:
    """Every knob of the verdict machinery, with the defaults the reports use.

    ``floor_percent`` is the practical floor for latency statistics (relative change) and
    ``share_floor_pp`` the one for shares (percentage points): smaller real differences are
    called noise. ``seed`` makes every bootstrap reproducible.
    """

    confidence: float = 0.95
    power: float = 0.80
    floor_percent: float = 5.0
    share_floor_pp: float = 0.5
    bootstrap_samples: int = 4000  # over runs: cheap, and enough for the expanded tails
    request_bootstrap_samples: int = 1000  # over requests: each sample re-sorts a whole run
    seed: int = 4
    split: str = "all"  # which requests of each run: all, first_request, later_requests
    thresholds_s: tuple[float, ...] = stats.DEFAULT_THRESHOLDS_S
    primary_statistic: str = "p95_ms"
    cv_warn_percent: float = 10.0
    generator_cpu_warn_percent: float = 80.0
    min_tail_requests: int = 10

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must lie between 0.5 and 1, got {self.confidence}")
        if not 0 < self.power < 1:
            raise ValueError(f"power must lie between 0 and 1, got {self.power}")
        if self.floor_percent < 0 or self.share_floor_pp < 0:
            raise ValueError("practical floors cannot be negative")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    @property
    def statistics(self) -> tuple[str, ...]:
        return LATENCY_STATISTICS + tuple(share_statistic(t) for t in self.thresholds_s)

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


@dataclass(frozen=True, eq=False)
class Run:
    """One run (matrix cell): where it came from and its raw per-request rows."""

    cell_id: str
    config_id: str
    config: dict
    repeat: int
    frame: pd.DataFrame  # rawlog.RAW_COLUMNS, in the order the rows were written
    generator_cpu_percent: float | None = None
    source: str = ""  # the result directory's name
    proxy_start: int | None = None  # which proxy process of its run served it (None: unknown)
    # Latencies per split, filtered once: verdicts ask for them many times.
    _latency_cache: dict = field(default_factory=dict, repr=False)

    def rows(self, split: str = "all") -> pd.DataFrame:
        """The rows of one split: all requests, each user's first one, or the later ones."""
        if split == "first_request":
            return self.frame[self.frame["request_index"] == 1]
        if split == "later_requests":
            return self.frame[self.frame["request_index"] != 1]
        return self.frame

    def latency_ms(self, split: str = "all") -> npt.NDArray[np.float64]:
        """Latencies of the successful requests of a split, in the table's order (read-only)."""
        if split not in self._latency_cache:
            rows = self.rows(split)
            values = rows.loc[rows["ok"] == 1, "latency_ms"].to_numpy(dtype=np.float64, copy=True)
            values.flags.writeable = False
            self._latency_cache[split] = values
        return self._latency_cache[split]

    def failed(self, split: str = "all") -> int:
        return int((self.rows(split)["ok"] != 1).sum())


@dataclass(frozen=True)
class StabilityWarning:
    """A reason a figure may be unreliable, and what to do about it."""

    subject: str  # the configuration, run or comparison it concerns
    problem: str
    advice: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}; {self.advice}"


@dataclass(frozen=True)
class StatisticVerdict:
    """One statistic compared between two configurations.

    ``effect`` and the interval are in % (relative change) for latency statistics and in
    percentage points for shares (``unit`` says which). ``rank_p`` is None when the rank
    test could not be run; ``rank_min_p`` is the smallest p it could give at these sizes.
    ``p`` comes from the bootstrap standard error, ``holm_p`` is it adjusted by Holm's
    method over the ``family_size`` statistics of the comparison (None without an interval).
    """

    statistic: str
    unit: str  # "%" or "pp"
    baseline_mean: float
    candidate_mean: float
    effect: float
    ci_low: float
    ci_high: float
    mde: float | None
    rank_p: float | None
    rank_min_p: float | None
    method: str
    outcome: str
    text: str
    p: float | None = None
    holm_p: float | None = None
    family_size: int = 1

    @property
    def significant(self) -> bool:
        return self.outcome == OUTCOME_SIGNIFICANT


@dataclass(frozen=True)
class Comparison:
    """Every statistic of a candidate configuration against its baseline."""

    label: str
    baseline: str
    candidate: str
    baseline_runs: int
    candidate_runs: int
    method: str
    verdicts: tuple[StatisticVerdict, ...]
    warnings: tuple[StabilityWarning, ...]
    axis: str | None = None
    quiet_shares: tuple[str, ...] = ()  # shares zero in every run of both: nothing to judge

    def verdict(self, statistic: str) -> StatisticVerdict | None:
        return next((v for v in self.verdicts if v.statistic == statistic), None)

    def headline(self, statistic: str = "p95_ms") -> str:
        """One line: the label and the verdict on the primary statistic."""
        verdict = self.verdict(statistic) or (self.verdicts[0] if self.verdicts else None)
        if verdict is None:
            return f"{self.label}: nothing to compare"
        return f"{self.label}: {verdict.text}"

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["warnings"] = [str(warning) for warning in self.warnings]
        return document


@dataclass(frozen=True)
class GroupSummary:
    """Per-run values of each statistic in one group of runs (a configuration), and spread."""

    label: str
    runs: int
    requests_per_run: int  # median successful requests per run
    values: dict[str, tuple[float, ...]]
    mean: dict[str, float]
    sd: dict[str, float | None]  # None with one run
    cv_percent: dict[str, float | None]  # None with one run or a zero mean


@dataclass
class Assessment:
    """Everything a report shows about verdicts: groups of runs, their spread, comparisons."""

    groups: dict[str, list[Run]]
    summaries: dict[str, GroupSummary]
    comparisons: list[Comparison]
    warnings: list[StabilityWarning]
    options: VerdictOptions = field(default_factory=VerdictOptions)


# --- loading ------------------------------------------------------------------------------


def load_runs(run_dir: Path, summary: dict | None = None) -> list[Run]:
    """Every finished cell of a result directory with its raw table, in the summary's order."""
    summary = summary if summary is not None else results.load_summary(run_dir)
    runs = []
    for cell in summary.get("cells", []):
        raw_path = run_dir / cell["raw_table"]
        if not raw_path.exists():
            raise LabError(f"{raw_path}: raw table missing; the figures of "
                           f"{cell['cell_id']} cannot be recomputed")
        runs.append(Run(cell_id=cell["cell_id"], config_id=cell["config_id"],
                        config=dict(cell.get("config") or {}), repeat=int(cell.get("repeat", 1)),
                        frame=read_raw(raw_path),
                        generator_cpu_percent=cell.get("generator_cpu_percent"),
                        source=run_dir.name, proxy_start=cell.get("proxy_start")))
    return runs


def group_by_config(runs: Iterable[Run]) -> dict[str, list[Run]]:
    """Runs by config_id, in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config_id, []).append(run)
    return groups


# --- per-run statistics -------------------------------------------------------------------


def statistics_matrix(latency_ms: npt.ArrayLike, statistics: Sequence[str]) -> np.ndarray:
    """Statistics of each row of a (samples, requests) array of successful latencies.

    The same definitions as proxylab.stats (percentiles with method "lower", shares of
    requests strictly above a threshold, in %), vectorised so a bootstrap can compute
    thousands of resamples at once. Returns an array of shape (samples, len(statistics)).
    """
    samples = np.atleast_2d(np.asarray(latency_ms, dtype=np.float64))
    columns = []
    quantile_names = [name for name in statistics if name in QUANTILES]
    quantiles = {}
    if quantile_names and samples.shape[1]:
        values = np.quantile(samples, [QUANTILES[name] for name in quantile_names], axis=1,
                             method=stats.PERCENTILE_METHOD)
        quantiles = dict(zip(quantile_names, values))
    for name in statistics:
        if name == "avg_ms":
            columns.append(samples.mean(axis=1))
        elif name in QUANTILES:
            columns.append(quantiles[name])
        elif is_share(name):
            threshold_ms = float(name.removeprefix("above_").removesuffix("s_percent")) * 1000.0
            columns.append(100.0 * np.count_nonzero(samples > threshold_ms, axis=1)
                           / samples.shape[1])
        else:
            raise ValueError(f"unknown statistic {name!r}")
    return np.column_stack(columns)


def run_values(runs: Sequence[Run], options: VerdictOptions) -> np.ndarray:
    """(runs, statistics) array of each run's statistics on the options' split."""
    return np.vstack([statistics_matrix(run.latency_ms(options.split), options.statistics)
                      for run in runs])


def summarize_group(label: str, runs: Sequence[Run], options: VerdictOptions) -> GroupSummary:
    """Mean, standard deviation and coefficient of variation over runs of every statistic."""
    usable = [run for run in runs if run.latency_ms(options.split).size]
    values = run_values(usable, options) if usable else np.empty((0, len(options.statistics)))
    summary = GroupSummary(label=label, runs=len(usable),
                           requests_per_run=int(np.median([run.latency_ms(options.split).size
                                                           for run in usable])) if usable else 0,
                           values={}, mean={}, sd={}, cv_percent={})
    for column, name in enumerate(options.statistics):
        column_values = values[:, column]
        summary.values[name] = tuple(float(value) for value in column_values)
        mean = float(column_values.mean()) if column_values.size else math.nan
        sd = float(column_values.std(ddof=1)) if column_values.size >= 2 else None
        summary.mean[name] = mean
        summary.sd[name] = sd
        summary.cv_percent[name] = 100.0 * sd / mean if sd is not None and mean > 0 else None
    return summary


# --- within one run -----------------------------------------------------------------------


def percentile_ci(latency_ms: npt.ArrayLike, q: float, confidence: float = 0.95
                  ) -> tuple[float | None, float | None]:
    """Distribution-free interval for the q-quantile of one run, from its order statistics.

    The number of requests at or below the true quantile is Binomial(n, q), so the sorted
    latencies at ranks l and u (1-based) bracket it with probability at least
    ``confidence`` when each binomial tail outside [l, u - 1] holds at most half the rest.
    An end is None when the run has too few requests for it (typical for p99 of short runs).
    """
    ordered = np.sort(np.asarray(latency_ms, dtype=np.float64).reshape(-1))
    n = ordered.size
    if n == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    lower_rank = int(scipy_stats.binom.ppf(tail, n, q))  # P(B <= lower_rank - 1) < tail
    upper_rank = int(scipy_stats.binom.ppf(1.0 - tail, n, q)) + 1  # P(B >= upper_rank) <= tail
    low = float(ordered[lower_rank - 1]) if lower_rank >= 1 else None
    high = float(ordered[upper_rank - 1]) if upper_rank <= n else None
    return low, high


def wilson_interval(count: int, n: int, confidence: float = 0.95
                    ) -> tuple[float | None, float | None]:
    """Wilson score interval for a share count / n, as fractions (0..1).

    Unlike the normal approximation it stays inside [0, 1] and is usable when the count is
    zero, which is the common case for "above 5 s".
    """
    if n <= 0:
        return None, None
    z = float(scipy_stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    share = count / n
    denominator = 1.0 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(share * (1.0 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def requests_beyond(n: int, q: float) -> int:
    """How many of n sorted requests lie above the rank stats uses for the q-quantile."""
    if n <= 0:
        return 0
    return n - 1 - math.floor((n - 1) * q)


# --- between two configurations -----------------------------------------------------------


def interval_degrees_of_freedom(baseline_runs: int, candidate_runs: int) -> int:
    """Degrees of freedom the interval of a comparison over runs behaves as having.

    The expanded percentile interval is sized for the smaller side (n - 1); the standard
    error interval used below MIN_RUNS_FOR_PERCENTILE pools both sides (m + k - 2).
    """
    smaller = min(baseline_runs, candidate_runs)
    if smaller < MIN_RUNS_FOR_PERCENTILE:
        return baseline_runs + candidate_runs - 2
    return smaller - 1


def minimum_detectable_effect(spread: float, baseline_runs: int, candidate_runs: int,
                              confidence: float = 0.95, power: float = 0.80) -> float | None:
    """Smallest true change the comparison finds with the given power, in the spread's unit.

    ``spread`` is the run-to-run coefficient of variation in % (latency statistics) or the
    standard deviation in percentage points (shares). The t quantiles use the degrees of
    freedom of the interval the comparison would use. None below 2 runs per side, where
    the spread over runs is unknown.
    """
    smaller = min(baseline_runs, candidate_runs)
    if smaller < 2 or spread is None or not math.isfinite(spread):
        return None
    df = interval_degrees_of_freedom(baseline_runs, candidate_runs)
    multiplier = (scipy_stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, df)
                  + scipy_stats.t.ppf(power, df))
    return float(multiplier * spread * math.sqrt(1.0 / baseline_runs + 1.0 / candidate_runs))


def rank_test_floor(baseline_runs: int, candidate_runs: int) -> float:
    """Smallest two-sided p an exact Mann-Whitney U test can give at these sizes."""
    if baseline_runs < 1 or candidate_runs < 1:
        return 1.0
    return min(1.0, 2.0 / math.comb(baseline_runs + candidate_runs, baseline_runs))


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values; None (no test) stays None and is not counted.

    The i-th smallest of S p-values is multiplied by S - i + 1, and each adjusted value is
    at least the one before, so "adjusted p <= alpha" keeps the chance of any false alarm
    among the S statistics at alpha, whatever their correlation.
    """
    tested = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


def expanded_tail(smaller_runs: int, confidence: float) -> float:
    """Tail probability of Hesterberg's expanded percentile interval for n runs per group.

    A bootstrap over n values underestimates the spread by a factor sqrt((n - 1) / n) and
    uses normal rather than t tails; widening the percentile to Phi(-sqrt(n / (n - 1)) *
    t(n - 1)) corrects both, so the interval covers about as often as it claims.
    """
    df = smaller_runs - 1
    t = scipy_stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, df)
    return float(scipy_stats.norm.cdf(-math.sqrt(smaller_runs / df) * t))


def _generator(options: VerdictOptions, label: str) -> np.random.Generator:
    """A generator that depends on the seed and the comparison only, not on other work."""
    return np.random.default_rng([options.seed, zlib.crc32(label.encode())])


def _bootstrap_runs(values_b: np.ndarray, values_c: np.ndarray, samples: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Means over runs resampled with replacement within each group: (samples, statistics)."""
    index_b = rng.integers(0, values_b.shape[0], size=(samples, values_b.shape[0]))
    index_c = rng.integers(0, values_c.shape[0], size=(samples, values_c.shape[0]))
    return values_b[index_b].mean(axis=1), values_c[index_c].mean(axis=1)


def send_ordered_latency_ms(run: Run, split: str = "all") -> npt.NDArray[np.float64]:
    """Latencies of a run's successful requests in the order they were sent.

    The raw table is written in completion order; neighbours in send order share the
    proxy's queue, which is the correlation the block resampling below must keep.
    """
    rows = run.rows(split)
    rows = rows[rows["ok"] == 1].sort_values("sent_unix_s", kind="stable")
    return rows["latency_ms"].to_numpy(dtype=np.float64)


def request_block_length(latency_ms: npt.ArrayLike) -> int:
    """Block length for resampling one run's requests: Politis-White's choice, via arch.

    Requests of a run are not independent (queues and stalls span neighbours), so they are
    resampled in blocks long enough to carry that dependence. At least 1, at most n / 4.
    """
    values = np.asarray(latency_ms, dtype=np.float64)
    if values.size < 8 or np.ptp(values) == 0:
        return 1
    chosen = float(optimal_block_length(values)["circular"].iloc[0])
    if not math.isfinite(chosen):
        return 1
    return int(min(max(1, round(chosen)), values.size // 4))


def block_resamples(latency_ms: npt.NDArray[np.float64], count: int,
                    rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``count`` circular-block resamples of one run's send-ordered latencies: (count, n)."""
    block = request_block_length(latency_ms)
    resampler = CircularBlockBootstrap(block, latency_ms, seed=rng)
    index = np.stack([resampler.update_indices() for _ in range(count)])
    return latency_ms[index]


def _bootstrap_requests(runs: Sequence[Run], options: VerdictOptions,
                        rng: np.random.Generator) -> np.ndarray:
    """Means over runs of statistics of block-resampled runs: (samples, statistics).

    Blocks keep neighbouring requests together, so a run's own correlation is in the
    interval; what no resampling of one run can show is how another run would differ.
    """
    samples = options.request_bootstrap_samples
    total = np.zeros((samples, len(options.statistics)))
    for run in runs:
        latency_ms = send_ordered_latency_ms(run, options.split)
        n = latency_ms.size
        rows_per_chunk = max(1, _CHUNK_VALUES // n)
        for start in range(0, samples, rows_per_chunk):
            stop = min(samples, start + rows_per_chunk)
            resampled = block_resamples(latency_ms, stop - start, rng)
            total[start:stop] += statistics_matrix(resampled, options.statistics)
    return total / len(runs)


def _effects(means_b: np.ndarray, means_c: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Relative change in % for latency statistics, difference in points for shares."""
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = 100.0 * (means_c / means_b - 1.0)
    return np.where(shares, means_c - means_b, relative)


def compare_runs(baseline: Sequence[Run], candidate: Sequence[Run], *, label: str,
                 options: VerdictOptions | None = None, baseline_name: str = "baseline",
                 candidate_name: str = "candidate", axis: str | None = None) -> Comparison:
    """Compare every statistic of two groups of runs; the heart of every verdict.

    With at least two runs on each side the runs are resampled; otherwise the requests
    within each run are, and the verdicts say that this is weaker evidence.
    """
    options = options or VerdictOptions()
    warnings: list[StabilityWarning] = []
    baseline = _usable(baseline, baseline_name, options, warnings)
    candidate = _usable(candidate, candidate_name, options, warnings)
    if not baseline or not candidate:
        warnings.append(StabilityWarning(label, "a side has no run with a successful request",
                                         "look at the failures in the raw tables"))
        return Comparison(label=label, baseline=baseline_name, candidate=candidate_name,
                          baseline_runs=len(baseline), candidate_runs=len(candidate),
                          method=METHOD_RUNS, verdicts=(), warnings=tuple(warnings), axis=axis)

    names = options.statistics
    shares = np.array([is_share(name) for name in names])
    values_b = run_values(baseline, options)
    values_c = run_values(candidate, options)
    m, k = values_b.shape[0], values_c.shape[0]
    rng = _generator(options, label)
    if min(m, k) >= 2:
        method = METHOD_RUNS
        means_b, means_c = _bootstrap_runs(values_b, values_c, options.bootstrap_samples, rng)
        tail = (expanded_tail(min(m, k), options.confidence)
                if min(m, k) >= MIN_RUNS_FOR_PERCENTILE else None)
    else:
        method = METHOD_REQUESTS
        means_b = _bootstrap_requests(baseline, options, rng)
        means_c = _bootstrap_requests(candidate, options, rng)
        tail = options.alpha / 2.0
        warnings.append(StabilityWarning(
            label, f"only {m} run(s) of {baseline_name} and {k} of {candidate_name}: intervals "
            "come from resampling blocks of requests within runs, which cannot see run-to-run "
            "variation (weaker evidence)", "repeat each configuration at least 5 times"))
    boot_effects = _effects(means_b, means_c, shares)
    point = _effects(values_b.mean(axis=0), values_c.mean(axis=0), shares)
    min_p = rank_test_floor(m, k)
    if method == METHOD_RUNS and min_p > options.alpha:
        warnings.append(StabilityWarning(
            label, f"with {m}+{k} runs the rank test cannot reach significance (smallest "
            f"possible p = {min_p:.2f})", "use at least 4 runs per configuration"))
    if method == METHOD_RUNS and min(m, k) < MIN_RUNS_FOR_PERCENTILE:
        warnings.append(StabilityWarning(
            label, f"{min(m, k)} runs on the smaller side: the interval rests on a spread "
            "estimated from very few runs", "use at least 5 runs per configuration"))

    if method == METHOD_RUNS:
        for side, runs in ((baseline_name, baseline), (candidate_name, candidate)):
            starts = {(run.source, run.proxy_start) for run in runs if run.proxy_start is not None}
            if starts and len(starts) < min(len(runs), MIN_PROXY_STARTS):
                warnings.append(StabilityWarning(
                    label, f"the {len(runs)} runs of {side} came from {len(starts)} proxy "
                    "start(s): differences between proxy processes are not in the interval",
                    "interleave the repeats (--order abba) so each block starts its own proxy"))
    rank_ps = rank_tests(values_b, values_c)
    judged = [column for column in range(len(names)) if not shares[column]
              or values_b[:, column].any() or values_c[:, column].any()]
    quiet = [name for column, name in enumerate(names) if column not in judged]
    evidence = [_interval_and_p(boot_effects[:, column], point[column], bool(shares[column]),
                                tail, method, m, k, options.confidence) for column in judged]
    # Two families per comparison, each corrected on its own: the latency statistics, and the
    # shares above each threshold (ten strongly correlated tail counts that would otherwise
    # take most of the p95 verdict's power, see the measured figures above).
    holm_ps: list[float | None] = [None] * len(judged)
    family_sizes = [0] * len(judged)
    for family in (False, True):
        members = [index for index, column in enumerate(judged) if bool(shares[column]) == family]
        adjusted = holm_adjust([evidence[index][2] for index in members])
        tested = sum(p is not None for p in adjusted)
        for index, p in zip(members, adjusted):
            holm_ps[index], family_sizes[index] = p, tested
    verdicts = [_judge(names[column], column, values_b, values_c, boot_effects[:, column],
                       point[column], interval, holm_p, family_size, method, rank_ps[column],
                       options, warnings, label)
                for column, interval, holm_p, family_size
                in zip(judged, evidence, holm_ps, family_sizes)]
    return Comparison(label=label, baseline=baseline_name, candidate=candidate_name,
                      baseline_runs=m, candidate_runs=k, method=method, verdicts=tuple(verdicts),
                      warnings=tuple(warnings), axis=axis, quiet_shares=tuple(quiet))


def rank_tests(values_b: np.ndarray, values_c: np.ndarray) -> list[float | None]:
    """Two-sided Mann-Whitney U p of each column (statistic) over runs; None below 2 runs.

    Exact where a side has at most 8 runs and the column has no ties (scipy's own rule),
    asymptotic otherwise; 1 where every run has the same value. Columns are tested in at
    most two vectorised calls, because one call per statistic dominated a verdict's time.
    """
    m, k = values_b.shape[0], values_c.shape[0]
    columns = values_b.shape[1]
    if min(m, k) < 2:
        return [None] * columns
    both = np.vstack([values_b, values_c])
    constant = np.ptp(both, axis=0) == 0
    tied = np.array([np.unique(both[:, column]).size < m + k for column in range(columns)])
    p_values: list[float | None] = [1.0 if flat else None for flat in constant]
    for method, chosen in (("exact", ~constant & ~tied), ("asymptotic", ~constant & tied)):
        if not chosen.any():
            continue
        if method == "exact" and min(m, k) > 8:
            method = "asymptotic"
        result = scipy_stats.mannwhitneyu(values_c[:, chosen], values_b[:, chosen], axis=0,
                                          alternative="two-sided", method=method)
        for column, value in zip(np.flatnonzero(chosen), np.atleast_1d(result.pvalue)):
            p_values[column] = float(value)
    return p_values


def _usable(runs: Sequence[Run], name: str, options: VerdictOptions,
            warnings: list[StabilityWarning]) -> list[Run]:
    """Runs with at least one successful request; the others are left out, with a warning."""
    usable = [run for run in runs if run.latency_ms(options.split).size]
    left_out = [run.cell_id for run in runs if not run.latency_ms(options.split).size]
    if left_out:
        warnings.append(StabilityWarning(name, f"runs without a successful request left out: "
                                               f"{', '.join(left_out)}",
                                         "look at the failures in their raw tables"))
    return usable


def _interval_and_p(boot_effects: np.ndarray, effect: float, share: bool, tail: float | None,
                    method: str, m: int, k: int, confidence: float
                    ) -> tuple[float, float, float | None]:
    """One statistic's interval and its p-value; NaN and None where the effect is undefined."""
    finite = boot_effects[np.isfinite(boot_effects)]
    if not math.isfinite(effect) or finite.size < boot_effects.size * 0.99:
        return math.nan, math.nan, None
    if tail is None:
        low, high = _standard_error_interval(finite, effect, share, m, k, confidence)
    else:
        low, high = (float(value) for value in np.quantile(finite, [tail, 1.0 - tail]))
    return low, high, bootstrap_p_value(finite, effect, share, method, m, k)


def bootstrap_p_value(boot_effects: np.ndarray, effect: float, share: bool, method: str,
                      m: int, k: int) -> float:
    """Two-sided p of "no change" from the bootstrap standard error, scaled like the interval.

    Counting bootstrap effects beyond zero cannot resolve the small p-values Holm's
    correction needs (4,000 resamples stop at 1 / 4,000), so the p-value is the t test the
    intervals approximate: the log ratio (points for shares) over its bootstrap standard
    error, widened by sqrt(n / (n - 1)) and on the interval's degrees of freedom over runs,
    normal over requests.
    """
    centre, spread = _bootstrap_scale(boot_effects, effect, share)
    if not spread > 0:
        return 1.0 if centre == 0 else 0.0
    if method == METHOD_REQUESTS:
        return float(2.0 * scipy_stats.norm.sf(abs(centre) / spread))
    smaller = min(m, k)
    widen = math.sqrt(smaller / (smaller - 1))
    return float(2.0 * scipy_stats.t.sf(abs(centre) / (widen * spread),
                                        interval_degrees_of_freedom(m, k)))


def _judge(name: str, column: int, values_b: np.ndarray, values_c: np.ndarray,
           boot_effects: np.ndarray, effect: float,
           interval: tuple[float, float, float | None], holm_p: float | None, family_size: int,
           method: str, rank_p: float | None, options: VerdictOptions,
           warnings: list[StabilityWarning], label: str) -> StatisticVerdict:
    """The verdict on one statistic, from its interval, Holm-adjusted p and the runs' values."""
    share = is_share(name)
    unit = "pp" if share else "%"
    floor = options.share_floor_pp if share else options.floor_percent
    b, c = values_b[:, column], values_c[:, column]
    m, k = b.size, c.size
    low, high, p = interval
    finite = boot_effects[np.isfinite(boot_effects)]

    if method == METHOD_RUNS:
        spread = _pooled_spread(b, c, relative=not share)
        mde = minimum_detectable_effect(spread, m, k, options.confidence, options.power)
    else:
        z = (scipy_stats.norm.ppf(1.0 - options.alpha / 2.0) + scipy_stats.norm.ppf(options.power))
        mde = float(z * finite.std(ddof=1)) if finite.size > 1 else None

    min_p = rank_test_floor(m, k)

    excludes_zero = low > 0 or high < 0
    confirmed = excludes_zero and holm_p is not None and holm_p <= options.alpha
    if not math.isfinite(low):
        outcome = OUTCOME_UNDEFINED
    elif confirmed and abs(effect) >= floor:
        outcome = OUTCOME_SIGNIFICANT
    elif confirmed:
        outcome = OUTCOME_BELOW_FLOOR
    elif -floor < low and high < floor:
        outcome = OUTCOME_EQUIVALENT
    elif excludes_zero:
        outcome = OUTCOME_UNCONFIRMED
    else:
        outcome = OUTCOME_UNDETECTABLE

    if (outcome == OUTCOME_SIGNIFICANT and rank_p is not None and min_p <= options.alpha
            and rank_p >= options.alpha):
        warnings.append(StabilityWarning(
            label, f"{statistic_title(name)}: the interval excludes zero but the rank test over "
            f"runs does not confirm it (p = {rank_p:.2f})", "treat it as tentative; add repeats"))

    text = _verdict_text(name, float(b.mean()), float(c.mean()), effect, low, high, mde, rank_p,
                         min_p, method, outcome, floor, holm_p, family_size, options)
    return StatisticVerdict(statistic=name, unit=unit, baseline_mean=float(b.mean()),
                            candidate_mean=float(c.mean()), effect=float(effect), ci_low=low,
                            ci_high=high, mde=mde, rank_p=rank_p, rank_min_p=min_p,
                            method=method, outcome=outcome, text=text, p=p, holm_p=holm_p,
                            family_size=family_size)


def _standard_error_interval(boot_effects: np.ndarray, effect: float, share: bool, m: int,
                             k: int, confidence: float) -> tuple[float, float]:
    """Effect ± t * bootstrap standard error, on the log ratio for latency statistics.

    The standard error is widened by sqrt(n / (n - 1)) for the smaller side n, because a
    bootstrap over n values shrinks the spread by that factor.
    """
    smaller = min(m, k)
    t = scipy_stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, m + k - 2)
    widen = math.sqrt(smaller / (smaller - 1))
    centre, spread = _bootstrap_scale(boot_effects, effect, share)
    half = t * widen * spread
    if share:
        return effect - half, effect + half
    return 100.0 * math.expm1(centre - half), 100.0 * math.expm1(centre + half)


def _bootstrap_scale(boot_effects: np.ndarray, effect: float, share: bool
                     ) -> tuple[float, float]:
    """The effect and its bootstrap standard error on the scale intervals are built on.

    Shares: points as they are. Latency statistics: the log of the ratio, on which a
    change and its inverse are symmetric.
    """
    if share:
        return effect, float(boot_effects.std(ddof=1))
    logs = np.log1p(boot_effects / 100.0)
    return math.log1p(effect / 100.0), float(logs[np.isfinite(logs)].std(ddof=1))


def _pooled_spread(b: np.ndarray, c: np.ndarray, *, relative: bool) -> float:
    """Run-to-run spread pooled over both groups: CV in % or standard deviation in points."""
    parts, df = 0.0, 0
    for values in (b, c):
        if values.size < 2:
            continue
        variance = float(values.var(ddof=1))
        if relative:
            mean = float(values.mean())
            if mean <= 0:
                continue
            variance /= mean * mean
        parts += (values.size - 1) * variance
        df += values.size - 1
    if df == 0:
        return math.nan
    spread = math.sqrt(parts / df)
    return 100.0 * spread if relative else spread


def format_effect(value: float, unit: str) -> str:
    """`+42 %`, `-3.1 %`, `+0.8 pp`: signed, rounded to what the evidence supports."""
    if not math.isfinite(value):
        return "n/a"
    if unit == "%":
        digits = 0 if abs(value) >= 10 else 1
    else:
        digits = 1 if abs(value) >= 1 else 2  # shares of slow requests are often tiny
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        text = f"±{text[1:]}"  # neither "+0.0" nor "-0.0" claims a direction
    return f"{text}{' %' if unit == '%' else ' pp'}"


def format_value(statistic: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.2f} %" if is_share(statistic) else f"{value / 1000:.3f} s"


def format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _verdict_text(name: str, mean_b: float, mean_c: float, effect: float, low: float,
                  high: float, mde: float | None, rank_p: float | None, min_p: float,
                  method: str, outcome: str, floor: float, holm_p: float | None,
                  family_size: int, options: VerdictOptions) -> str:
    """The plain-words verdict on one statistic."""
    unit = "pp" if is_share(name) else "%"
    level = f"{100 * options.confidence:g} %"
    head = (f"{statistic_title(name)} {format_value(name, mean_b)} → "
            f"{format_value(name, mean_c)}: {format_effect(effect, unit)}")
    if math.isfinite(low):
        head += (f" ({level} CI {format_effect(low, unit).removesuffix(' ' + unit)}"
                 f" … {format_effect(high, unit)})")
    floor_text = f"{floor:g} %" if unit == "%" else f"{floor:g} pp"
    mde_text = "unknown" if mde is None else f"±{abs(mde):.{0 if abs(mde) >= 10 else 1}f} {unit}"
    holm_text = "" if holm_p is None else f"Holm p {format_p(holm_p)}"
    phrases = {
        OUTCOME_SIGNIFICANT: f"significant ({holm_text})",
        OUTCOME_BELOW_FLOOR: (
            f"real but under the {floor_text} practical floor: called noise"
            if -floor < low and high < floor else
            # The estimate is under the floor, the interval is not: too early to call it noise.
            f"real, estimated under the {floor_text} practical floor, but the interval reaches "
            f"past it: not called noise; add repeats to tell"),
        OUTCOME_EQUIVALENT: f"no difference: the interval lies within the ±{floor_text} floor",
        OUTCOME_UNDETECTABLE: ("no difference detectable; smallest detectable change at this "
                               f"budget: {mde_text}"),
        OUTCOME_UNDEFINED: "not comparable (the baseline is zero)",
        OUTCOME_UNCONFIRMED: (f"not significant: the interval excludes zero, but not once "
                              f"corrected for the {family_size} statistics compared "
                              f"({holm_text})"),
    }
    text = f"{head}, {phrases[outcome]}"
    if method == METHOD_REQUESTS:
        text += " [weaker evidence: a single run, blocks of requests resampled]"
    elif rank_p is not None:
        text += f"; rank test over runs p = {rank_p:.3f}"
        if min_p > options.alpha:
            text += f" (cannot go below {min_p:.2f} with these runs)"
    return text


# --- which comparisons a matrix holds -----------------------------------------------------


@dataclass(frozen=True)
class PlannedComparison:
    """Two configurations that differ on one axis only."""

    axis: str
    baseline: str  # config_id
    candidate: str  # config_id
    label: str


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _value_label(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _reference_value(values: list[Any]) -> Any:
    """The baseline of an axis: off for switches, the smallest number, else the first seen."""
    if all(isinstance(value, bool) for value in values):
        return False if False in values else values[0]
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return min(values)
    return values[0]


def plan_comparisons(configs: dict[str, dict]) -> list[PlannedComparison]:
    """Pairs of configurations that differ on exactly one varying axis, for every axis.

    Works on any config dicts: an axis is a key with more than one value across the
    configurations. Within each set of configurations that agree on every other key, each
    value of the axis is compared with the reference value (off, the smallest number, or
    the first seen). When no key tells configurations apart, each config_id is compared
    with the first one.
    """
    identifiers = list(configs)
    if len(identifiers) < 2:
        return []
    keys = sorted({key for config in configs.values() for key in config})
    distinct = {key: {_key(config.get(key)) for config in configs.values()} for key in keys}
    axes = [key for key in keys if len(distinct[key]) > 1]
    signatures = {cid: tuple(_key(configs[cid].get(key)) for key in axes) for cid in identifiers}
    if not axes or len(set(signatures.values())) < len(identifiers):
        first = identifiers[0]
        return [PlannedComparison("config_id", first, other, f"{other} vs {first}")
                for other in identifiers[1:]]

    planned = []
    for axis in axes:
        others = [key for key in axes if key != axis]
        groups: dict[tuple, list[str]] = {}
        for cid in identifiers:
            groups.setdefault(tuple(_key(configs[cid].get(key)) for key in others), []).append(cid)
        for members in groups.values():
            if len(members) < 2:
                continue
            values = [configs[cid].get(axis) for cid in members]
            reference = _reference_value(values)
            baseline = members[values.index(reference)]
            # Keys a configuration does not record (None: an imported log that does not say)
            # would read "key_mode None": they are left out of the label.
            context = ", ".join(f"{key} {_value_label(configs[baseline].get(key))}"
                                for key in others if configs[baseline].get(key) is not None)
            for cid in members:
                if cid == baseline:
                    continue
                label = (f"{axis} {_value_label(configs[cid].get(axis))} vs "
                         f"{_value_label(reference)}")
                planned.append(PlannedComparison(axis, baseline, cid,
                                                 f"{label} ({context})" if context else label))
    return planned


# --- whole result directories -------------------------------------------------------------


def group_warnings(label: str, runs: Sequence[Run], summary: GroupSummary,
                   options: VerdictOptions) -> list[StabilityWarning]:
    """Warnings about one configuration's runs: tails, spread, generator CPU, failures."""
    warnings = []
    sizes = [run.latency_ms(options.split).size for run in runs]
    for name, q in (("p95", 0.95), ("p99", 0.99)):
        beyond = min((requests_beyond(n, q) for n in sizes if n), default=None)
        if beyond is not None and beyond < options.min_tail_requests:
            needed = math.ceil(options.min_tail_requests / (1.0 - q))
            warnings.append(StabilityWarning(
                label, f"{name} rests on only {beyond} request(s) beyond it in the shortest run "
                f"({min(sizes)} successful requests)",
                f"run at least {needed:,} requests per cell for a {name} worth comparing"))
    for name in LATENCY_STATISTICS:
        cv = summary.cv_percent.get(name)
        if cv is not None and cv > options.cv_warn_percent:
            warnings.append(StabilityWarning(
                label, f"{statistic_title(name)} varies by CV {cv:.0f} % over {summary.runs} runs",
                "look at latency over time for spikes, keep the machine otherwise idle, "
                "and add repeats"))
    busy = [run for run in runs if run.generator_cpu_percent is not None
            and run.generator_cpu_percent > options.generator_cpu_warn_percent]
    if busy:
        worst = max(run.generator_cpu_percent for run in busy)
        warnings.append(StabilityWarning(
            label, f"load generator CPU above {options.generator_cpu_warn_percent:.0f} % in "
            f"{len(busy)} of {len(runs)} runs (up to {worst:.0f} %): latency may include the "
            "generator's own queueing", "use fewer simulated users or more generator processes"))
    failed = sum(run.failed(options.split) for run in runs)
    if failed:
        total = sum(len(run.rows(options.split)) for run in runs)
        warnings.append(StabilityWarning(
            label, f"{failed} of {total} requests failed; latency figures cover successful "
                   "requests only", "read the error column of the raw tables"))
    return warnings


def assess(groups: dict[str, list[Run]], planned: Sequence[PlannedComparison],
           options: VerdictOptions | None = None) -> Assessment:
    """Summaries, warnings and verdicts for groups of runs and the comparisons planned."""
    options = options or VerdictOptions()
    summaries = {label: summarize_group(label, runs, options) for label, runs in groups.items()}
    warnings = [warning for label, runs in groups.items()
                for warning in group_warnings(label, runs, summaries[label], options)]
    comparisons = []
    for plan in planned:
        comparison = compare_runs(groups[plan.baseline], groups[plan.candidate], label=plan.label,
                                  options=options, baseline_name=plan.baseline,
                                  candidate_name=plan.candidate, axis=plan.axis)
        related = tuple(w for w in warnings if w.subject in (plan.baseline, plan.candidate))
        comparisons.append(replace(comparison, warnings=comparison.warnings + related))
        logger.debug("verdict %s", comparisons[-1].headline(options.primary_statistic))
    logger.debug("verdicts: %d comparisons of %d groups of runs", len(comparisons), len(groups))
    return Assessment(groups=dict(groups), summaries=summaries, comparisons=comparisons,
                      warnings=warnings, options=options)


def assess_run_dir(run_dir: Path, summary: dict | None = None,
                   options: VerdictOptions | None = None) -> Assessment:
    """Verdicts for every axis of one result directory's matrix, from saved results only."""
    runs = load_runs(run_dir, summary)
    groups = group_by_config(runs)
    configs = {cid: group[0].config for cid, group in groups.items()}
    return assess(groups, plan_comparisons(configs), options)


# --- report.md section --------------------------------------------------------------------


def _seconds_or_share(statistic: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if is_share(statistic) else f"{value / 1000:.3f}"


def markdown_section(assessment: Assessment) -> list[str]:
    """Markdown lines: verdicts per comparison, spread over runs, within-run intervals."""
    options = assessment.options
    level = f"{100 * options.confidence:g} %"
    lines = ["## Verdicts", "",
             (f"Runs are the unit of comparison. Effects are changes of each statistic's mean over "
             f"runs: relative (%) for latencies, in percentage points (pp) for shares. Intervals: "
             f"{level} bootstrap over runs (expanded percentile from "
             f"{MIN_RUNS_FOR_PERCENTILE} runs per side, bootstrap standard error and t below), "
             f"or over blocks of neighbouring requests when a configuration has a single run "
             f"(weaker evidence); they are not adjusted for multiplicity. Significant: the "
             f"interval excludes zero and Holm's correction (within the latency statistics, "
             f"and within the shares, of each comparison) keeps it below {100 * options.alpha:g} % (p-values from the bootstrap "
             f"standard error). Rank test: Mann-Whitney U over runs. Practical "
             f"floor ±{options.floor_percent:g} % (shares ±{options.share_floor_pp:g} pp); seed "
             f"{options.seed}."), ""]
    if not assessment.comparisons:
        lines += ["No two configurations to compare.", ""]
    for comparison in assessment.comparisons:
        lines += [f"### {comparison.label}", "",
                  (f"`{comparison.candidate}` ({_runs(comparison.candidate_runs)}) against "
                  f"`{comparison.baseline}` ({_runs(comparison.baseline_runs)})."), ""]
        for verdict in comparison.verdicts:
            marker = "**" if verdict.significant else ""
            lines.append(f"- {marker}{verdict.text}{marker}")
        if comparison.quiet_shares:
            lines.append(f"- no request above "
                         f"{', '.join(statistic_title(s)[6:] for s in comparison.quiet_shares)} "
                         f"in any run of either")
        if comparison.warnings:
            lines += ["", "Warnings:", ""]
            lines += [f"- {warning}" for warning in comparison.warnings]
        lines.append("")
    lines += ["### Spread over runs", "", *_spread_table(assessment), "",
              "### Within-run intervals", "",
              (f"{level} intervals of each run: percentiles from order statistics (– where the "
              f"run has too few requests for that end), the share above each threshold by "
              f"Wilson's method (the first threshold always, the others where a run has a "
              f"request above them)."),
              "",
              *_interval_table(assessment), ""]
    return lines


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _spread_table(assessment: Assessment) -> list[str]:
    header = ["configuration", "runs", "requests/run"] + [
        f"{statistic_title(name)} s (CV)" for name in LATENCY_STATISTICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, summary in assessment.summaries.items():
        cells = [f"`{label}`", str(summary.runs), str(summary.requests_per_run)]
        for name in LATENCY_STATISTICS:
            cv = summary.cv_percent.get(name)
            cells.append(f"{_seconds_or_share(name, summary.mean.get(name))}"
                         f"{'' if cv is None else f' ({cv:.1f} %)'}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_intervals(run: Run, options: VerdictOptions) -> dict[str, Any]:
    """One run's percentiles and its share above each threshold, with their intervals.

    ``shares`` holds (threshold s, count, requests, low, high) per threshold, in order.
    """
    latency_ms = run.latency_ms(options.split)
    figures: dict[str, Any] = {"cell_id": run.cell_id, "requests": int(latency_ms.size)}
    if latency_ms.size:
        values = statistics_matrix(latency_ms, list(QUANTILES))[0]
        for (name, q), value in zip(QUANTILES.items(), values):
            figures[name] = (float(value), *percentile_ci(latency_ms, q, options.confidence))
    figures["shares"] = []
    for threshold_s in options.thresholds_s or (1,):
        count = int(np.count_nonzero(latency_ms > threshold_s * 1000.0))
        low, high = wilson_interval(count, int(latency_ms.size), options.confidence)
        figures["shares"].append((threshold_s, count, int(latency_ms.size), low, high))
    return figures


def _interval_table(assessment: Assessment) -> list[str]:
    options = assessment.options
    rows = [run_intervals(run, options) for runs in assessment.groups.values() for run in runs]
    # The first threshold always; the others only where some run has a request above them,
    # so ten columns of "0.00" do not bury the ones that say something.
    thresholds_s = options.thresholds_s or (1,)
    shown = [index for index in range(len(thresholds_s))
             if index == 0 or any(figures["shares"][index][1] for figures in rows)]
    header = ["cell", "requests"] + [f"{statistic_title(name)} s [CI]" for name in QUANTILES] + [
        f">{thresholds_s[index]:g}s % [CI]" for index in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for figures in rows:
        cells = [f"`{figures['cell_id']}`", str(figures["requests"])]
        for name in QUANTILES:
            if name not in figures:
                cells.append("–")
                continue
            value, low, high = figures[name]
            cells.append(f"{value / 1000:.3f} [{_seconds_or_share(name, low)} … "
                         f"{_seconds_or_share(name, high)}]")
        for index in shown:
            _, count, n, low, high = figures["shares"][index]
            cells.append("–" if not n else f"{100 * count / n:.2f} [{100 * low:.2f} … "
                                           f"{100 * high:.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    return lines
