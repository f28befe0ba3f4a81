"""Settings of the mock LLM, read once from `MOCK_LLM_*` environment variables at startup.

Each setting is defined once, as a field of `Settings` whose metadata names its environment
variable, its parser and its description; loading, validation and the README's table follow
from that definition. Times are milliseconds in the environment and in field names.

A variable that is set must hold a valid value: an empty or malformed value is an error, never
the default, so a broken variable substitution cannot quietly run an experiment without its
latency. Unknown `MOCK_LLM_*` names only log a warning, since a shared env file may hold
variables for other parts of the stack (such as the mock's URL).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("mock_llm.settings")

ENV_PREFIX = "MOCK_LLM_"


class SettingsError(ValueError):
    """An environment variable holds a value the mock cannot use; the message is one line."""


def _non_negative_ms(raw: str) -> float:
    """Parse a duration in milliseconds: a finite number >= 0 (fractions allowed)."""
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(raw)
    return value


def _positive_int(raw: str) -> int:
    """Parse a whole number >= 1."""
    value = int(raw)
    if value < 1:
        raise ValueError(raw)
    return value


def _model_names(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of model names; blanks around names are dropped."""
    names = tuple(name.strip() for name in raw.split(","))
    if not names or any(not name for name in names):
        raise ValueError(raw)
    return names


def _setting(default: Any, env: str, parse: Callable[[str], Any], expected: str, doc: str) -> Any:
    """Declare a setting: its default, environment variable, parser and description."""
    metadata = {"env": env, "parse": parse, "expected": expected, "doc": doc}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """How the mock answers; one instance per process, built by `load_settings`."""

    latency_ms: float = _setting(
        0.0,
        "MOCK_LLM_LATENCY_MS",
        _non_negative_ms,
        "a number of milliseconds >= 0",
        "fixed latency added before every chat completion answers (non-blocking sleep)",
    )
    stream_chunks: int = _setting(
        8,
        "MOCK_LLM_STREAM_CHUNKS",
        _positive_int,
        "a whole number >= 1",
        "content chunks in a streamed answer, between the role chunk and the finish chunk",
    )
    token_delay_ms: float = _setting(
        0.0,
        "MOCK_LLM_TOKEN_DELAY_MS",
        _non_negative_ms,
        "a number of milliseconds >= 0",
        "delay between two consecutive content chunks of a streamed answer",
    )
    completion_tokens: int = _setting(
        16,
        "MOCK_LLM_COMPLETION_TOKENS",
        _positive_int,
        "a whole number >= 1",
        "tokens (words) in every answer, reported as usage.completion_tokens",
    )
    models: tuple[str, ...] = _setting(
        ("mock-gpt",),
        "MOCK_LLM_MODELS",
        _model_names,
        "comma-separated non-empty model names",
        "model names listed by GET /v1/models",
    )


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build the settings from an environment mapping; raise `SettingsError` on a bad value."""
    values: dict[str, Any] = {}
    known_envs = set()

    for setting in dataclasses.fields(Settings):
        env = setting.metadata["env"]
        known_envs.add(env)
        if env not in environ:
            continue
        raw = environ[env]
        try:
            values[setting.name] = setting.metadata["parse"](raw)
        except ValueError:
            raise SettingsError(
                f"{env}={raw!r} is invalid: expected {setting.metadata['expected']}"
            ) from None

    settings = Settings(**values)

    # A chunk always carries at least one token, as it does from a real model.
    if settings.stream_chunks > settings.completion_tokens:
        raise SettingsError(
            f"MOCK_LLM_STREAM_CHUNKS={settings.stream_chunks} is invalid: expected at most "
            f"MOCK_LLM_COMPLETION_TOKENS={settings.completion_tokens} (one token per chunk "
            "or more)"
        )

    unknown = sorted(
        name for name in environ if name.startswith(ENV_PREFIX) and name not in known_envs
    )
    if unknown:
        logger.warning("ignoring unknown environment variables %s", ", ".join(unknown))

    return settings
