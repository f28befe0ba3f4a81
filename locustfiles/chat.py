"""Chat-completion load on the LiteLLM proxy, one exact row per request.

Each simulated user sends its share of `--total-requests` back to back (no wait), then
stops; the run ends when every request has come back. User modes say what goes in the
request's `user` field, key modes which API key authenticates it. Each request is written
to `--raw-csv` (see src/proxylab/rawlog.py) with its exact latency; Locust's own, bucketed,
statistics are only for watching.

With `--stream` every request asks for Server-Sent Events and the user reads the stream to
its end: the raw table gets the time to the first content token (`ttft_ms`) and the time to
the last byte (`latency_ms`), both taken here, since Locust stops its clock at the headers.

Headless, as the lab runs it:
    locust -f locustfiles/chat.py --headless -u 20 -r 20 --host http://127.0.0.1:14000 \
        --total-requests 1000 --user-mode sequential --raw-csv /tmp/raw.csv
Interactive: drop `--headless`, open http://127.0.0.1:8089; the options below show there.

Distributed (`--master` plus `--worker` processes, as Compose's locust-master and
locust-worker): the master counts the requests its workers finish and stops the run at
`--total-requests`; requests that finish before its stop reaches the workers land too (with a
fast upstream a few per user; the lab's own matrix never runs distributed, it is for the web UI);
each worker writes its own raw table, `<raw-csv stem>.worker-<index>.csv`, and numbers its
users so that ids are unique across workers (user i of worker w of W is i*W - W + w + 1).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import logging
import random
import time
import uuid
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

logger = logging.getLogger(__name__)

USER_MODES = ("none", "sequential", "random", "created")
KEY_MODES = ("shared", "per_user")
RAW_COLUMNS = ("config_id", "user_index", "request_index", "sent_unix_s", "finished_unix_s",
               "latency_ms", "status_code", "ok", "error", "overhead_ms", "ttft_ms",
               "proxy_response_ms", "model")
OVERHEAD_HEADER = "x-litellm-overhead-duration-ms"
RESPONSE_DURATION_HEADER = "x-litellm-response-duration-ms"


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    # Locust's own parser (not an argument group) knows include_in_web_ui.
    group = parser
    group.add_argument("--total-requests", type=int, default=1000, include_in_web_ui=True,
                       help="requests in the whole run, shared out among the users")
    group.add_argument("--user-mode", choices=USER_MODES, default="none", include_in_web_ui=True,
                       help="none: no `user`; sequential: ids 1..N; random: a fresh id per "
                            "simulated user; created: ids from --users-file")
    group.add_argument("--key-mode", choices=KEY_MODES, default="shared", include_in_web_ui=True,
                       help="shared: --api-key for all; per_user: one key per user from --keys-file")
    group.add_argument("--api-key", default="sk-proxylab-master", help="the shared key")
    group.add_argument("--keys-file", default="", help="per_user keys, one per line")
    group.add_argument("--users-file", default="", help="created end-user ids, one per line")
    group.add_argument("--model", default="mock-gpt", include_in_web_ui=True)
    group.add_argument("--model-mix", default="", include_in_web_ui=True,
                       help="MODEL=SHARE,...: each request draws its model with these shares "
                            "(summing to 1) instead of --model")
    group.add_argument("--model-mix-seed", type=int, default=1,
                       help="seed of the draws; each user draws from its own seeded sequence")
    group.add_argument("--raw-csv", default="proxylab-raw.csv", help="where each request is written")
    group.add_argument("--config-id", default="interactive", help="written in every raw row")
    group.add_argument("--stream", action="store_true", default=False, include_in_web_ui=True,
                       help="stream the answers; record time to first token and to the last byte")


class _RawLog:
    """The raw table of this run: opened at test start, one line-buffered row per request."""

    def __init__(self) -> None:
        self.handle = None
        self.writer = None
        self.rows = 0
        self.target = 0

    def open(self, path: str, target: int) -> None:
        self.close()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Line buffering: a kill loses at most the request in flight, never a finished row.
        self.handle = open(path, "w", newline="", buffering=1)
        self.writer = csv.writer(self.handle)
        self.writer.writerow(RAW_COLUMNS)
        self.rows = 0
        self.target = target

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


raw_log = _RawLog()
user_numbers = itertools.count(1)


class _Distribution:
    """What a distributed run needs beyond one process: the worker layout and the master's count."""

    def __init__(self) -> None:
        self.workers = 1  # on a worker: how many workers the master had at the start
        self.finished = 0  # on the master: requests its workers reported done

    def global_index(self, runner, local_index: int) -> int:
        if not isinstance(runner, WorkerRunner):
            return local_index
        return (local_index - 1) * self.workers + max(runner.worker_index, 0) + 1


