"""Report sections on faults and attribution, rendered from `summary.json` alone.

`report.py` places them; the figures were measured by `attribution` (per cell) and
`toxics.calibrate` (per proxy start). Milliseconds throughout, as means per request.
"""

from __future__ import annotations

import json

from proxylab.toxics import NO_TOXIC, Toxic, parse_scenario

# A calibration whose added latency misses the toxic's own value by more than this is flagged.
CALIBRATION_TOLERANCE_MS = 2.0
CALIBRATION_TOLERANCE_SHARE = 0.2
TOP_REDIS_COMMANDS = 4
NO_DB = "no DB"


def markdown_sections(summary: dict) -> list[str]:
    """The "Faults" section (when any cell had a toxic) and "Where the time goes".

    Each section starts with a blank line, so the list can follow any other section.
    """
    cells = summary.get("cells", [])
    lines = _faults_section(summary)
    attributed = [cell for cell in cells if cell.get("attribution")]
    if not attributed:
        return lines
    lines += ["", "## Where the time goes", "",
              "Means per request over each cell. Client figures come from the raw table; "
              "LiteLLM's from its own histograms (Prometheus callback on only); Redis and DB "
              "work from the servers' counters between a probe before and after the cell, "
              "background work in that window included. The proxy's background rate of Redis "
              "commands is measured over a few idle seconds before each cell's load; its "
              "expected share of the cell's window is subtracted in \"Redis less background\". "
              "Right after a proxy start that window also catches work the warm-up left "
              "behind, so the first cell of each start can show a higher background.",
              ""]
    behaviours = (summary.get("metadata") or {}).get("mock_behaviours")
    if behaviours:
        models = ", ".join(f"`{name}` {json.dumps(entry, sort_keys=True)}"
                           for name, entry in behaviours["models"].items())
        lines += [f"Mock behaviours per model ({behaviours['path']}): {models}.", ""]
    mix = ((summary.get("plan") or {}).get("model_mix")) or {}
    if mix:
        lines += ["Model mix of the load: " + ", ".join(f"`{name}` {share:g}"
                                                        for name, share in mix.items()) + ".", ""]
    mock_env = (summary.get("metadata") or {}).get("mock_llm_env")
    if mock_env is not None:
        settings = ", ".join(f"`{name}={value}`" for name, value in mock_env.items())
        lines += [f"Mock LLM: {settings or 'its defaults (no added latency)'}.", ""]
    lines += _latency_table(attributed) + [""]
    lines += _work_table(attributed) + [""]
    lines += _critical_path_table(cells)
    lines += _statements_tables(attributed)
    while lines and lines[-1] == "":
        lines.pop()
    return lines


# --- faults ---------------------------------------------------------------------------------


def cell_toxics(config: dict) -> list[Toxic]:
    """The toxics a cell ran under: its scenario plus the older `llm_latency_ms` axis."""
    chosen = list(parse_scenario(config.get("toxics") or NO_TOXIC))
    if config.get("llm_latency_ms"):
        chosen.append(Toxic("llm", "latency", int(config["llm_latency_ms"])))
    return chosen


def _faults_section(summary: dict) -> list[str]:
    cells = summary.get("cells", [])
    calibrations = summary.get("calibration") or []
    faulted = {}
    for cell in cells:
        toxics = cell_toxics(cell.get("config") or {})
        if toxics:
            faulted.setdefault(cell["config_id"], toxics)
    if not faulted and not any(entry.get("toxics") != NO_TOXIC for entry in calibrations):
        return []
    lines = ["", "## Faults", ""]
    for config_id, toxics in faulted.items():
        lines.append(f"- `{config_id}`: " + "; ".join(toxic.describe() for toxic in toxics))
    if calibrations:
        lines += ["", "Calibration: one small round trip per hop, straight to the upstream and "
                  "through toxiproxy (medians; Redis PING, the mock's GET /health, Postgres "
                  "SELECT 1), measured after the toxics were set and before the proxy started.", "",
                  "| toxics | hop | probe | direct ms | via hop ms | added ms | expected ms |",
                  "|---|---|---|---|---|---|---|"]
    warnings = []
    for entry in calibrations:
        for hop in entry["hops"]:
            expected = hop.get("expected_added_ms")
            if hop.get("error"):
                figures = ["–", "–", f"failed: {hop['error']}"]
            else:
                figures = [_ms(hop["direct_ms"]), _ms(hop["via_hop_ms"]), _ms(hop["added_ms"])]
                if expected is not None and _off(hop["added_ms"], expected):
                    warnings.append(
                        f"WARNING: the {hop['hop']} hop under `{entry['toxics']}` added "
                        f"{hop['added_ms']:.1f} ms per round trip, not {expected:g} ms; figures "
                        f"of that configuration do not carry the intended fault; check the "
                        f"machine's load and toxiproxy's log")
            shown = "–" if expected is None else f"{expected:g}"
            lines.append(f"| `{entry['toxics']}` | {hop['hop']} | {hop['probe']} | "
                         + " | ".join(figures) + f" | {shown} |")
    return lines + ([""] + warnings if warnings else [])


