"""`proxylab import`: turn request logs made elsewhere into proxylab raw tables.

Two sources are understood:

- the text logs of the original LiteLLM latency investigation (one ``[OK]``/``[FAIL]``
  line per request, then a printed summary), kept so their printed figures can be
  checked against proxylab's own statistics;
- Locust's per-request CSV log from ``locust.contrib.csv_request_logger`` (Locust 2.47).

Both become a frame in the rawlog.RAW_COLUMNS schema; what a source does not record
(send times of the text logs, user numbers of the Locust log) is left unknown rather
than invented. Bad or truncated input raises ValueError naming the file and line.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from proxylab.rawlog import RAW_COLUMNS, RAW_DTYPES, write_header

logger = logging.getLogger(__name__)

SEED_LOG_FORMAT = "seed-log"
LOCUST_CSV_FORMAT = "locust-csv"

# Columns written by locust.contrib.csv_request_logger.CsvRequestLogger (CSV_COLUMNS in
# Locust 2.47). Copied rather than imported: importing locust monkey-patches the process.
LOCUST_CSV_COLUMNS: tuple[str, ...] = (
    "timestamp",  # when the request was sent, Unix epoch seconds rounded to 1 µs
    "request_type",  # HTTP method
    "name",  # request name as reported to Locust's statistics
    "response_time_ms",  # rounded to 0.01 ms
    "response_length",  # bytes
    "status_code",  # 0 when no response arrived
    "exception",  # empty for a successful request
)

# Stands for "not recorded" in the int64 user_index column (real users are 1-based).
UNKNOWN_USER_INDEX = 0

# The original script printed these thresholds, in this order, after every successful run.
SEED_THRESHOLDS_S: tuple[int, ...] = tuple(range(1, 11))

# Lines of the original investigation's log format. Latencies are printed in seconds
# with exactly three decimals; the milliseconds are kept as digits to stay exact.
_SETUP_RE = re.compile(r"^Creat(?:ing|ed) \d+ .+$")  # key / end-user set-up before the run
_BANNER_RE = re.compile(
    r"^=== (?P<requests>\d+) requests, (?P<users>\d+) users, (?P<pattern>.+) ===$"
)
_MODES_RE = re.compile(r"^User mode: (?P<user_mode>[^,]+)(?:, Key mode: (?P<key_mode>.+))?$")
_DEFINITION_RE = re.compile(r"^Latency = (?P<definition>.+)$")
_REQUEST_RE = re.compile(
    r"^  \[(?P<outcome>OK|FAIL)\] User (?P<user>\d+) request +(?P<request>\d+): "
    r"(?P<whole_s>\d+)\.(?P<milli>\d{3})s(?: +(?P<detail>.*))?$"
)
_STATUS_IN_DETAIL_RE = re.compile(r"\b(?:status(?:_code)?|HTTP)[ =:]*(?P<code>[1-5]\d\d)\b", re.I)
_COUNTS_RE = re.compile(r"^\[OK\] (?P<succeeded>\d+) succeeded, \[FAIL\] (?P<failed>\d+) failed$")
_LATENCY_HEADING = "Latency (successful):"
_FIGURE_RE = re.compile(r"^  (?P<name>min|avg|max|p95|p99): +(?P<value_s>\d+\.\d{3})s$")
_FIGURE_ORDER = ("min", "avg", "max", "p95", "p99")
_ABOVE_HEADING = "Requests above threshold (successful only):"
_ABOVE_RE = re.compile(
    r"^  Above (?P<threshold_s>\d+)s: (?P<count>\d+)/(?P<total>\d+) \((?P<percent>\d+\.\d)%\)$"
)


@dataclass(frozen=True)
class SeedLogHeader:
    """The run description printed above the request lines of an original log."""

    requests: int  # requests the run was configured to send
    users: int  # concurrent simulated users
    load_pattern: str  # e.g. "fire-as-fast-as-possible"
    user_mode: str | None  # None in logs older than the --user-mode option
    key_mode: str | None  # None in logs older than the --key-mode option
    latency_definition: str


@dataclass(frozen=True)
class PrintedThreshold:
    """One ``Above Ns: count/total (pct%)`` line as printed."""

    threshold_s: int
    count: int
    total: int
    percent: float  # printed with one decimal


@dataclass(frozen=True)
class PrintedSummary:
    """The summary block of an original log, as printed: seconds with three decimals.

    The latency figures and ``above`` are absent (None, empty) when nothing succeeded,
    because the original script printed only the counts then.
    """

    succeeded: int
    failed: int
    min_s: float | None
    avg_s: float | None
    max_s: float | None
    p95_s: float | None
    p99_s: float | None
    above: tuple[PrintedThreshold, ...]


@dataclass(frozen=True, eq=False)
class ImportedLog:
    """One imported log: its raw per-request frame plus what the source said about itself."""

    source_path: Path
    source_format: str  # SEED_LOG_FORMAT or LOCUST_CSV_FORMAT
    frame: pd.DataFrame  # rawlog.RAW_COLUMNS, in the source's row order
    header: SeedLogHeader | None = None  # seed logs only
    printed: PrintedSummary | None = None  # seed logs only


class _Lines:
    """A cursor over a text file's lines that words every parse error the same way."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.index = 0  # 0-based index of the next line to read

    def peek(self) -> str | None:
        return self.lines[self.index] if self.index < len(self.lines) else None

    def skip_blank(self) -> None:
        while self.peek() is not None and not self.peek().strip():
            self.index += 1

    def take(self, pattern: re.Pattern[str], expected: str) -> re.Match[str]:
        """Consume the next line, which must match ``pattern``."""
        line = self.peek()
        if line is None:
            raise self.error(f"file ends before {expected} (truncated?)")
        match = pattern.match(line)
        if match is None:
            raise self.error(f"expected {expected}, found {_clip(line)!r}")
        self.index += 1
        return match

    def take_exact(self, text: str) -> None:
        self.take(re.compile(re.escape(text) + "$"), repr(text))

    def error(self, message: str, line_number: int | None = None) -> ValueError:
        """A one-line ValueError naming the file and the (1-based) line."""
        number = self.index + 1 if line_number is None else line_number
        return ValueError(f"{self.path}:{number}: {message}")


