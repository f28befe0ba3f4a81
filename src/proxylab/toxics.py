"""Faults on the hops between the proxy and its upstreams, through toxiproxy's HTTP API.

A scenario is written as one compact string (see `parse_scenario` and docs/faults.md):

    none                                    no toxic
    redis:latency=5                         +5 ms on every chunk the Redis hop returns
    redis:latency=5:jitter=2:dir=both       5 ± 2 ms on requests and on responses
    llm:bandwidth=64                        responses at 64 KB/s per connection
    postgres:timeout=1000                   data dropped, connection closed after 1 s
    llm:reset_peer=200:toxicity=0.5         half the connections reset 200 ms after data
    redis:down                              the hop's listener closed: connections refused
    redis:latency=5+llm:latency=100         several toxics at once, joined with `+`

What toxiproxy actually does, read in its v2.12.0 source (toxics/*.go, toxic.go):

- A toxic acts on one direction of a connection: `dir=downstream` (upstream -> proxy, the
  responses; the default) or `dir=upstream` (proxy -> upstream, the requests). `dir=both`
  adds one toxic per direction, so a request/response round trip pays the latency twice.
- latency is applied to every chunk of data (one TCP read, up to 32 KiB) separately: each
  chunk leaves `latency` ± `jitter` ms after it arrived, and never before the chunk ahead of
  it. A small request/response pays it once per direction; a streamed response pays it per
  chunk, but chunks that arrive together overlap, so a stream of k chunks spread over T ms
  ends about `latency` after T, and with jitter drifts towards `latency + jitter`.
  Jitter is uniform in [latency - jitter, latency + jitter).
- bandwidth limits each connection and direction to `rate` KB/s on its own.
- timeout drops all data of the chosen direction and closes the connection `timeout` ms
  after the toxic started on it; 0 keeps it open and silent forever, so a request through it
  waits for the proxy's own timeout (600 s in proxy/config.yaml).
- reset_peer drops the first chunk of data and resets the connection (TCP RST) `timeout`
  ms later.
- toxicity draws once per connection and direction, not per request: the proxy pools its
  upstream connections, so toxicity=0.5 may toxify all, half or none of the requests of a
  cell. For per-request tails use the mock's latency distribution and spikes instead.
- down disables the hop: the listener closes and open connections are cut.

Connections opened before a toxic was added may stay untoxified (FIELD-NOTES), so the matrix
sets the toxics before each proxy start. `calibrate` measures what a toxic really adds per
round trip on each hop, for the run's calibration table.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from proxylab.errors import LabError
from proxylab.settings import LabSettings

logger = logging.getLogger(__name__)

# Hop name as the lab's settings and reports call it -> toxiproxy proxy name.
# No client->proxy hop on purpose: the load reaches the proxy directly (docs/faults.md,
# "Why there is no client->proxy hop").
HOPS = {"llm": "proxy_to_llm", "postgres": "proxy_to_postgres", "redis": "proxy_to_redis"}
# Kind -> (toxiproxy type, attribute the value goes into, unit of the value).
KINDS = {
    "latency": ("latency", "latency", "ms"),
    "bandwidth": ("bandwidth", "rate", "KB/s"),
    "timeout": ("timeout", "timeout", "ms"),
    "reset_peer": ("reset_peer", "timeout", "ms"),
    "down": (None, None, ""),
}
# Direction as written in a scenario -> toxiproxy streams.
DIRECTIONS = {"downstream": ("downstream",), "upstream": ("upstream",),
              "both": ("upstream", "downstream")}
# Kinds that make requests through the hop fail rather than slow down.
BREAKING_KINDS = frozenset({"timeout", "reset_peer", "down"})
NO_TOXIC = "none"

CALIBRATION_SAMPLES = 15
CALIBRATION_TIMEOUT_S = 2.0
API_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Toxic:
    """One fault on one hop; `value` is in the unit of its kind (KINDS), jitter in ms."""

    hop: str
    kind: str
    value: int = 0
    jitter_ms: int = 0
    direction: str = "downstream"
    toxicity: float = 1.0

    def spec(self) -> str:
        """The canonical scenario text of this toxic, defaults left out."""
        text = f"{self.hop}:{self.kind}"
        if self.kind != "down" and (self.value or self.kind in ("latency", "bandwidth", "timeout")):
            text += f"={self.value}"
        if self.jitter_ms:
            text += f":jitter={self.jitter_ms}"
        if self.direction != "downstream":
            text += f":dir={self.direction}"
        if self.toxicity != 1.0:
            text += f":toxicity={self.toxicity:g}"
        return text

    def slug(self) -> str:
        """The spec as a file-name-safe part of a configuration id."""
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.spec().replace("=", "")).strip("-")

    def streams(self) -> tuple[str, ...]:
        return DIRECTIONS[self.direction]

    def api_bodies(self) -> list[dict]:
        """The toxiproxy toxics (JSON bodies) this toxic becomes; none for `down`."""
        toxic_type, attribute, _unit = KINDS[self.kind]
        if toxic_type is None:
            return []
        attributes = {attribute: self.value}
        if self.kind == "latency":
            attributes["jitter"] = self.jitter_ms
        return [{"name": f"{self.hop}_{self.kind}_{stream}", "type": toxic_type, "stream": stream,
                 "toxicity": self.toxicity, "attributes": attributes} for stream in self.streams()]

    def expected_added_ms(self) -> float | None:
        """Latency one small request/response round trip should gain; None when not known.

        Unknown for other kinds, and for a toxicity below 1, which picks whole connections.
        """
        if self.kind != "latency" or self.toxicity != 1.0:
            return None
        return float(self.value * len(self.streams()))

    def describe(self) -> str:
        """One human line, e.g. `redis hop: latency 5 ms ± 2 ms on requests and responses`."""
        if self.kind == "down":
            return f"{self.hop} hop: down (connections refused)"
        _type, _attribute, unit = KINDS[self.kind]
        where = {"downstream": "responses", "upstream": "requests",
                 "both": "requests and responses"}
        text = f"{self.hop} hop: {self.kind.replace('_', ' ')} {self.value} {unit}"
        if self.jitter_ms:
            text += f" ± {self.jitter_ms} ms"
        text += f" on {where[self.direction]}"
        if self.toxicity != 1.0:
            text += f", {self.toxicity:.0%} of connections"
        return text

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "spec": self.spec()}


def parse_toxic(text: str) -> Toxic:
    """Parse `HOP:KIND[=VALUE][:OPTION=VALUE]...`; raise ValueError with a one-line reason."""
    parts = text.strip().split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"toxic {text!r}: write HOP:KIND[=VALUE][:OPTION=VALUE], "
                         f"e.g. redis:latency=5:jitter=2:dir=both")
    hop, kind_part, options = parts[0], parts[1], parts[2:]
    if hop not in HOPS:
        raise ValueError(f"toxic {text!r}: unknown hop {hop!r}; choose from {', '.join(HOPS)}")
    kind, _, raw_value = kind_part.partition("=")
    if kind not in KINDS:
        raise ValueError(f"toxic {text!r}: unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    fields: dict[str, object] = {"hop": hop, "kind": kind}
    if kind == "down":
        if raw_value or options:
            raise ValueError(f"toxic {text!r}: down takes no value and no options")
        return Toxic(hop, kind)
    if not raw_value and kind != "reset_peer":
        unit = KINDS[kind][2]
        raise ValueError(f"toxic {text!r}: {kind} needs a value in {unit}, e.g. {hop}:{kind}=5")
    fields["value"] = _whole_number(text, kind, raw_value or "0")
    if kind == "bandwidth" and fields["value"] == 0:
        raise ValueError(f"toxic {text!r}: bandwidth must be at least 1 KB/s")
    for option in options:
        name, _, raw = option.partition("=")
        if name == "jitter" and kind == "latency":
            fields["jitter_ms"] = _whole_number(text, name, raw)
        elif name == "dir":
            if raw not in DIRECTIONS:
                raise ValueError(f"toxic {text!r}: dir takes {', '.join(DIRECTIONS)}, got {raw!r}")
            fields["direction"] = raw
        elif name == "toxicity":
            fields["toxicity"] = _share(text, raw)
        else:
            allowed = ("jitter, " if kind == "latency" else "") + "dir, toxicity"
            raise ValueError(f"toxic {text!r}: unknown option {name!r} for {kind}; "
                             f"choose from {allowed}")
    return Toxic(**fields)  # type: ignore[arg-type]


def parse_scenario(text: str) -> tuple[Toxic, ...]:
    """Parse `none` or toxics joined by `+`; two toxics of one kind on one hop are an error."""
    text = text.strip()
    if text in (NO_TOXIC, ""):
        return ()
    toxics = tuple(parse_toxic(part) for part in text.split("+"))
    seen: set[tuple[str, str, str]] = set()
    for toxic in toxics:
        streams = {(toxic.hop, toxic.kind, stream) for stream in toxic.streams()}
        if streams & seen:
            raise ValueError(f"toxics {text!r}: {toxic.kind} on the {toxic.hop} hop twice "
                             f"in one direction; combine them into one")
        seen |= streams
    downs = {toxic.hop for toxic in toxics if toxic.kind == "down"}
    if any(toxic.hop in downs and toxic.kind != "down" for toxic in toxics):
        raise ValueError(f"toxics {text!r}: a hop that is down takes no other toxic")
    return toxics


def scenario_spec(toxics: tuple[Toxic, ...] | list[Toxic]) -> str:
    """The canonical text of a scenario: `none`, or the toxics' specs joined with `+`."""
    return "+".join(toxic.spec() for toxic in toxics) or NO_TOXIC


