"""Mixed mock behaviours: a behaviours file for the mock, and a mix of models for the load.

`--mock-behaviours FILE` gives the mock per-model settings (services/mock_llm/settings.py reads
it as MOCK_LLM_BEHAVIOURS_FILE) and routes every model the file names through the proxy;
`--model-mix mock-gpt=0.9,mock-slow=0.1` makes each request of the load draw its model with
those shares. Both are checked here, before anything starts, with one-line reasons.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import yaml

from proxylab.errors import LabError

logger = logging.getLogger(__name__)

# Shares are written by hand with a few decimals; this much rounding still sums to 1.
SHARES_TOLERANCE = 1e-6


def read_behaviours(path: Path | str) -> dict[str, dict]:
    """The models of a mock behaviours file, `{"models": {NAME: {FIELD: VALUE}}}`, by name.

    Only the shape is checked here; the mock checks every value when it starts (and refuses
    to start on a bad one, with the reason in its log).
    """
    path = Path(path)
    where = f"--mock-behaviours {path}"
    if not path.is_file():
        raise LabError(f"{where}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        document = (yaml.safe_load(text) if path.suffix in (".yaml", ".yml")
                    else json.loads(text))
    except (ValueError, yaml.YAMLError) as error:
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise LabError(f"{where}: not JSON or YAML ({first_line})") from None
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, dict) or not models or not all(
            isinstance(name, str) and name.strip() == name and name and isinstance(entry, dict)
            for name, entry in models.items()):
        raise LabError(f'{where}: expected {{"models": {{NAME: {{FIELD: VALUE, ...}}}}}} '
                       "with at least one model")
    return models


def parse_model_mix(text: str) -> dict[str, float]:
    """`name=share,name=share` -> {name: share}; the shares must be positive and sum to 1."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, equals, share_text = (piece.strip() for piece in part.partition("="))
        if not name or not equals:
            raise LabError(f"--model-mix: expected MODEL=SHARE[,MODEL=SHARE...], got {part.strip()!r}")
        try:
            share = float(share_text)
        except ValueError:
            raise LabError(f"--model-mix: share of {name!r} is not a number: {share_text!r}") from None
        if not math.isfinite(share) or share <= 0:
            raise LabError(f"--model-mix: share of {name!r} must be above 0, got {share_text!r}")
        if name in mix:
            raise LabError(f"--model-mix: {name!r} is given twice")
        mix[name] = share
    check_shares(mix)
    return mix


def check_shares(mix: dict[str, float]) -> None:
    total = sum(mix.values())
    if abs(total - 1.0) > SHARES_TOLERANCE:
        raise LabError(f"--model-mix: shares sum to {total:g}, expected 1")


def mix_spec(mix: dict[str, float]) -> str:
    """The mix as the locustfile's --model-mix takes it (and as a person would write it)."""
    return ",".join(f"{name}={share:g}" for name, share in mix.items())


def check_mix_models(mix: dict[str, float], routed: list[str] | tuple[str, ...]) -> None:
    """Every model of the mix must be one the proxy routes, or its requests would all fail."""
    unknown = [name for name in mix if name not in routed]
    if unknown:
        raise LabError(f"--model-mix: model {unknown[0]!r} is neither in the proxy config nor in "
                       f"--mock-behaviours; known: {', '.join(routed)}")
