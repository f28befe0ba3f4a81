"""Scenario packs: a known regression as a file, run on a "before" and an "after" release.

A scenario (`scenarios/*.yaml`) names the releases around a fix, the matrix that shows the
problem, proxy settings it needs, and the expected signature: how a figure compares between
the two values of one axis (callbacks on vs off, a user mode vs none, or the two releases) on
the "before" release, and how it compares once fixed. Scenarios that need the proxy's database
refuse to run where it has none, instead of producing figures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from statistics import mean

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxylab.errors import LabError
from proxylab.plan import MatrixPlan
from proxylab.versions import version_refusal

logger = logging.getLogger(__name__)

# TODO: a proxy setting axis ("litellm_settings.KEY", see plan.proxy_setting_axes) cannot be a
# signature's axis yet; a scenario may vary one, but its signature compares along these only.
SIGNATURE_AXES = ("callbacks", "user_mode", "key_mode", "proxy_version")
# Said wherever signatures are checked: no scenario's thresholds have been seen on a real
# database-backed run yet, so a MISMATCH may mean a wrong threshold as much as a missing effect.
PROVISIONAL_NOTE = ("note: the signature thresholds are provisional, never yet observed on a "
                    "database-backed proxy; adjust them after a first run")
BASELINES = {"callbacks": False, "user_mode": "none", "key_mode": "shared"}


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at_least: float | None = None
    at_most: float | None = None

    def holds(self, value: float) -> bool:
        return ((self.at_least is None or value >= self.at_least)
                and (self.at_most is None or value <= self.at_most))

    def describe(self) -> str:
        parts = [f">= {self.at_least:g}" if self.at_least is not None else "",
                 f"<= {self.at_most:g}" if self.at_most is not None else ""]
        return " and ".join(part for part in parts if part)


class BeforeAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: Bound
    after: Bound


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    axis: str
    # Candidate minus baseline of the axis, DB statements per request.
    db_statements_per_request_increase: BeforeAfter | None = None
    # Plain DB statements per request (for an axis of releases).
    db_statements_per_request: BeforeAfter | None = None
    # Candidate p95 over baseline p95.
    latency_p95_ratio: BeforeAfter | None = None

    @field_validator("axis")
    @classmethod
    def _known_axis(cls, axis: str) -> str:
        if axis not in SIGNATURE_AXES:
            raise ValueError(f"unknown axis {axis!r}; choose from {', '.join(SIGNATURE_AXES)}")
        return axis


class Versions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: str
    after: str

    @field_validator("before", "after")
    @classmethod
    def _runnable(cls, version: str) -> str:
        refusal = version_refusal(version)
        if refusal:
            raise ValueError(refusal)
        return version


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    requires_database: bool = True
    versions: Versions
    matrix: dict = Field(default_factory=dict)
    proxy_settings: dict[str, dict] = Field(default_factory=dict)
    signature: Signature

    def plan(self) -> MatrixPlan:
        """The matrix of this scenario over both releases."""
        return MatrixPlan(**{**self.matrix, "proxy_versions": [self.versions.before, self.versions.after],
                             "proxy_settings": self.proxy_settings})


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; a bad one is a one-line LabError naming the field."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise LabError(f"{path}: cannot read scenario ({str(error).splitlines()[0]})") from None
    if document is not None and not isinstance(document, dict):
        raise LabError(f"{path}: a scenario is a mapping of fields (name, versions, ...), "
                       f"found a {type(document).__name__} at the top level")
    try:
        scenario = Scenario(**(document or {}))
        scenario.plan()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise LabError(f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}") from None
    except ValueError as error:
        raise LabError(f"{path}: matrix: {error}") from None
    return scenario


def _axis_value(cell: dict, axis: str) -> object:
    return cell["config"].get(axis)


def _figure(cells: list[dict], name: str) -> float | None:
    values = []
    for cell in cells:
        if name == "p95_ms":
            values.append(cell["statistics"]["all"]["p95_ms"])
        else:
            database = (cell.get("attribution") or {}).get("database") or {}
            values.append(database.get("statements_per_request"))
    values = [value for value in values if value is not None]
    return mean(values) if values else None


def check_signature(scenario: Scenario, summary: dict) -> list[str]:
    """Compare a finished run with the scenario's expected signature; one line per check.

    Each line starts with "ok" or "MISMATCH"; figures that could not be measured say so.
    """
    signature = scenario.signature
    lines = []
    for phase in ("before", "after"):
        release = getattr(scenario.versions, phase)
        cells = [cell for cell in summary["cells"] if cell["config"].get("proxy_version") == release]
        if signature.axis == "proxy_version":
            candidate, baseline = cells, []
        else:
            base_value = BASELINES[signature.axis]
            baseline = [cell for cell in cells if _axis_value(cell, signature.axis) == base_value]
            candidate = [cell for cell in cells if _axis_value(cell, signature.axis) != base_value]
        checks = []
        if signature.db_statements_per_request_increase:
            high, low = _figure(candidate, "db"), _figure(baseline, "db")
            value = None if high is None or low is None else high - low
            checks.append(("DB statements per request, increase", value,
                           getattr(signature.db_statements_per_request_increase, phase)))
        if signature.db_statements_per_request:
            checks.append(("DB statements per request", _figure(candidate, "db"),
                           getattr(signature.db_statements_per_request, phase)))
        if signature.latency_p95_ratio:
            high, low = _figure(candidate, "p95_ms"), _figure(baseline, "p95_ms")
            value = None if not high or not low else high / low
            checks.append(("p95 ratio", value, getattr(signature.latency_p95_ratio, phase)))
        for label, value, bound in checks:
            if value is None:
                lines.append(f"MISMATCH {phase} ({release}): {label} not measured")
            else:
                verdict = "ok" if bound.holds(value) else "MISMATCH"
                lines.append(f"{verdict} {phase} ({release}): {label} {value:.3f}, expected {bound.describe()}")
    return lines