def breaks_requests(toxics: list[Toxic] | tuple[Toxic, ...]) -> bool:
    """Whether requests through these toxics may fail outright (not only slow down)."""
    return any(toxic.kind in BREAKING_KINDS for toxic in toxics)


def _whole_number(text: str, name: str, raw: str) -> int:
    if not re.fullmatch(r"\d+", raw):
        raise ValueError(f"toxic {text!r}: {name} takes a whole number >= 0, got {raw!r}")
    return int(raw)


def _share(text: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"toxic {text!r}: toxicity takes a share from 0 to 1, got {raw!r}")
    return value


# --- toxiproxy's API ----------------------------------------------------------------------


def apply(settings: LabSettings, toxics: list[Toxic] | tuple[Toxic, ...]) -> None:
    """Remove every toxic and enable every hop, set these, and read them back before any load.

    Changes go through toxiproxy-python; the read-back is a plain GET of the server's state,
    so a client library that silently dropped a field would be caught here.
    """
    import requests
    from toxiproxy import Toxiproxy
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

    server = Toxiproxy()
    # toxiproxy-python keeps the API's address in a class attribute.
    server.update_api_consumer(settings.host, settings.toxiproxy_api_port)
    try:
        server.reset()
        proxies = server.proxies()
        for toxic in toxics:
            proxy = proxies[HOPS[toxic.hop]]
            if toxic.kind == "down":
                proxy.disable()
            for body in toxic.api_bodies():
                try:
                    proxy.add_toxic(**body)
                except (InvalidToxic, NotFound, ProxyExists) as refusal:
                    raise LabError(f"toxiproxy refused {toxic.spec()!r}: {refusal}") from None
        state = {name: {"enabled": values["enabled"], "toxics": values["toxics"]}
                 for name, values in _read_proxies(settings).items()}
    except requests.RequestException as error:
        raise LabError(f"toxiproxy API unreachable on port {settings.toxiproxy_api_port}: "
                       f"{error}") from None
    expected, found = _expected_state(toxics), _found_state(state)
    if expected != found:
        raise LabError(f"toxiproxy did not take the toxics: wanted {sorted(expected)}, "
                       f"found {sorted(found)}")
    logger.info("toxics set: %s", scenario_spec(toxics))