distribution = _Distribution()


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message("proxylab_done", _on_worker_done)
    elif isinstance(runner, WorkerRunner):
        runner.register_message("proxylab_layout", _on_layout)


def _on_layout(environment, msg, **_kwargs) -> None:
    distribution.workers = max(1, int(msg.data["workers"]))


def _on_worker_done(environment, msg, **_kwargs) -> None:
    distribution.finished += int(msg.data)
    total = environment.parsed_options.total_requests
    if distribution.finished == total:  # == : the stop is asked for once
        runner = environment.runner
        gevent.spawn_later(0, runner.quit if environment.parsed_options.headless else runner.stop)


def worker_raw_path(path: str, worker_index: int) -> str:
    raw = Path(path)
    return str(raw.with_name(f"{raw.stem}.worker-{worker_index}{raw.suffix or '.csv'}"))


def _lines(path: str) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()] if path else []


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    global user_numbers
    options = environment.parsed_options
    runner = environment.runner
    if options.total_requests <= 0:
        logger.error("--total-requests must be positive, got %s", options.total_requests)
        runner.quit()
        return
    try:
        ModelMix.parse(options.model_mix)
    except ValueError as error:
        logger.error("--model-mix: %s", error)
        runner.quit()
        return
    user_numbers = itertools.count(1)
    if isinstance(runner, MasterRunner):
        # Sent before the spawn messages, so every worker knows the layout before its users start.
        distribution.finished = 0
        runner.send_message("proxylab_layout", {"workers": runner.worker_count})
        return  # the master sends no requests and writes no table
    if isinstance(runner, WorkerRunner):
        # The master stops the run; a worker's own target stays out of reach.
        raw_log.open(worker_raw_path(options.raw_csv, runner.worker_index), 0)
        return
    raw_log.open(options.raw_csv, options.total_requests)


@events.test_stop.add_listener
def _on_test_stop(**_kwargs) -> None:
    raw_log.close()


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, response=None, context=None,
                exception=None, start_time=None, url=None, **_kwargs) -> None:
    if raw_log.writer is None or not context or "user_index" not in context:
        return
    if context.get("stream_headers"):
        return  # Locust's event at a stream's headers; the user fires the whole request's later
    status_code = getattr(response, "status_code", 0) or 0
    ok = exception is None and 200 <= status_code < 300
    headers = getattr(response, "headers", None) or {}
    overhead = headers.get(OVERHEAD_HEADER, "") if ok else ""
    proxy_response = headers.get(RESPONSE_DURATION_HEADER, "") if ok else ""
    ttft_ms = context.get("ttft_ms")
    finished = start_time + response_time / 1000.0
    raw_log.writer.writerow((context["config_id"], context["user_index"], context["request_index"],
                             f"{start_time:.6f}", f"{finished:.6f}", f"{response_time:.3f}",
                             status_code, int(ok), "" if ok else _error_text(exception, status_code),
                             _number(overhead), "" if ttft_ms is None else f"{ttft_ms:.3f}",
                             _number(proxy_response), context.get("model", "")))
    raw_log.rows += 1
    runner = context["runner"]
    if isinstance(runner, WorkerRunner):
        runner.send_message("proxylab_done", 1)
        return
    if raw_log.rows == raw_log.target:
        runner = context["runner"]
        # Leave the request handler first; then stop (web UI) or end the process (headless).
        gevent.spawn_later(0, runner.quit if context["headless"] else runner.stop)


def _number(header_value: str) -> str:
    """A header's number as written to the table; empty when absent or not a number ("None")."""
    try:
        float(header_value)
    except (TypeError, ValueError):
        return ""
    return header_value


class StreamError(Exception):
    """A streamed answer that broke off or carried an error event."""


def read_event_stream(response, started_perf_s: float) -> tuple[float | None, int]:
    """Read an SSE body to its end; return (ms to the first content token, bytes read).

    TODO: reads geventhttpclient's response (`_response`) directly: FastResponse offers only
    `iter_content`, whose reads wait for a full chunk of bytes and would delay every token.
    """
    body = response._response
    first_token_s = None
    length = 0
    done = False
    while line := body.readline(b"\n"):
        length += len(line)
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        if first_token_s is None or b'"error"' in payload:
            event = json.loads(payload)
            if isinstance(event, dict) and event.get("error"):
                raise StreamError(f"error event in stream: {str(event['error'])[:200]}")
            choices = event.get("choices") or [{}]
            if first_token_s is None and (choices[0].get("delta") or {}).get("content"):
                first_token_s = time.perf_counter()
    if not done:
        raise StreamError("stream ended without data: [DONE]")
    ttft_ms = None if first_token_s is None else (first_token_s - started_perf_s) * 1000
    return ttft_ms, length


