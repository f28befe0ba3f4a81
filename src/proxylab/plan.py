"""A matrix plan: its axes and load, validated before anything starts.

Kept apart from the runner so that checking a plan imports nothing heavy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pydantic import BaseModel, Field, field_validator

from proxylab.toxics import NO_TOXIC, parse_scenario, scenario_spec
from proxylab.versions import version_refusal

USER_MODES = ("none", "sequential", "random", "created")
KEY_MODES = ("shared", "per_user")
DB_USER_MODES = {"created"}
DB_KEY_MODES = {"per_user"}


class MatrixPlan(BaseModel):
    """The axes and the load of one matrix; validated before anything starts."""

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
    # grouped: all repeats of a configuration in a row (fewest proxy restarts); abba: one block
    # of configurations per repeat, every other block reversed; random: each block shuffled
    # with `order_seed`. Interleaving spreads drift of the machine over all configurations.
    order: str = Field("grouped", pattern="^(grouped|abba|random)$")
    order_seed: int = 1

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

    def model_post_init(self, _context) -> None:
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
        return [CellConfig(callbacks, user_mode, key_mode, latency_ms, toxics, version, replica)
                for replica in replicas
                for version in self.proxy_versions or [""]
                for toxics in self.toxics
                for latency_ms in self.llm_latencies_ms
                for callbacks in self.callbacks
                for user_mode in self.user_modes
                for key_mode in self.key_modes]


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

    @property
    def config_id(self) -> str:
        parts = [f"callbacks-{'on' if self.callbacks else 'off'}", f"user-{self.user_mode}",
                 f"key-{self.key_mode}"]
        if self.llm_latency_ms:
            parts.append(f"llm-{self.llm_latency_ms}ms")
        if self.toxics != NO_TOXIC:
            slugs = (toxic.slug() for toxic in parse_scenario(self.toxics))
            parts.append("faults-" + "_".join(slugs))
        if self.proxy_version:
            parts.insert(0, f"litellm-{self.proxy_version}")
        if self.replica:
            parts.append(f"replica-{self.replica}")
        return ".".join(parts)

    def proxy_group(self) -> tuple:
        """Cells with the same group share one proxy process: what the proxy runs with."""
        return (self.replica, self.proxy_version, self.callbacks, self.llm_latency_ms, self.toxics)
