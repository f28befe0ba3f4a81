"""Faults on the hops between the proxy and its upstreams, through toxiproxy's API.

toxiproxy applies a latency toxic to one direction of a connection and to every chunk of
data that passes, and picks connections (not requests) by `toxicity`. A non-streamed chat
response is one chunk, so a downstream latency toxic of L ms adds about L ms per request;
streamed responses drift towards several times L. The proxy pools its upstream
connections, so toxics are set before the proxy starts (FIELD-NOTES).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx
from toxiproxy import Toxiproxy

from proxylab.errors import LabError
from proxylab.settings import LabSettings

logger = logging.getLogger(__name__)

# Hop name as the lab's settings and reports call it -> toxiproxy proxy name.
HOPS = {"llm": "proxy_to_llm", "postgres": "proxy_to_postgres", "redis": "proxy_to_redis"}


@dataclass(frozen=True)
class LatencyToxic:
    """Added latency on one hop: `latency_ms` plus up to `jitter_ms`, in one direction."""

    hop: str
    latency_ms: int
    jitter_ms: int = 0
    stream: str = "downstream"

    def as_dict(self) -> dict[str, object]:
        return {"hop": self.hop, "type": "latency", "latency_ms": self.latency_ms,
                "jitter_ms": self.jitter_ms, "stream": self.stream}


def _server(settings: LabSettings) -> Toxiproxy:
    server = Toxiproxy()
    # toxiproxy-python keeps its API address in a class attribute.
    server.update_api_consumer(settings.host, settings.toxiproxy_api_port)
    return server


def apply(settings: LabSettings, toxics: list[LatencyToxic]) -> None:
    """Remove every toxic, add these, and read them back from the server before any load."""
    server = _server(settings)
    try:
        server.reset()
        proxies = server.proxies()
        for toxic in toxics:
            if toxic.hop not in HOPS:
                raise LabError(f"unknown hop {toxic.hop!r}; choose one of {', '.join(HOPS)}")
            proxies[HOPS[toxic.hop]].add_toxic(
                type="latency", stream=toxic.stream, name=f"{toxic.hop}_latency_{toxic.stream}",
                attributes={"latency": toxic.latency_ms, "jitter": toxic.jitter_ms})
        active = active_toxics(settings)
    except httpx.HTTPError as error:
        raise LabError(f"toxiproxy API unreachable on port {settings.toxiproxy_api_port}: {error}") from None
    except OSError as error:  # requests' connection errors, raised by toxiproxy-python
        raise LabError(f"toxiproxy API unreachable on port {settings.toxiproxy_api_port}: {error}") from None
    expected = sorted((HOPS[t.hop], t.latency_ms) for t in toxics)
    found = sorted((proxy, toxic["attributes"]["latency"]) for proxy, toxic in active)
    if expected != found:
        raise LabError(f"toxiproxy did not take the toxics: wanted {expected}, found {found}")
    logger.info("toxics set: %s", expected or "none")


def active_toxics(settings: LabSettings) -> list[tuple[str, dict]]:
    """(proxy name, toxic) for every toxic the server holds now, read with a plain GET."""
    response = httpx.get(settings.url(settings.toxiproxy_api_port, "/proxies"), timeout=5)
    response.raise_for_status()
    return [(name, toxic) for name, proxy in response.json().items() for toxic in proxy["toxics"]]
