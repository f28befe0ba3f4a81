"""Settings of the mock LLM, read once from `MOCK_LLM_*` environment variables at startup.

Each setting is defined once, as a field of `Settings` whose metadata names its environment
variable, its parser and its description; loading, validation and the README's table follow
from that definition. Times are milliseconds in the environment and in field names.

A variable that is set must hold a valid value: an empty or malformed value is an error, never
the default, so a broken variable substitution cannot quietly run an experiment without its
latency. Unknown `MOCK_LLM_*` names only log a warning, since a shared env file may hold
variables for other parts of the stack (such as the mock's URL).

`MOCK_LLM_BEHAVIOURS_FILE` names a JSON or YAML file that gives some models their own values
of the per-request settings (PER_MODEL_FIELDS), e.g.

    {"models": {"mock-slow": {"latency_distribution": "lognormal:800:0.5",
                              "spike_share": 0.01, "spike_factor": 10},
                "mock-flaky": {"error_500_share": 0.05}}}

Keys are the field names below; a model not in the file gets the environment's settings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from behaviour import Behaviour, LatencyDistribution, fixed, parse_distribution

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


def _non_negative_int(raw: str) -> int:
    """Parse a whole number >= 0."""
    value = int(raw)
    if value < 0:
        raise ValueError(raw)
    return value


def _share(raw: str) -> float:
    """Parse a share of requests: a number from 0 to 1."""
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError(raw)
    return value


def _factor(raw: str) -> float:
    """Parse a multiplier >= 1."""
    value = float(raw)
    if not math.isfinite(value) or value < 1.0:
        raise ValueError(raw)
    return value


def _flag(raw: str) -> bool:
    """Parse true/false, 1/0, yes/no (any case)."""
    text = raw.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(raw)


def _existing_file(raw: str) -> str:
    if not raw or not Path(raw).is_file():
        raise ValueError(raw)
    return raw


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
    """How the mock answers; one instance per process (and per model), built by `load_settings`."""

    latency_ms: float = _setting(
        0.0,
        "MOCK_LLM_LATENCY_MS",
        _non_negative_ms,
        "a number of milliseconds >= 0",
        "fixed latency before the first byte of every chat completion (the time to first "
        "token of a streamed one); a non-blocking sleep",
    )
    latency_distribution: LatencyDistribution | None = _setting(
        None,
        "MOCK_LLM_LATENCY_DISTRIBUTION",
        parse_distribution,
        "fixed:MS, uniform:LOW:HIGH, normal:MEAN:SD, lognormal:MEDIAN:SIGMA or replay:PATH",
        "latency drawn per request instead of MOCK_LLM_LATENCY_MS (set one of the two)",
    )
    spike_share: float = _setting(
        0.0,
        "MOCK_LLM_SPIKE_SHARE",
        _share,
        "a share from 0 to 1",
        "share of requests whose latency is multiplied by MOCK_LLM_SPIKE_FACTOR",
    )
    spike_factor: float = _setting(
        10.0,
        "MOCK_LLM_SPIKE_FACTOR",
        _factor,
        "a number >= 1",
        "multiplier of a spiked request's latency",
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
    stream_headers_first: bool = _setting(
        False,
        "MOCK_LLM_STREAM_HEADERS_FIRST",
        _flag,
        "true or false",
        "send a streamed answer's headers at once and wait the latency before the first "
        "chunk, as providers do; otherwise headers and first chunk leave together",
    )
    completion_tokens: int = _setting(
        16,
        "MOCK_LLM_COMPLETION_TOKENS",
        _positive_int,
        "a whole number >= 1",
        "tokens (words) in every answer, reported as usage.completion_tokens",
    )
    prompt_tokens: int = _setting(
        0,
        "MOCK_LLM_PROMPT_TOKENS",
        _non_negative_int,
        "a whole number >= 0",
        "usage.prompt_tokens of every answer; 0 estimates it from the messages' text",
    )
    error_429_share: float = _setting(
        0.0,
        "MOCK_LLM_ERROR_429_SHARE",
        _share,
        "a share from 0 to 1",
        "share of chat completions answered at once with 429 (rate limited)",
    )
    error_500_share: float = _setting(
        0.0,
        "MOCK_LLM_ERROR_500_SHARE",
        _share,
        "a share from 0 to 1",
        "share of chat completions answered with 500 after their latency",
    )
    timeout_share: float = _setting(
        0.0,
        "MOCK_LLM_TIMEOUT_SHARE",
        _share,
        "a share from 0 to 1",
        "share of chat completions held for MOCK_LLM_TIMEOUT_MS, then answered with 504",
    )
    timeout_ms: float = _setting(
        30000.0,
        "MOCK_LLM_TIMEOUT_MS",
        _non_negative_ms,
        "a number of milliseconds >= 0",
        "how long a request picked by MOCK_LLM_TIMEOUT_SHARE is held",
    )
    models: tuple[str, ...] = _setting(
        ("mock-gpt",),
        "MOCK_LLM_MODELS",
        _model_names,
        "comma-separated non-empty model names",
        "model names listed by GET /v1/models (the behaviours file adds its own)",
    )
    seed: int | None = _setting(
        None,
        "MOCK_LLM_SEED",
        int,
        "a whole number",
        "seed of the random draws (latency, spikes, errors); unset: different every start",
    )
    behaviours_file: str | None = _setting(
        None,
        "MOCK_LLM_BEHAVIOURS_FILE",
        _existing_file,
        "the path of an existing JSON or YAML file",
        "per-model settings: {\"models\": {NAME: {FIELD: VALUE}}} with the field names of "
        "settings.py",
    )
    # Settings of the models named in the behaviours file; not read from the environment.
    per_model: Mapping[str, Settings] = field(default_factory=dict)

    def latency(self) -> LatencyDistribution:
        """The latency distribution in force: the drawn one, else the fixed latency."""
        return self.latency_distribution or fixed(self.latency_ms)

    def behaviour(self) -> Behaviour:
        return Behaviour(
            latency=self.latency(), spike_share=self.spike_share, spike_factor=self.spike_factor,
            error_429_share=self.error_429_share, error_500_share=self.error_500_share,
            timeout_share=self.timeout_share, timeout_s=self.timeout_ms / 1000)

    def all_models(self) -> tuple[str, ...]:
        """The listed models, then the behaviours file's models not listed already."""
        return self.models + tuple(name for name in self.per_model if name not in self.models)


