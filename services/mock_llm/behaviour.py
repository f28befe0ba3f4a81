"""What one request gets from the mock: its latency, and whether it fails, drawn per request.

A `LatencyDistribution` is parsed from a short spec (milliseconds):

    fixed:MS                   always MS
    uniform:LOW:HIGH           uniform between LOW and HIGH
    normal:MEAN:SD             normal, clipped at 0
    lognormal:MEDIAN:SIGMA     log-normal with that median; SIGMA is the log's standard
                               deviation (0.5: p95 about 2.3 x the median)
    replay:PATH                drawn from the latencies in a file: one number a line, or a CSV
                               with a `latency_ms` column (a proxylab raw table: only rows with
                               ok=1 when it has that column)

`Behaviour.draw` decides a request with one random number for the outcome (429, 500,
timeout or a normal answer, by share) and one or two for the latency (spikes multiply it).
Nothing here sleeps: app.py does, so the timing stays in one place.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path

OK = "ok"
RATE_LIMITED = "429"
SERVER_ERROR = "500"
TIMEOUT = "timeout"

DISTRIBUTIONS = ("fixed", "uniform", "normal", "lognormal", "replay")


@dataclass(frozen=True)
class LatencyDistribution:
    """A per-request latency in milliseconds; `spec` is what it was parsed from."""

    kind: str
    parameters: tuple[float, ...] = ()
    samples_ms: tuple[float, ...] = ()
    spec: str = "fixed:0"

    def sample_ms(self, rng: random.Random) -> float:
        kind, values = self.kind, self.parameters
        if kind == "fixed":
            return values[0]
        if kind == "uniform":
            return rng.uniform(values[0], values[1])
        if kind == "normal":
            return max(0.0, rng.gauss(values[0], values[1]))
        if kind == "lognormal":
            return rng.lognormvariate(math.log(values[0]), values[1]) if values[0] > 0 else 0.0
        return rng.choice(self.samples_ms)

    def mean_ms(self) -> float:
        """The distribution's mean (before clipping, for `normal`), for logs and docs."""
        kind, values = self.kind, self.parameters
        if kind == "fixed":
            return values[0]
        if kind == "uniform":
            return (values[0] + values[1]) / 2
        if kind == "normal":
            return values[0]
        if kind == "lognormal":
            return values[0] * math.exp(values[1] ** 2 / 2)
        return sum(self.samples_ms) / len(self.samples_ms)

    def __str__(self) -> str:
        return self.spec


def fixed(latency_ms: float) -> LatencyDistribution:
    return LatencyDistribution("fixed", (latency_ms,), spec=f"fixed:{latency_ms:g}")


def parse_distribution(raw: str) -> LatencyDistribution:
    """Parse a distribution spec; raise ValueError with a reason on anything else."""
    kind, _, rest = raw.strip().partition(":")
    if kind == "replay":
        return _replay(rest)
    arity = {"fixed": 1, "uniform": 2, "normal": 2, "lognormal": 2}
    if kind not in arity:
        raise ValueError(f"unknown distribution {kind!r}")
    parts = rest.split(":") if rest else []
    if len(parts) != arity[kind]:
        raise ValueError(f"{kind} takes {arity[kind]} number(s)")
    values = tuple(float(part) for part in parts)
    if any(not math.isfinite(value) or value < 0 for value in values):
        raise ValueError("numbers must be finite and >= 0")
    if kind == "uniform" and values[0] > values[1]:
        raise ValueError("uniform needs LOW <= HIGH")
    return LatencyDistribution(kind, values, spec=raw.strip())


def _replay(path_text: str) -> LatencyDistribution:
    path = Path(path_text)
    if not path_text or not path.is_file():
        raise ValueError(f"no such file {path_text!r}")
    text = path.read_text(encoding="utf-8", errors="replace")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if "latency_ms" in first.split(","):
        rows = csv.DictReader(text.splitlines())
        samples = [float(row["latency_ms"]) for row in rows
                   if row.get("latency_ms") and row.get("ok", "1") == "1"]
    else:
        samples = [float(line.split("#")[0]) for line in text.splitlines()
                   if line.split("#")[0].strip()]
    if not samples:
        raise ValueError(f"{path_text} holds no latencies")
    if any(not math.isfinite(value) or value < 0 for value in samples):
        raise ValueError(f"{path_text} holds a latency that is negative or not finite")
    return LatencyDistribution("replay", samples_ms=tuple(samples), spec=f"replay:{path_text}")


@dataclass(frozen=True)
class Decision:
    """One request's fate: its outcome and how long it waits first, in seconds."""

    outcome: str
    latency_s: float


@dataclass(frozen=True)
class Behaviour:
    """How the mock answers one model: drawn per request by `draw`."""

    latency: LatencyDistribution
    spike_share: float = 0.0
    spike_factor: float = 1.0
    error_429_share: float = 0.0
    error_500_share: float = 0.0
    timeout_share: float = 0.0
    timeout_s: float = 30.0

    def draw(self, rng: random.Random) -> Decision:
        if self.error_429_share or self.error_500_share or self.timeout_share:
            roll = rng.random()
            if roll < self.error_429_share:
                return Decision(RATE_LIMITED, 0.0)
            roll -= self.error_429_share
            if roll < self.timeout_share:
                return Decision(TIMEOUT, self.timeout_s)
            roll -= self.timeout_share
            if roll < self.error_500_share:
                return Decision(SERVER_ERROR, self._latency_s(rng))
        return Decision(OK, self._latency_s(rng))

    def _latency_s(self, rng: random.Random) -> float:
        latency_ms = self.latency.sample_ms(rng)
        if self.spike_share and rng.random() < self.spike_share:
            latency_ms *= self.spike_factor
        return latency_ms / 1000
