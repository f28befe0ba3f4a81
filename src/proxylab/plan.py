"""A matrix plan: its axes and load, validated before anything starts.

Kept apart from the runner so that checking a plan imports nothing heavy.
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxylab import model_mix
from proxylab.settings import REPO_ROOT
from proxylab.errors import LabError
from proxylab.toxics import NO_TOXIC, parse_scenario, scenario_spec
from proxylab.versions import callbacks_refusal, version_refusal

logger = logging.getLogger(__name__)

USER_MODES = ("none", "sequential", "random", "created")
KEY_MODES = ("shared", "per_user")
DB_USER_MODES = {"created"}
DB_KEY_MODES = {"per_user"}
# Sections of the proxy config whose settings a plan may set or vary (model_list is the lab's).
PROXY_SETTING_SECTIONS = ("litellm_settings", "general_settings", "router_settings")
# Plan keys that older versions of the lab saved in summary.json and this one no longer has,
# with the reason; `MatrixPlan.from_summary` drops them so old runs still resume. Any other
# unknown key is refused, as a typo in a scenario's matrix is.
RETIRED_PLAN_KEYS: dict[str, str] = {}


class MatrixPlan(BaseModel):
    """The axes and the load of one matrix; validated before anything starts."""

    # A misspelt key (`user_mode:` in a scenario's matrix) must fail, not fall back to a default.
    model_config = ConfigDict(extra="forbid")
    callbacks: list[bool] = [False, True]
    user_modes: list[str] = ["none", "sequential", "random"]
    key_modes: list[str] = ["shared"]
    llm_latencies_ms: list[int] = [0]
    repeats: int = Field(1, ge=1)
    # Identical twins of every configuration for A/A checks: each replica is its own
    # configuration with its own proxy start, so the verdicts between replicas show what the
    # whole pipeline calls a difference when there is none.
    replicas: int = Field(1, ge=1, le=9)
    requests: int = Field(500, ge=1)
    users: int = Field(20, ge=1)
    spawn_rate: float = Field(0.0, ge=0)  # 0: all users at once, like the original script
    warmup_requests: int = Field(40, ge=0)
    max_cell_time_s: int = Field(600, ge=10)
    # Fault scenarios on the proxy's hops, one configuration each (toxics.parse_scenario).
    toxics: list[str] = [NO_TOXIC]
    # Streamed requests; the raw table then has each request's time to first token.
    stream: bool = False
    # A py-spy sampling profile of the proxy per cell, saved in the cell's folder.
    profile: bool = False
    # LiteLLM releases to compare, one configuration each; empty: the lab's pinned release.
    proxy_versions: list[str] = []
    # Budget (USD) given to each end user the `created` mode makes; None: no budget.
    end_user_max_budget: float | None = Field(None, ge=0)
    # Proxy settings for every configuration, by config section (e.g. general_settings).
    proxy_settings: dict[str, dict] = {}
    # Proxy settings as axes, "SECTION.KEY" -> values, one configuration per value (and per
    # combination with the other axes); each value restarts the proxy with it in its config.
    proxy_setting_axes: dict[str, list[bool | int | float | str]] = {}
    # grouped: all repeats of a configuration in a row (fewest proxy restarts); abba: one block
    # of configurations per repeat, every other block reversed; random: each block shuffled
    # with `order_seed`. Interleaving spreads drift of the machine over all configurations.
    order: str = Field("grouped", pattern="^(grouped|abba|random)$")
    order_seed: int = 1
    # A mock behaviours file (services/mock_llm/README.md): its models get their own latency
    # and errors, and each is routed through the proxy. None: the lab's environment only.
    mock_behaviours: str | None = None
    # Share of the load's requests per model; empty: every request asks for the lab's model.
    model_mix: dict[str, float] = {}
    # Seed of each simulated user's model draws, so a mix repeats request for request.
    model_mix_seed: int = 1

    @field_validator("proxy_versions")
    @classmethod
    def _known_versions(cls, versions: list[str]) -> list[str]:
        if len(set(versions)) != len(versions):
            raise ValueError(f"repeats a version: {versions}")
        for version in versions:
            refusal = version_refusal(version)
            if refusal:
                raise ValueError(refusal)
        return versions

    @field_validator("proxy_settings")
    @classmethod
    def _known_sections(cls, sections: dict[str, dict]) -> dict[str, dict]:
        for section in sections:
            _check_section(section)
        return sections

    @field_validator("proxy_setting_axes")
    @classmethod
    def _setting_axes(cls, axes: dict[str, list]) -> dict[str, list]:
        keys_seen: dict[str, str] = {}
        for name, values in axes.items():
            section, _, key = name.partition(".")
            if not key or "." in key:
                raise ValueError(f"{name!r} is not of the form SECTION.KEY")
            _check_section(section)
            if key in keys_seen:
                # Config ids name a setting by its key alone.
                raise ValueError(f"{key!r} is varied in both {keys_seen[key]} and {section}")
            keys_seen[key] = section
            if not values:
                raise ValueError(f"{name} needs at least one value")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"{name} repeats a value: {values}")
        return axes

    @field_validator("user_modes", "key_modes", "callbacks", "llm_latencies_ms")
    @classmethod
    def _not_empty(cls, values: list) -> list:
        if not values:
            raise ValueError("needs at least one value")
        if len(set(values)) != len(values):
            raise ValueError(f"repeats a value: {values}")
        return values

    @field_validator("user_modes", "key_modes")
    @classmethod
    def _known_modes(cls, modes: list[str], info) -> list[str]:
        kind, known = {"user_modes": ("user", USER_MODES), "key_modes": ("key", KEY_MODES)}[info.field_name]
        unknown = [mode for mode in modes if mode not in known]
        if unknown:
            raise ValueError(f"unknown {kind} mode {unknown[0]!r}; choose from {', '.join(known)}")
        return modes

    @field_validator("llm_latencies_ms")
    @classmethod
    def _non_negative(cls, values: list[int]) -> list[int]:
        if any(value < 0 for value in values):
            raise ValueError("latencies must be zero or positive")
        return values

    @field_validator("toxics")
    @classmethod
    def _known_toxics(cls, scenarios: list[str]) -> list[str]:
        canonical = [scenario_spec(parse_scenario(text)) for text in scenarios]
        if not canonical:
            raise ValueError("needs at least one scenario (`none` for no toxic)")
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"repeats a scenario: {canonical}")
        return canonical

    @field_validator("mock_behaviours")
    @classmethod
    def _readable_behaviours(cls, path: str | None) -> str | None:
        if path is None:
            return None
        model_mix.read_behaviours(path)  # refuses a missing or malformed file in one line
        return str(Path(path).resolve())

    @field_validator("model_mix")
    @classmethod
    def _shares_sum_to_one(cls, mix: dict[str, float]) -> dict[str, float]:
        if mix:
            model_mix.check_shares(mix)
        return mix

    def routed_models(self) -> list[str]:
        """Models the proxy routes: its config's, then the behaviours file's new ones."""
        models = list(configured_models())
        if self.mock_behaviours:
            models += [name for name in model_mix.read_behaviours(self.mock_behaviours)
                       if name not in models]
        return models

    def model_post_init(self, _context) -> None:
        if True in self.callbacks:
            # Refused here, before anything is installed or started: such a release would only
            # fail at its first proxy start, after the releases before it had run.
            for version in self.proxy_versions:
                refusal = callbacks_refusal(version)
                if refusal:
                    raise ValueError(refusal)
        if self.model_mix:
            model_mix.check_mix_models(self.model_mix, self.routed_models())
        for name in self.proxy_setting_axes:
            section, _, key = name.partition(".")
            if key in self.proxy_settings.get(section, {}):
                raise ValueError(f"{name} is both a fixed proxy setting and an axis; use one")
        if self.users > self.requests:
            raise ValueError(f"{self.users} users need at least as many requests, got {self.requests}")
        llm_latency_toxics = [text for text in self.toxics if any(
            toxic.hop == "llm" and toxic.kind == "latency" for toxic in parse_scenario(text))]
        if llm_latency_toxics and any(self.llm_latencies_ms):
            raise ValueError(f"--llm-latency-ms and the toxic {llm_latency_toxics[0]!r} both delay "
                             f"the llm hop; use one of them")

    def configurations(self) -> list["CellConfig"]:
        """Every configuration, grouped so the proxy restarts as rarely as possible."""
        replicas = range(1, self.replicas + 1) if self.replicas > 1 else [0]
        setting_names = sorted(self.proxy_setting_axes)
        setting_choices = [tuple(zip(setting_names, values)) for values in
                           itertools.product(*(self.proxy_setting_axes[name] for name in setting_names))]
        return [CellConfig(callbacks, user_mode, key_mode, latency_ms, toxics, version, replica,
                           settings)
                for replica in replicas
                for version in self.proxy_versions or [""]
                for settings in setting_choices
                for toxics in self.toxics
                for latency_ms in self.llm_latencies_ms
                for callbacks in self.callbacks
                for user_mode in self.user_modes
                for key_mode in self.key_modes]

    def settings_for(self, config: "CellConfig") -> dict[str, dict]:
        """The proxy settings `config` runs with: the plan's fixed ones and its axis values."""
        merged = {section: dict(values) for section, values in self.proxy_settings.items()}
        for name, value in config.proxy_settings:
            section, _, key = name.partition(".")
            merged.setdefault(section, {})[key] = value
        return merged

    @classmethod
    def from_summary(cls, saved: dict) -> "MatrixPlan":
        """The plan a summary.json recorded, also one written by an older version of the lab."""
        plan = {}
        for key, value in saved.items():
            if key in RETIRED_PLAN_KEYS:
                logger.info("plan key %r of an older lab version ignored: %s", key,
                            RETIRED_PLAN_KEYS[key])
            elif key not in cls.model_fields:
                raise LabError(f"the saved plan has key {key!r}, unknown to this version of the "
                               f"lab (written by a newer one?)")
            else:
                plan[key] = value
        return cls(**plan)


    def cell_order(self) -> list[tuple["CellConfig", int]]:
        """(configuration, repeat) in the order the cells run; the same plan gives the same order."""
        configs = self.configurations()
        repeats = range(1, self.repeats + 1)
        if self.order == "grouped":
            return [(config, repeat) for config in configs for repeat in repeats]
        shuffler = random.Random(self.order_seed)
        order = []
        for repeat in repeats:
            block = list(configs)
            if self.order == "abba" and repeat % 2 == 0:
                block.reverse()
            elif self.order == "random":
                shuffler.shuffle(block)
            order += [(config, repeat) for config in block]
        return order