ENV_FIELDS = tuple(setting for setting in dataclasses.fields(Settings) if "env" in setting.metadata)
# Fields a behaviours file may set per model: everything about how one request is answered.
PER_MODEL_FIELDS = tuple(setting.name for setting in ENV_FIELDS
                         if setting.name not in ("models", "seed", "behaviours_file"))


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build the settings from an environment mapping; raise `SettingsError` on a bad value."""
    values: dict[str, Any] = {}
    known_envs = set()

    for setting in ENV_FIELDS:
        env = setting.metadata["env"]
        known_envs.add(env)
        if env not in environ:
            continue
        values[setting.name] = _parse(setting, environ[env], env)

    if "latency_ms" in values and "latency_distribution" in values:
        raise SettingsError("MOCK_LLM_LATENCY_MS and MOCK_LLM_LATENCY_DISTRIBUTION are both set: "
                            "set one of them (fixed:MS is a distribution too)")
    settings = Settings(**values)
    _check(settings, "MOCK_LLM_")

    if settings.behaviours_file:
        per_model = {name: _model_settings(settings, name, overrides)
                     for name, overrides in _read_behaviours(settings.behaviours_file).items()}
        settings = dataclasses.replace(settings, per_model=per_model)

    unknown = sorted(
        name for name in environ if name.startswith(ENV_PREFIX) and name not in known_envs
    )
    if unknown:
        logger.warning("ignoring unknown environment variables %s", ", ".join(unknown))

    return settings


def _parse(setting: dataclasses.Field, raw: str, where: str) -> Any:
    try:
        return setting.metadata["parse"](raw)
    except ValueError as error:
        reason = f" ({error})" if setting.name == "latency_distribution" and str(error) else ""
        raise SettingsError(
            f"{where}={raw!r} is invalid: expected {setting.metadata['expected']}{reason}"
        ) from None


def _check(settings: Settings, prefix: str) -> None:
    """Checks across settings; `prefix` names the variable (or file entry) in messages."""
    # A chunk always carries at least one token, as it does from a real model.
    if settings.stream_chunks > settings.completion_tokens:
        raise SettingsError(
            f"{prefix}STREAM_CHUNKS={settings.stream_chunks} is invalid: expected at most "
            f"{prefix}COMPLETION_TOKENS={settings.completion_tokens} (one token per chunk "
            "or more)"
        )
    shares = settings.error_429_share + settings.error_500_share + settings.timeout_share
    if shares > 1.0 + 1e-9:
        raise SettingsError(
            f"{prefix}ERROR_429_SHARE + {prefix}ERROR_500_SHARE + {prefix}TIMEOUT_SHARE = "
            f"{shares:g} is invalid: expected at most 1"
        )


def _read_behaviours(path: str) -> dict[str, dict[str, Any]]:
    env = "MOCK_LLM_BEHAVIOURS_FILE"
    text = Path(path).read_text(encoding="utf-8")
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml  # only needed for YAML files

            document = yaml.safe_load(text)
        else:
            import orjson

            document = orjson.loads(text)
    except ImportError:
        raise SettingsError(f"{env}={path!r} is invalid: YAML needs PyYAML; use JSON") from None
    except Exception as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SettingsError(f"{env}={path!r} is invalid: not JSON or YAML ({first_line})") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict) or not all(
            isinstance(name, str) and name and isinstance(entry, dict)
            for name, entry in models.items()):
        raise SettingsError(f"{env}={path!r} is invalid: expected {{\"models\": {{NAME: "
                            f"{{FIELD: VALUE, ...}}}}}}")
    return models


def _model_settings(base: Settings, name: str, overrides: dict[str, Any]) -> Settings:
    env = "MOCK_LLM_BEHAVIOURS_FILE"
    fields = {setting.name: setting for setting in ENV_FIELDS}
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in PER_MODEL_FIELDS:
            raise SettingsError(f"{env}={base.behaviours_file!r} is invalid: model {name!r} sets "
                                f"{key!r}; expected one of {', '.join(PER_MODEL_FIELDS)}")
        text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
        values[key] = _parse(fields[key], text, f"{env} model {name!r} {key}")
    if "latency_ms" in values and "latency_distribution" in values:
        raise SettingsError(f"{env}={base.behaviours_file!r} is invalid: model {name!r} sets both "
                            "latency_ms and latency_distribution; set one")
    if "latency_ms" in values:
        values["latency_distribution"] = None  # the model's fixed latency replaces a drawn one
    settings = dataclasses.replace(base, **values)
    _check(settings, f"{env} model {name!r} ")
    return settings