def _off(added_ms: float, expected_ms: float) -> bool:
    allowed = max(CALIBRATION_TOLERANCE_MS, CALIBRATION_TOLERANCE_SHARE * expected_ms)
    return abs(added_ms - expected_ms) > allowed


# --- where the time goes --------------------------------------------------------------------


def _latency_table(cells: list[dict]) -> list[str]:
    header = ["cell", "client ms", "TTFT ms", "proxy total ms", "LLM API ms", "overhead ms",
              "queue ms", "client − proxy total ms", "proxy response header ms",
              "client − header ms", "in flight", "proxy CPU ms", "proxy peak RSS MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        figures = cell["attribution"]
        client = figures.get("client") or {}
        litellm = figures.get("litellm") or {}
        means = litellm.get("mean_ms") or {}
        if "absent" in litellm:
            proxy = ["callbacks off"] + ["–"] * 3
        elif "error" in litellm:
            proxy = [f"error: {litellm['error'][:60]}"] + ["–"] * 3
        else:
            proxy = [_ms(means.get(key)) for key in
                     ("total_latency", "llm_api_latency", "overhead", "queue_time")]
        rss = cell.get("proxy_peak_rss_bytes")
        row = [f"`{cell['cell_id']}`", _ms(client.get("mean_latency_ms")),
               _ms(client.get("mean_ttft_ms")), *proxy,
               _ms(client.get("client_minus_proxy_histogram_ms")),
               _ms(client.get("mean_proxy_response_header_ms")),
               _ms(client.get("client_minus_proxy_header_ms")),
               _number(client.get("mean_in_flight")), _ms(cell.get("proxy_cpu_ms_per_request")),
               "–" if rss is None else f"{rss / 2**20:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _work_table(cells: list[dict]) -> list[str]:
    header = ["cell", "LLM calls", "Redis commands", "Redis background /s",
              "Redis less background", "top Redis commands", "Redis server µs",
              "DB statements", "DB statement ms", "DB transactions", "rows fetched", "profile"]
    lines = ["Work per request:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in cells:
        figures = cell["attribution"]
        redis = figures.get("redis") or {}
        if "error" in redis:
            redis_cells = [f"error: {redis['error'][:60]}", "–", "–", "–", "–"]
        else:
            top = list((redis.get("by_command") or {}).items())[:TOP_REDIS_COMMANDS]
            named = ", ".join(f"{name} {entry['per_request']:.2f}" for name, entry in top)
            redis_cells = [_number(redis.get("commands_per_request")),
                           _number(redis.get("background_commands_per_s")),
                           _number(redis.get("commands_per_request_less_background")), named or "–",
                           _number(redis.get("server_us_per_request"))]
        llm = figures.get("llm") or {}
        llm_cell = (f"error: {llm['error'][:60]}" if "error" in llm
                    else _number(llm.get("calls_per_request")))
        database = figures.get("database") or {}
        if not database.get("available"):
            db_cells = [NO_DB] * 4
        elif "error" in database:
            db_cells = [f"error: {database['error'][:60]}"] + ["–"] * 3
        else:
            db_cells = [_number(database.get(key)) for key in
                        ("statements_per_request", "statement_ms_per_request",
                         "transactions_per_request", "rows_fetched_per_request")]
        profile = figures.get("profile")
        if not profile:
            link = "–"
        elif profile.get("path"):
            link = f"[flame graph]({profile['path']})"
        else:
            link = f"failed: {profile.get('error', '')[:60]}"
        lines.append("| " + " | ".join([f"`{cell['cell_id']}`", llm_cell, *redis_cells, *db_cells,
                                        link]) + " |")
    return lines


def latency_toxic(config: dict) -> tuple[str, float] | None:
    """(hop, ms added per round trip) when a cell's only fault is one full latency toxic."""
    toxics = cell_toxics(config)
    if len(toxics) != 1:
        return None
    expected = toxics[0].expected_added_ms()
    return None if expected is None or expected <= 0 else (toxics[0].hop, expected)


def critical_path(cells: list[dict]) -> list[dict]:
    """Round trips on the critical path implied by latency toxics, against baseline cells.

    For a cell whose only fault is a latency of L ms per round trip on one hop, and a cell of
    the same configuration without any fault, (mean latency − baseline mean) / L is how many
    round trips on that hop each request waited for in sequence. Repeats are averaged.
    """
    def key(config: dict) -> tuple:
        return tuple(sorted((name, str(value)) for name, value in config.items()
                            if name not in ("toxics", "llm_latency_ms")))

    baselines: dict[tuple, list[float]] = {}
    for cell in cells:
        config = cell.get("config") or {}
        average = cell["statistics"]["all"]["avg_ms"]
        if not cell_toxics(config) and average is not None:
            baselines.setdefault(key(config), []).append(average)
    grouped: dict[str, dict] = {}
    for cell in cells:
        config = cell.get("config") or {}
        found = latency_toxic(config)
        base = baselines.get(key(config))
        average = cell["statistics"]["all"]["avg_ms"]
        if found is None or not base or average is None:
            continue
        hop, added_ms = found
        entry = grouped.setdefault(cell["config_id"], {
            "config_id": cell["config_id"], "hop": hop, "toxic_ms": added_ms, "averages": [],
            "baseline_ms": sum(base) / len(base), "redis_commands": []})
        entry["averages"].append(average)
        redis = (cell.get("attribution") or {}).get("redis") or {}
        if redis.get("commands_per_request") is not None:
            entry["redis_commands"].append(redis["commands_per_request"])
    rows = []
    for entry in grouped.values():
        mean_ms = sum(entry["averages"]) / len(entry["averages"])
        commands = entry["redis_commands"]
        rows.append({"config_id": entry["config_id"], "hop": entry["hop"],
                     "toxic_ms": entry["toxic_ms"], "baseline_ms": round(entry["baseline_ms"], 3),
                     "mean_ms": round(mean_ms, 3),
                     "added_ms": round(mean_ms - entry["baseline_ms"], 3),
                     "round_trips": round((mean_ms - entry["baseline_ms"]) / entry["toxic_ms"], 3),
                     "repeats": len(entry["averages"]),
                     "redis_commands_per_request": (round(sum(commands) / len(commands), 3)
                                                    if commands else None)})
    return rows


def _critical_path_table(cells: list[dict]) -> list[str]:
    rows = critical_path(cells)
    if not rows:
        return []
    lines = ["Round trips on the critical path, implied by latency toxics: (mean latency − mean "
             "of the same configuration without faults) / latency added per round trip. Fewer "
             "round trips than commands means the rest ran off the request's path (in the "
             "background, or pipelined).", "",
             "| configuration | hop | toxic ms per round trip | baseline mean ms | mean ms | "
             "added ms | round trips per request | Redis commands per request |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['config_id']}` | {row['hop']} | {row['toxic_ms']:g} | "
                     f"{row['baseline_ms']:.1f} | {row['mean_ms']:.1f} | {row['added_ms']:.1f} | "
                     f"{row['round_trips']:.2f} | {_number(row['redis_commands_per_request'])} |")
    if any(row["repeats"] < 2 for row in rows):
        lines += ["", "WARNING: round trips from single cells run minutes apart: on a shared machine "
                  "the means of two cells drift apart by tens of milliseconds, which moves this "
                  "figure by one round trip or more at a 20 ms toxic. Rerun with `--repeats 3` "
                  "and a larger toxic (100 ms) before reading a figure below 2."]
    return lines + [""]


def _statements_tables(cells: list[dict]) -> list[str]:
    lines = []
    for cell in cells:
        database = cell["attribution"].get("database") or {}
        if not database.get("available") or "error" in database:
            continue
        for key, title in (("top_by_calls", "by calls"), ("top_by_time", "by time")):
            top = database.get(key) or []
            if not top:
                continue
            lines += [f"Top statements of `{cell['cell_id']}` {title}:", "",
                      "| calls per request | calls | total ms | mean ms | rows | statement |",
                      "|---|---|---|---|---|---|"]
            for entry in top:
                text = entry["query"].replace("|", "\\|")
                lines.append(f"| {_number(entry['calls_per_request'])} | {entry['calls']} | "
                             f"{entry['total_ms']:.1f} | {_ms(entry['mean_ms'])} | "
                             f"{entry['rows']} | `{text}` |")
            lines.append("")
    return lines


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value + 0.0:.1f}".replace("-0.0", "0.0")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"