def parse_seed_log(path: Path | str, config_id: str | None = None) -> ImportedLog:
    """Parse a text log of the original investigation into a raw frame and its summary.

    Latencies become exact integer milliseconds from the printed seconds; send and finish
    times were never printed and stay NaN. Status is 200 for ``[OK]`` and 0 for ``[FAIL]``
    unless text after the latency names an HTTP status; that text is a failure's error.
    ``config_id`` defaults to the file stem.
    """
    path = Path(path)
    lines = _Lines(path, path.read_text(encoding="utf-8", errors="replace"))
    config_id = path.stem if config_id is None else config_id

    header = _parse_seed_header(lines)
    rows = {column: [] for column in RAW_COLUMNS}
    while (line := lines.peek()) is not None and line.startswith("  ["):
        _append_seed_request(rows, lines.take(_REQUEST_RE, "a request line"), config_id)
    printed = _parse_seed_summary(lines, rows["ok"], header)

    frame = _raw_frame(rows)
    logger.info("imported %d requests from seed log %s", len(frame), path)
    return ImportedLog(path, SEED_LOG_FORMAT, frame, header, printed)


def parse_locust_csv_log(
    path: Path | str, config_id: str | None = None, request_name: str | None = None
) -> ImportedLog:
    """Parse Locust's per-request CSV log (csv_request_logger) into a raw frame.

    The log records no user, so user_index is UNKNOWN_USER_INDEX and request_index is the
    row's 1-based position in the file (completion order). finished_unix_s is derived as
    timestamp + response time. A request is ok when its exception field is empty.
    ``request_name`` keeps only rows of that Locust request name; ``config_id`` defaults
    to the file stem.
    """
    path = Path(path)
    config_id = path.stem if config_id is None else config_id
    rows = {column: [] for column in RAW_COLUMNS}
    names: set[str] = set()

    for line_number, record in _locust_records(path):
        name = record["name"]
        names.add(name)
        if request_name is not None and name != request_name:
            continue
        sent_unix_s = _parse_float(record["timestamp"], "timestamp", path, line_number)
        latency_ms = _parse_float(record["response_time_ms"], "response_time_ms", path, line_number)
        if latency_ms < 0:
            raise ValueError(f"{path}:{line_number}: negative response_time_ms {latency_ms}")
        status_code = _parse_int(record["status_code"], "status_code", path, line_number)
        error = record["exception"]

        rows["config_id"].append(config_id)
        rows["user_index"].append(UNKNOWN_USER_INDEX)
        rows["request_index"].append(len(rows["latency_ms"]) + 1)
        rows["sent_unix_s"].append(sent_unix_s)
        rows["finished_unix_s"].append(sent_unix_s + latency_ms / 1000.0)
        rows["latency_ms"].append(latency_ms)
        rows["status_code"].append(status_code)
        rows["ok"].append(0 if error else 1)
        rows["error"].append(error)
        rows["overhead_ms"].append(math.nan)

    if request_name is None and len(names) > 1:
        logger.warning(
            "%s mixes %d request names %s; all are summarized together, "
            "pass request_name to keep one",
            path, len(names), sorted(names),
        )
    frame = _raw_frame(rows)
    logger.info("imported %d requests from Locust CSV log %s", len(frame), path)
    return ImportedLog(path, LOCUST_CSV_FORMAT, frame)