def configured_models() -> list[str]:
    """The model names of the shared proxy config (proxy/config.yaml)."""
    document = yaml.safe_load((REPO_ROOT / "proxy" / "config.yaml").read_text())
    return [entry["model_name"] for entry in document.get("model_list") or []]


QUICK_PLAN = MatrixPlan()
# Five repeats: with three, a rank test over runs can never reach p < 0.05.
FULL_PLAN = MatrixPlan(repeats=5, requests=5000, users=50, order="abba")


@dataclass(frozen=True)
class CellConfig:
    callbacks: bool
    user_mode: str
    key_mode: str
    llm_latency_ms: int = 0
    toxics: str = NO_TOXIC  # canonical scenario text, see toxics.parse_scenario
    proxy_version: str = ""  # LiteLLM release; empty: the lab's pinned one
    replica: int = 0  # 1..N: an identical twin for A/A checks; 0: no replicas in the plan
    # ("SECTION.KEY", value) of each proxy setting axis of the plan, sorted by name.
    proxy_settings: tuple[tuple[str, bool | int | float | str], ...] = ()

    def record(self) -> dict:
        """The configuration as a cell records it: each proxy setting axis a key of its own,
        so the verdicts compare its values like those of any other axis."""
        record = asdict(self)
        del record["proxy_settings"]
        record.update(dict(self.proxy_settings))
        return record

    @property
    def config_id(self) -> str:
        parts = [f"callbacks-{'on' if self.callbacks else 'off'}", f"user-{self.user_mode}",
                 f"key-{self.key_mode}"]
        if self.llm_latency_ms:
            parts.append(f"llm-{self.llm_latency_ms}ms")
        if self.toxics != NO_TOXIC:
            slugs = (toxic.slug() for toxic in parse_scenario(self.toxics))
            parts.append("faults-" + "_".join(slugs))
        for name, value in self.proxy_settings:
            parts.append(f"{name.partition('.')[2]}-{setting_text(value)}")
        if self.proxy_version:
            parts.insert(0, f"litellm-{self.proxy_version}")
        if self.replica:
            parts.append(f"replica-{self.replica}")
        return ".".join(parts)

    def proxy_group(self) -> tuple:
        """Cells with the same group share one proxy process: what the proxy runs with."""
        return (self.replica, self.proxy_version, self.callbacks, self.llm_latency_ms, self.toxics,
                self.proxy_settings)


def _check_section(section: str) -> None:
    if section not in PROXY_SETTING_SECTIONS:
        raise ValueError(f"unknown proxy config section {section!r}; choose from "
                         f"{', '.join(PROXY_SETTING_SECTIONS)}")


def setting_text(value: bool | int | float | str) -> str:
    """A setting's value as written on the command line (true, 60, 0.5, text)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _setting_value(text: str) -> bool | int | float | str:
    """true/false, a whole number, a decimal, else the text: the types LiteLLM's YAML has."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_proxy_setting(text: str) -> tuple[str, list[bool | int | float | str]]:
    """`SECTION.KEY=V1,V2` (the --proxy-setting flag) -> ("SECTION.KEY", [V1, V2])."""
    name, equals, values = text.partition("=")
    parts = [part.strip() for part in values.split(",")]
    if not equals or not name.strip() or not all(parts):
        raise ValueError(f"takes SECTION.KEY=V1,V2, got {text!r}")
    return name.strip(), [_setting_value(part) for part in parts]
