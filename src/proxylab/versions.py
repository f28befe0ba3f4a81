"""LiteLLM releases as a matrix axis: which can run, and how the shared config is adapted.

The proxy config in `proxy/config.yaml` is written for the pinned release. Older releases
lack some settings or behave differently; `adapt_config` changes a copy for a given release and
says what it changed, so each report can list the adaptations per version.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

# Releases published by an attacker on PyPI; never installed (FIELD-NOTES).
COMPROMISED_PROXY_VERSIONS = {
    "1.82.7": "a compromised release on PyPI",
    "1.82.8": "a compromised release on PyPI",
}

# /metrics became guarded by the master key around 1.85; before, the setting did not exist.
METRICS_AUTH_SINCE = (1, 85, 0)
# Before 1.80.0 the Prometheus callback (PrometheusLogger) ships only in the separately licensed
# `litellm-enterprise` package and mounts /metrics for premium users only; 1.80.0 moved it into
# litellm itself without the check (checked in the 1.79.3 and 1.80.0 wheels; BerriAI/litellm#16689).
PROMETHEUS_OSS_SINCE = (1, 80, 0)

# Image tags of the official proxy image: releases from 1.83.0 on are published (and signed)
# as `vX.Y.Z` (LiteLLM's release notes, e.g. `ghcr.io/berriai/litellm:v1.108.5`); the older
# release workflow tagged `main-vX.Y.Z`. Unverified here (no registry): a wrong prefix shows
# as a pull error naming the tag, and PROXYLAB_PROXY_TAG_PREFIX in `.env` overrides it.
V_TAGS_SINCE = (1, 83, 0)
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(?:\.post\d+)?$")


def parse_version(version: str) -> tuple[int, int, int]:
    major, minor, patch = version.split(".")[:3]
    return int(major), int(minor), int(patch)


def image_tag_prefix(version: str) -> str:
    """What goes before the version in the official image's tag: `v` or, for old releases, `main-v`."""
    return "v" if parse_version(version) >= V_TAGS_SINCE else "main-v"


def version_refusal(version: str) -> str | None:
    """Why a release cannot be an axis value (one line), or None when it can."""
    if not _VERSION_RE.match(version):
        return f"LiteLLM version {version!r} is not of the form 1.2.3"
    if version in COMPROMISED_PROXY_VERSIONS:
        return f"LiteLLM {version} is refused: {COMPROMISED_PROXY_VERSIONS[version]}"
    return None


def callbacks_refusal(version: str) -> str | None:
    """Why `version` cannot run with the Prometheus callback on (one line), or None when it can."""
    if parse_version(version) < PROMETHEUS_OSS_SINCE:
        since = ".".join(map(str, PROMETHEUS_OSS_SINCE))
        return (f"LiteLLM {version} cannot run with callbacks on: its Prometheus callback is "
                f"enterprise-only (open source since {since}); use --callbacks off or a release "
                f">= {since}")
    return None


def adapt_config(document: dict, version: str | None) -> list[str]:
    """Adapt the proxy config `document` in place for `version`; return what was changed."""
    if not version:
        return []
    changes = []
    settings = document.get("litellm_settings", {})
    if parse_version(version) < METRICS_AUTH_SINCE and "require_auth_for_metrics_endpoint" in settings:
        del settings["require_auth_for_metrics_endpoint"]
        changes.append("require_auth_for_metrics_endpoint dropped: /metrics has no key check "
                       "before 1.85")
    # Releases whose Prometheus callback is enterprise-only are refused with callbacks on by the
    # plan (callbacks_refusal), not adapted: without the callback there is nothing to compare.
    return changes