def import_log(path: Path | str, config_id: str | None = None) -> ImportedLog:
    """Import either supported log, told apart by the Locust CSV header line."""
    path = Path(path)
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        first_line = handle.readline().lstrip("\ufeff").rstrip("\r\n")
    if first_line == ",".join(LOCUST_CSV_COLUMNS):
        return parse_locust_csv_log(path, config_id)
    return parse_seed_log(path, config_id)


def write_imported(frame: pd.DataFrame, out_dir: Path | str, *, overwrite: bool = False) -> Path:
    """Write an imported frame as ``raw.csv`` in ``out_dir``, columns in RAW_COLUMNS order.

    Unknown values (NaN) are written as empty fields. An existing raw.csv is kept unless
    ``overwrite`` is set, because it may be the only record of a native run.
    """
    missing = [column for column in RAW_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks raw columns {missing}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / "raw.csv"
    if raw_path.exists() and not overwrite:
        raise FileExistsError(f"{raw_path} exists; pass overwrite=True to replace it")

    write_header(raw_path)
    # csv.writer ends the header with \r\n; the rows follow suit so the file is uniform.
    frame[list(RAW_COLUMNS)].to_csv(
        raw_path, mode="a", header=False, index=False, na_rep="", lineterminator="\r\n"
    )
    logger.info("wrote %d imported requests to %s", len(frame), raw_path)
    return raw_path


def _parse_seed_header(lines: _Lines) -> SeedLogHeader:
    """Read the banner, the optional mode line and the latency definition."""
    lines.skip_blank()
    while (line := lines.peek()) is not None and _SETUP_RE.match(line):
        lines.index += 1
    banner = lines.take(_BANNER_RE, "the '=== N requests, U users, ... ===' banner")

    user_mode = key_mode = None
    if (line := lines.peek()) is not None and line.startswith("User mode:"):
        modes = lines.take(_MODES_RE, "'User mode: ...[, Key mode: ...]'")
        user_mode, key_mode = modes["user_mode"], modes["key_mode"]
    definition = lines.take(_DEFINITION_RE, "the 'Latency = ...' line")

    return SeedLogHeader(
        requests=int(banner["requests"]),
        users=int(banner["users"]),
        load_pattern=banner["pattern"],
        user_mode=user_mode,
        key_mode=key_mode,
        latency_definition=definition["definition"],
    )


def _append_seed_request(rows: dict[str, list], match: re.Match[str], config_id: str) -> None:
    """Add one parsed request line to the column lists."""
    is_ok = match["outcome"] == "OK"
    detail = match["detail"] or ""
    status = _STATUS_IN_DETAIL_RE.search(detail)
    if status is not None:
        status_code = int(status["code"])
    else:
        status_code = 200 if is_ok else 0

    rows["config_id"].append(config_id)
    rows["user_index"].append(int(match["user"]))
    rows["request_index"].append(int(match["request"]))
    rows["sent_unix_s"].append(math.nan)
    rows["finished_unix_s"].append(math.nan)
    rows["latency_ms"].append(float(int(match["whole_s"]) * 1000 + int(match["milli"])))
    rows["status_code"].append(status_code)
    rows["ok"].append(1 if is_ok else 0)
    rows["error"].append("" if is_ok else detail)
    rows["overhead_ms"].append(math.nan)


def _parse_seed_summary(
    lines: _Lines, ok_flags: list[int], header: SeedLogHeader
) -> PrintedSummary:
    """Read the summary block and check its counts against the request lines."""
    lines.skip_blank()
    counts_line_number = lines.index + 1
    counts = lines.take(_COUNTS_RE, "a request line or the '[OK] n succeeded, ...' line")
    succeeded, failed = int(counts["succeeded"]), int(counts["failed"])

    ok_lines = sum(ok_flags)
    fail_lines = len(ok_flags) - ok_lines
    if (succeeded, failed) != (ok_lines, fail_lines):
        raise lines.error(
            f"summary says {succeeded} succeeded, {failed} failed but the file has "
            f"{ok_lines} [OK] and {fail_lines} [FAIL] request lines",
            counts_line_number,
        )
    if header.requests != len(ok_flags):
        raise lines.error(
            f"banner announces {header.requests} requests but the file has {len(ok_flags)}",
            counts_line_number,
        )

    figures_s: dict[str, float | None] = dict.fromkeys(_FIGURE_ORDER)
    above: list[PrintedThreshold] = []
    if succeeded:
        # The original script prints figures only when something succeeded.
        lines.skip_blank()
        lines.take_exact(_LATENCY_HEADING)
        for name in _FIGURE_ORDER:
            figure = lines.take(_FIGURE_RE, f"the {name} line")
            if figure["name"] != name:
                raise lines.error(f"expected the {name} line, found {figure['name']}", lines.index)
            figures_s[name] = float(figure["value_s"])
        lines.skip_blank()
        lines.take_exact(_ABOVE_HEADING)
        for threshold_s in SEED_THRESHOLDS_S:
            share = lines.take(_ABOVE_RE, f"the 'Above {threshold_s}s' line")
            if int(share["threshold_s"]) != threshold_s:
                raise lines.error(f"expected the 'Above {threshold_s}s' line", lines.index)
            above.append(
                PrintedThreshold(
                    threshold_s=threshold_s,
                    count=int(share["count"]),
                    total=int(share["total"]),
                    percent=float(share["percent"]),
                )
            )

    lines.skip_blank()
    if lines.peek() is not None:
        raise lines.error(f"unexpected line after the summary: {_clip(lines.peek())!r}")

    return PrintedSummary(
        succeeded=succeeded,
        failed=failed,
        min_s=figures_s["min"],
        avg_s=figures_s["avg"],
        max_s=figures_s["max"],
        p95_s=figures_s["p95"],
        p99_s=figures_s["p99"],
        above=tuple(above),
    )


def _locust_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, record) for each data row after checking the header."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is not None and header[:1]:
            header[0] = header[0].lstrip("\ufeff")
        if header is None or tuple(header) != LOCUST_CSV_COLUMNS:
            raise ValueError(
                f"{path}:1: not a Locust CSV request log, expected header "
                f"{','.join(LOCUST_CSV_COLUMNS)}"
            )
        try:
            for record in reader:
                if not record:
                    continue
                if len(record) != len(LOCUST_CSV_COLUMNS):
                    raise ValueError(
                        f"{path}:{reader.line_num}: expected {len(LOCUST_CSV_COLUMNS)} fields, "
                        f"found {len(record)} (truncated?)"
                    )
                yield reader.line_num, dict(zip(LOCUST_CSV_COLUMNS, record))
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV: {error}") from error