def _read_proxies(settings: LabSettings) -> dict:
    import httpx

    try:
        response = httpx.get(settings.url(settings.toxiproxy_api_port, "/proxies"),
                             timeout=API_TIMEOUT_S)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise LabError(f"toxiproxy API unreachable on port {settings.toxiproxy_api_port}: "
                       f"{error}") from None
    return response.json()


def _expected_state(toxics) -> set[tuple]:
    state = {(HOPS[toxic.hop], "disabled") for toxic in toxics if toxic.kind == "down"}
    for toxic in toxics:
        for body in toxic.api_bodies():
            state.add((HOPS[toxic.hop], body["type"], body["stream"],
                       tuple(sorted(body["attributes"].items())), round(body["toxicity"], 4)))
    return state


def _found_state(proxies: dict) -> set[tuple]:
    state = {(name, "disabled") for name, proxy in proxies.items() if not proxy["enabled"]}
    for name, proxy in proxies.items():
        for toxic in proxy["toxics"]:
            state.add((name, toxic["type"], toxic["stream"],
                       tuple(sorted(toxic["attributes"].items())), round(toxic["toxicity"], 4)))
    return state


def active_toxics(settings: LabSettings) -> list[tuple[str, dict]]:
    """(proxy name, toxic) for every toxic the server holds now, read with a plain GET."""
    return [(name, toxic) for name, proxy in _read_proxies(settings).items() for toxic in proxy["toxics"]]