def _error_text(exception, status_code: int) -> str:
    text = str(exception) if exception else f"HTTP {status_code}"
    return " ".join(text.split())[:300]


class ModelMix:
    """Models with their shares; `draw` picks one per request from a user's own generator."""

    def __init__(self, shares: dict[str, float]) -> None:
        self.names = list(shares)
        self.cumulative = list(itertools.accumulate(shares.values()))

    @classmethod
    def parse(cls, text: str) -> "ModelMix | None":
        """`a=0.9,b=0.1` -> a mix; empty text -> None. ValueError with the reason."""
        if not text.strip():
            return None
        shares: dict[str, float] = {}
        for part in text.split(","):
            name, _, share = (piece.strip() for piece in part.partition("="))
            if not name or not share or float(share) <= 0 or name in shares:
                raise ValueError(f"expected MODEL=SHARE with distinct models and shares > 0, "
                                 f"got {part.strip()!r}")
            shares[name] = float(share)
        if abs(sum(shares.values()) - 1.0) > 1e-6:
            raise ValueError(f"shares sum to {sum(shares.values()):g}, expected 1")
        return cls(shares)

    def draw(self, rng: random.Random) -> str:
        # The last bound is ~1; min() keeps a draw above a rounded-down sum on the last model.
        index = bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])
        return self.names[min(index, len(self.names) - 1)]


class ChatUser(FastHttpUser):
    """One simulated user: its own `user` id and key, a fixed quota of requests, no pauses."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = self.environment.parsed_options
        runner = self.environment.runner
        self.index = distribution.global_index(runner, next(user_numbers))
        users = max(runner.target_user_count or options.num_users or 1, 1)
        base, extra = divmod(options.total_requests, users)
        self.quota = base + (1 if self.index <= extra else 0)
        if isinstance(runner, WorkerRunner):
            self.quota = options.total_requests  # the master's count ends the run
        self.sent = 0
        self.end_user = self._end_user(options)
        api_key = options.api_key
        if options.key_mode == "per_user":
            keys = _lines(options.keys_file)
            if len(keys) < self.index:
                raise RuntimeError(f"--keys-file has {len(keys)} keys, user {self.index} needs one")
            api_key = keys[self.index - 1]
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.context_base = {"config_id": options.config_id, "user_index": self.index,
                             "runner": runner, "headless": bool(options.headless)}
        self.model = options.model
        self.model_mix = ModelMix.parse(options.model_mix)
        # One generator per user, seeded with the user's number: the same run draws the same
        # models however gevent interleaves the users.
        self.model_rng = random.Random(f"{options.model_mix_seed}:{self.index}")
        self.stream = bool(options.stream)

    def _end_user(self, options) -> str | None:
        if options.user_mode == "none":
            return None
        if options.user_mode == "sequential":
            return str(self.index)
        if options.user_mode == "random":
            return uuid.uuid4().hex
        created = _lines(options.users_file)
        if len(created) < self.index:
            raise RuntimeError(f"--users-file has {len(created)} ids, user {self.index} needs one")
        return created[self.index - 1]

    @task
    def chat(self) -> None:
        if self.sent >= self.quota:
            raise StopUser()
        self.sent += 1
        model = self.model_mix.draw(self.model_rng) if self.model_mix else self.model
        body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 16}
        if self.end_user is not None:
            body["user"] = self.end_user
        context = {**self.context_base, "request_index": self.sent, "model": model}
        if self.stream:
            self._stream_chat(body, context)
            return
        self.client.post("/v1/chat/completions", json=body, headers=self.headers, name="chat",
                         context=context)

    def _stream_chat(self, body: dict, context: dict) -> None:
        """Send one streamed request, read it to the end, and report it with its own clock."""
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        start_time = time.time()
        started = time.perf_counter()
        response = self.client.post("/v1/chat/completions", json=body, headers=self.headers,
                                    name="chat (headers)", stream=True,
                                    context={**context, "stream_headers": True})
        ttft_ms, length, exception = None, 0, getattr(response, "error", None)
        if exception is None and response.status_code == 200:
            try:
                ttft_ms, length = read_event_stream(response, started)
            except Exception as error:  # a broken stream is a failed request, not a crash
                exception = error
        elif exception is None:
            exception = StreamError(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
        response_time_ms = (time.perf_counter() - started) * 1000
        self.environment.events.request.fire(
            request_type="POST", name="chat", response_time=response_time_ms,
            response_length=length, response=response, exception=exception,
            context={**context, "ttft_ms": ttft_ms}, start_time=start_time, url=None)