def _parse_float(text: str, column: str, path: Path, line_number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{path}:{line_number}: {column} is not a finite number: {_clip(text)!r}")
    return value


def _parse_int(text: str, column: str, path: Path, line_number: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"{path}:{line_number}: {column} is not an integer: {_clip(text)!r}"
        ) from None


def _raw_frame(rows: dict[str, list]) -> pd.DataFrame:
    """Build a frame with RAW_COLUMNS in order and the dtypes read_raw would give."""
    columns = {}
    for column in RAW_COLUMNS:
        dtype = RAW_DTYPES[column]
        columns[column] = pd.Series(rows[column], dtype=object if dtype is str else dtype)
    return pd.DataFrame(columns)


def _clip(text: str, limit_chars: int = 80) -> str:
    """Shorten quoted input so an error message stays on one readable line."""
    return text if len(text) <= limit_chars else text[: limit_chars - 3] + "..."


_SWITCH_VALUES = {"on": True, "off": False}


def config_from_name(stem: str) -> dict:
    """Axes read from a log's file name, so verdicts can pair logs that differ in one switch.

    A name token followed by ``on`` or ``off`` is a switch (``callbacks_on_15_1`` gives
    ``callbacks: True``); the remaining tokens form ``variant`` (``15_1``). A name without
    a switch gives nothing, and its log is then compared with the first one imported.
    """
    tokens = [token for token in re.split(r"[_\-.\s]+", stem) if token]
    config: dict = {}
    rest: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1].lower() if index + 1 < len(tokens) else ""
        if following in _SWITCH_VALUES and token.isalpha() and token.lower() not in _SWITCH_VALUES:
            config[token.lower()] = _SWITCH_VALUES[following]
            index += 2
        else:
            rest.append(token)
            index += 1
    if config:
        config["variant"] = "_".join(rest) or None
    return config


@dataclass(frozen=True)
class PrintedCheck:
    """How the recomputed figures of imported seed logs compare with the printed ones."""

    mismatches: list[str]  # printed figures the recomputation does not reproduce
    within_rounding: list[str]  # counts that differ only by requests printed on a threshold