# --- calibration ---------------------------------------------------------------------------


def calibrate(settings: LabSettings, toxics: list[Toxic] | tuple[Toxic, ...],
              samples: int = CALIBRATION_SAMPLES) -> dict:
    """Time a small round trip on every hop, straight to the upstream and through toxiproxy.

    Redis PING, the mock's GET /health, Postgres `SELECT 1`; each on one open connection, so
    only the round trips are timed, never the connect. Direct and hop round trips alternate,
    so a busy machine slows both alike; `added_ms` is the difference of their medians. A hop
    that fails (down, reset, timeout) gets its error instead of figures.
    """
    hops = []
    for hop, (label, make_probe) in _CALIBRATION_PROBES.items():
        on_hop = [toxic for toxic in toxics if toxic.hop == hop]
        expected = [toxic.expected_added_ms() for toxic in on_hop]
        entry = {"hop": hop, "probe": label, "toxics": scenario_spec(on_hop),
                 "expected_added_ms": sum(expected) if expected and None not in expected else (
                     0.0 if not on_hop else None),
                 "direct_ms": None, "via_hop_ms": None, "added_ms": None, "samples": samples,
                 "error": None}
        try:
            entry["direct_ms"], entry["via_hop_ms"] = _medians_ms(
                lambda: make_probe(settings, direct=True),
                lambda: make_probe(settings, direct=False), samples)
            entry["added_ms"] = round(entry["via_hop_ms"] - entry["direct_ms"], 3)
        except Exception as error:  # any client's error: the hop is broken, which is data here
            entry["error"] = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        hops.append(entry)
    logger.info("calibration for %s: %s", scenario_spec(toxics),
                ", ".join(f"{h['hop']} +{h['added_ms']} ms" if h["error"] is None
                          else f"{h['hop']} failed" for h in hops))
    return {"toxics": scenario_spec(toxics), "hops": hops}


Probe = tuple[Callable[[], object], Callable[[], None]]


def _medians_ms(open_direct: Callable[[], Probe], open_hop: Callable[[], Probe],
                samples: int) -> tuple[float, float]:
    """Median round trip straight and through the hop, the two timed in turn."""
    send_direct, close_direct = open_direct()
    try:
        send_hop, close_hop = open_hop()
    except BaseException:
        close_direct()
        raise
    durations_ms: dict[str, list[float]] = {"direct": [], "hop": []}
    try:
        send_direct()  # the first round trip may pay for lazy setup; not timed
        send_hop()
        for _ in range(samples):
            for name, send in (("direct", send_direct), ("hop", send_hop)):
                started = time.perf_counter()
                send()
                durations_ms[name].append((time.perf_counter() - started) * 1000)
    finally:
        close_direct()
        close_hop()
    return (round(statistics.median(durations_ms["direct"]), 3),
            round(statistics.median(durations_ms["hop"]), 3))


def _redis_probe(settings: LabSettings, direct: bool):
    import redis

    port = settings.redis_port if direct else settings.redis_hop_port
    client = redis.Redis(host=settings.host, port=port, socket_timeout=CALIBRATION_TIMEOUT_S,
                         socket_connect_timeout=CALIBRATION_TIMEOUT_S)
    client.ping()
    return client.ping, client.close


def _llm_probe(settings: LabSettings, direct: bool):
    import httpx

    port = settings.mock_llm_port if direct else settings.llm_hop_port
    client = httpx.Client(base_url=settings.url(port), timeout=CALIBRATION_TIMEOUT_S)

    def send() -> None:
        client.get("/health").raise_for_status()

    return send, client.close


def _postgres_probe(settings: LabSettings, direct: bool):
    import psycopg

    s = settings
    port = s.postgres_port if direct else s.postgres_hop_port
    connection = psycopg.connect(
        host=s.host, port=port, user=s.postgres_user, password=s.postgres_password,
        dbname=s.postgres_db, connect_timeout=max(1, int(CALIBRATION_TIMEOUT_S)), autocommit=True,
        options=f"-c statement_timeout={int(CALIBRATION_TIMEOUT_S * 1000)}")

    def send() -> None:
        connection.execute("SELECT 1").fetchone()

    return send, connection.close


_CALIBRATION_PROBES = {
    "llm": ("GET /health", _llm_probe),
    "postgres": ("SELECT 1", _postgres_probe),
    "redis": ("PING", _redis_probe),
}