def import_into_result_dir(paths: list[Path], run_dir: Path) -> tuple[dict, PrintedCheck]:
    """Make a proxylab result directory from other tools' logs, one cell per log file.

    Returns the summary and, for seed logs, the check of every printed figure against the
    recomputation (no mismatches means the import agrees with the source's summary).
    """
    from proxylab import results

    if run_dir.exists():
        raise FileExistsError(f"{run_dir} exists; choose another output directory")
    imported = [import_log(path) for path in paths]
    identifiers = [log.frame["config_id"].iloc[0] if len(log.frame) else log.source_path.stem
                   for log in imported]
    if len(set(identifiers)) != len(identifiers):
        raise ValueError("two imported logs have the same name; rename one")
    summary = results.new_summary(
        run_id=run_dir.name, plan={}, runtime="import",
        database={"available": None, "reason": "imported logs: unknown"},
        order=identifiers, metadata={"sources": [str(log.source_path) for log in imported]})
    check = PrintedCheck(mismatches=[], within_rounding=[])
    for identifier, log in zip(identifiers, imported):
        cell_dir = run_dir / "cells" / identifier
        raw_path = write_imported(log.frame, cell_dir)
        figures = results.split_statistics(log.frame)
        warnings = [text for text in [results.failure_warning(log.frame)] if text]
        cell_check = None
        if log.printed is not None:
            ok_latency_ms = log.frame.loc[log.frame["ok"] == 1, "latency_ms"].to_numpy()
            mismatches, within_rounding = _printed_mismatches(log.printed, figures["all"],
                                                              ok_latency_ms)
            check.mismatches.extend(f"{identifier}: {text}" for text in mismatches)
            check.within_rounding.extend(f"{identifier}: {text}" for text in within_rounding)
            cell_check = {"mismatches": mismatches, "within_rounding": within_rounding}
        summary["cells"].append({
            "cell_id": identifier, "config_id": identifier,
            "config": {"source_format": log.source_format,
                       **({k: v for k, v in vars(log.header).items()} if log.header else {}),
                       **config_from_name(identifier)},
            "repeat": 1, "raw_table": str(raw_path.relative_to(run_dir)),
            "statistics": figures, "warnings": warnings,
            **({"printed_check": cell_check} if cell_check is not None else {}),
        })
    summary["status"] = "complete"
    summary["finished_at"] = results.now_iso()
    results.save(run_dir, summary)
    return summary, check


def _printed_mismatches(printed: PrintedSummary, figures: dict,
                        ok_latency_ms: np.ndarray) -> tuple[list[str], list[str]]:
    """Printed figures (seconds, 3 decimals) that the recomputed ones do not round to.

    Returns (mismatches, within_rounding). The log rounds each latency to 1 ms, so a
    request printed as exactly N.000 s may have been slower than N s: a printed "above N s"
    count between the strict recomputed count and that plus the requests printed exactly
    at N s is within the rounding, not a mismatch.
    """
    found, within_rounding = [], []
    if printed.succeeded != figures["succeeded"] or printed.failed != figures["failed"]:
        found.append(f"counts {printed.succeeded}/{printed.failed} printed, "
                     f"{figures['succeeded']}/{figures['failed']} recomputed")
    for name in ("min", "avg", "max", "p95", "p99"):
        value_s = getattr(printed, f"{name}_s")
        value_ms = figures[f"{name}_ms"]
        if value_s is not None and value_ms is not None and f"{value_s:.3f}" != f"{value_ms / 1000:.3f}":
            found.append(f"{name} {value_s:.3f} s printed, {value_ms / 1000:.3f} s recomputed")
    recomputed = {entry["threshold_s"]: entry["count"] for entry in figures["above"]}
    for threshold in printed.above:
        strict = recomputed.get(threshold.threshold_s)
        if strict == threshold.count:
            continue
        ties = int((ok_latency_ms == threshold.threshold_s * 1000).sum())
        if strict is not None and ties and strict <= threshold.count <= strict + ties:
            within_rounding.append(
                f"above {threshold.threshold_s:g} s: {threshold.count} printed, {strict} "
                f"recomputed, {ties} request(s) printed exactly at "
                f"{threshold.threshold_s:g}.000 s: matches within the log's 1 ms rounding")
        else:
            found.append(f"above {threshold.threshold_s:g} s: {threshold.count} printed, "
                         f"{strict} recomputed ({ties} request(s) printed exactly at the "
                         f"threshold)")
    return found, within_rounding
