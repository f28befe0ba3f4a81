"""Tests of the mock LLM (services/mock_llm), run as a real process on a free 127.0.0.1 port.

Every mock is a subprocess started like the stack starts it, stopped by a fixture finalizer
even when a test fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

MOCK_APP = Path(__file__).resolve().parents[1] / "services" / "mock_llm" / "app.py"

STARTUP_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

# The shared mock differs from every default, so a test sees whether a variable was read.
SHARED_ENV = {
    "MOCK_LLM_STREAM_CHUNKS": "5",
    "MOCK_LLM_COMPLETION_TOKENS": "12",
    "MOCK_LLM_MODELS": "mock-gpt, mock-gpt-mini",
}

CHAT_REQUEST = {"model": "mock-gpt-mini", "messages": [{"role": "user", "content": "Say hello."}]}

# MOCK_LLM_LATENCY_MS=100 must make a request take this long: no less than the sleep (less a
# timer's rounding), and at most 150 ms more for scheduling on a busy two-core machine.
LATENCY_MS = 100
LATENCY_MIN_MS = 95
LATENCY_MAX_MS = 250

StartMock = Callable[..., str]


def _free_port() -> int:
    """Return a TCP port of 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _script_command(port: int) -> list[str]:
    """Return the command that runs the mock as a script, as the native stack does."""
    return [sys.executable, str(MOCK_APP), "--host", "127.0.0.1", "--port", str(port)]


def _uvicorn_command(port: int) -> list[str]:
    """Return the command the container runs (`uvicorn app:app` from the mock's folder)."""
    return [
        sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log",
    ]  # fmt: skip


def _mock_env(overrides: dict[str, str]) -> dict[str, str]:
    """Return this process's environment without MOCK_LLM_* variables, plus `overrides`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MOCK_LLM_")}
    env.update(overrides)
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a mock: SIGTERM, then SIGKILL if it is still running after STOP_TIMEOUT_S."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_healthy(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll /health until it answers 200; fail with the mock's log if it exits or is late."""
    deadline_s = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline_s:
        if process.poll() is not None:
            pytest.fail(
                f"mock exited with code {process.returncode} before it was healthy:\n"
                + log_path.read_text(errors="replace")
            )
        try:
            if httpx.get(base_url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(
        f"mock not healthy after {STARTUP_TIMEOUT_S:.0f} s:\n"
        + log_path.read_text(errors="replace")
    )


@pytest.fixture(scope="module")
def start_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartMock]:
    """Give a function that starts a mock with the given MOCK_LLM_* variables; stop all after."""
    processes: list[subprocess.Popen[bytes]] = []
    log_dir = tmp_path_factory.mktemp("mock_llm")

    def start(env: dict[str, str], under_uvicorn: bool = False) -> str:
        port = _free_port()
        log_path = log_dir / f"mock-{port}.log"
        command = _script_command(port)
        if under_uvicorn:
            command = _uvicorn_command(port)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                env=_mock_env(env),
                cwd=MOCK_APP.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(base_url, process, log_path)
        return base_url

    try:
        yield start
    finally:
        for process in processes:
            _stop(process)


@pytest.fixture(scope="module")
def mock_url(start_mock: StartMock) -> str:
    """Base URL of a mock shared by the tests that do not need their own settings."""
    return start_mock(SHARED_ENV)


def _sse_events(response: httpx.Response) -> Iterator[str]:
    """Yield the data fields of a Server-Sent Events response as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line.removeprefix("data: ")
        else:
            # Events are separated by one blank line; anything else is malformed.
            assert line == "", f"unexpected SSE line {line!r}"


def _stream_chunks(base_url: str, request: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Stream a chat completion; return its parsed chunks and its final event."""
    with httpx.stream(
        "POST", base_url + "/v1/chat/completions", json=request, timeout=10.0
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(_sse_events(response))
    return [orjson.loads(event) for event in events[:-1]], events[-1]


def _content_chunks(chunks: list[dict[str, Any]]) -> list[str]:
    """Return the non-empty content deltas of streamed chunks, in order."""
    return [
        chunk["choices"][0]["delta"]["content"]
        for chunk in chunks
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content")
    ]


def test_health(mock_url: str) -> None:
    response = httpx.get(mock_url + "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_chat_completion_has_openai_shape_and_echoes_model(mock_url: str) -> None:
    response = httpx.post(mock_url + "/v1/chat/completions", json=CHAT_REQUEST)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert abs(body["created"] - time.time()) < 60
    assert body["model"] == "mock-gpt-mini"

    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"

    usage = body["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_any_model_name_is_echoed(mock_url: str) -> None:
    request = dict(CHAT_REQUEST, model="not-listed/anywhere")
    response = httpx.post(mock_url + "/v1/chat/completions", json=request)
    assert response.status_code == 200
    assert response.json()["model"] == "not-listed/anywhere"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"messages": [{"role": "user", "content": "hi"}]}', b'{"model": "m"}'],
    ids=["not-json", "not-object", "no-model", "no-messages"],
)
def test_bad_request_gets_openai_error(mock_url: str, body: bytes) -> None:
    response = httpx.post(mock_url + "/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_stream_yields_configured_chunks_then_done(mock_url: str) -> None:
    chunks, last_event = _stream_chunks(mock_url, dict(CHAT_REQUEST, stream=True))

    assert last_event == "[DONE]"
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert {chunk["model"] for chunk in chunks} == {"mock-gpt-mini"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # Without stream_options.include_usage there is no usage, as from OpenAI.
    assert all("usage" not in chunk for chunk in chunks)

    contents = _content_chunks(chunks)
    assert len(contents) == 5
    whole = httpx.post(mock_url + "/v1/chat/completions", json=CHAT_REQUEST).json()
    assert "".join(contents) == whole["choices"][0]["message"]["content"]


def test_stream_with_include_usage_ends_with_usage_chunk(mock_url: str) -> None:
    request = dict(CHAT_REQUEST, stream=True, stream_options={"include_usage": True})
    chunks, last_event = _stream_chunks(mock_url, request)

    assert last_event == "[DONE]"
    assert len(_content_chunks(chunks)) == 5
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


def test_models_lists_configured_names(mock_url: str) -> None:
    response = httpx.get(mock_url + "/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["mock-gpt", "mock-gpt-mini"]
    assert {model["object"] for model in body["data"]} == {"model"}


def _scrape(base_url: str) -> dict[str, float]:
    """Return the mock's samples keyed as `name{label=value,...}`, labels sorted."""
    response = httpx.get(base_url + "/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{key}={value}" for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def test_metrics_count_requests_by_route_and_status(mock_url: str) -> None:
    ok_key = "mock_llm_requests_total{route=/v1/chat/completions,status=200}"
    bad_key = "mock_llm_requests_total{route=/v1/chat/completions,status=400}"
    count_key = "mock_llm_request_duration_seconds_count{route=/v1/chat/completions}"
    before = _scrape(mock_url)

    with httpx.Client(base_url=mock_url) as client:
        for _ in range(7):
            assert client.post("/v1/chat/completions", json=CHAT_REQUEST).status_code == 200
        assert client.post("/v1/chat/completions", content=b"{").status_code == 400
        assert client.get("/no/such/route").status_code == 404

    after = _scrape(mock_url)
    assert after[ok_key] - before.get(ok_key, 0) == 7
    assert after[bad_key] - before.get(bad_key, 0) == 1
    assert after[count_key] - before.get(count_key, 0) == 8
    assert after["mock_llm_requests_total{route=unmatched,status=404}"] >= 1
    # A stray path must not become a label value.
    assert not any("/no/such/route" in key for key in after)


def test_runs_under_uvicorn_cli(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_MODELS": "container-model"}, under_uvicorn=True)
    models = httpx.get(base_url + "/v1/models").json()
    assert [model["id"] for model in models["data"]] == ["container-model"]
    response = httpx.post(base_url + "/v1/chat/completions", json=CHAT_REQUEST)
    assert response.status_code == 200
    assert response.json()["model"] == "mock-gpt-mini"


def test_latency_ms_delays_each_request(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_LATENCY_MS": str(LATENCY_MS)})

    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        # The first request also opens the connection; time only the ones after it.
        client.post("/v1/chat/completions", json=CHAT_REQUEST)
        latencies_ms = []
        for _ in range(3):
            started_s = time.perf_counter()
            response = client.post("/v1/chat/completions", json=CHAT_REQUEST)
            latencies_ms.append((time.perf_counter() - started_s) * 1000)
            assert response.status_code == 200
        # Health checks and the like are not delayed.
        started_s = time.perf_counter()
        client.get("/health")
        health_ms = (time.perf_counter() - started_s) * 1000

    measured = ", ".join(f"{latency_ms:.1f}" for latency_ms in latencies_ms)
    assert min(latencies_ms) >= LATENCY_MIN_MS, f"measured {measured} ms"
    assert sorted(latencies_ms)[1] <= LATENCY_MAX_MS, f"median too high; measured {measured} ms"
    assert health_ms < LATENCY_MIN_MS, f"/health took {health_ms:.1f} ms"


def test_latency_does_not_block_other_requests(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_LATENCY_MS": str(LATENCY_MS)})
    concurrent = 10

    async def send_all() -> float:
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
            await client.get("/health")
            started_s = time.perf_counter()
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=CHAT_REQUEST) for _ in range(concurrent))
            )
            elapsed_ms = (time.perf_counter() - started_s) * 1000
        assert all(response.status_code == 200 for response in responses)
        return elapsed_ms

    elapsed_ms = asyncio.run(send_all())
    # Sleeps that blocked the loop would add up to concurrent * 100 ms = 1,000 ms.
    assert LATENCY_MIN_MS <= elapsed_ms <= 3 * LATENCY_MS, (
        f"{concurrent} concurrent requests took {elapsed_ms:.1f} ms"
    )


def test_token_delay_spaces_streamed_chunks(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_STREAM_CHUNKS": "4", "MOCK_LLM_TOKEN_DELAY_MS": "50"})
    request = dict(CHAT_REQUEST, stream=True)

    # Arrival times of the content chunks only: connecting and the request itself are not
    # part of the pacing, and on a busy machine they would blur it.
    arrivals_s = []
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        client.get("/health")
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            for event in _sse_events(response):
                if event != "[DONE]" and _content_chunks([orjson.loads(event)]):
                    arrivals_s.append(time.perf_counter())

    assert len(arrivals_s) == 4
    # Three gaps of 50 ms between four chunks, with the same tolerance as the latency test.
    spread_ms = (arrivals_s[-1] - arrivals_s[0]) * 1000
    assert 3 * 50 * 0.95 <= spread_ms <= 3 * 50 + 150, f"chunks spread over {spread_ms:.1f} ms"


@pytest.mark.parametrize(
    "env",
    [
        {"MOCK_LLM_LATENCY_MS": "abc"},
        {"MOCK_LLM_LATENCY_MS": "-5"},
        {"MOCK_LLM_TOKEN_DELAY_MS": ""},
        {"MOCK_LLM_STREAM_CHUNKS": "0"},
        {"MOCK_LLM_COMPLETION_TOKENS": "1.5"},
        {"MOCK_LLM_MODELS": "mock-gpt,,other"},
        {"MOCK_LLM_STREAM_CHUNKS": "9", "MOCK_LLM_COMPLETION_TOKENS": "8"},
    ],
    ids=["not-a-number", "negative", "empty", "zero-chunks", "fraction", "empty-name", "chunks"],
)
def test_invalid_env_exits_with_one_line(env: dict[str, str]) -> None:
    _assert_exits_with_one_line(_script_command(_free_port()), env)


def test_invalid_env_under_uvicorn_exits_with_one_line() -> None:
    _assert_exits_with_one_line(_uvicorn_command(_free_port()), {"MOCK_LLM_LATENCY_MS": "1s"})


def _assert_exits_with_one_line(command: list[str], env: dict[str, str]) -> None:
    """Run a mock that must refuse `env`: a non-zero exit and one line naming the variable."""
    try:
        result = subprocess.run(
            command,
            check=False,
            cwd=MOCK_APP.parent,
            env=_mock_env(env),
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        # subprocess.run has killed the mock by now.
        pytest.fail(f"mock still running after {STARTUP_TIMEOUT_S:.0f} s despite {env}")

    assert result.returncode != 0, f"mock started despite {env}; stderr: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert lines[0].startswith("mock_llm: error: ")
    assert any(name in lines[0] for name in env), lines[0]


def test_every_setting_is_documented() -> None:
    source = (MOCK_APP.parent / "settings.py").read_text()
    names = set(re.findall(r'"(MOCK_LLM_[A-Z0-9_]+)"', source))
    assert len(names) == 16, names
    for document in (MOCK_APP.parent / "README.md", MOCK_APP):
        missing = [name for name in sorted(names) if name not in document.read_text()]
        assert not missing, f"{document.name} does not document {missing}"


# --- latency distributions, spikes, errors, tokens, per-model behaviours, TTFT ----------------
#
# Timing tolerances, as above: no latency below its drawn value (less 5 % for timer rounding),
# and at most 150 ms more for scheduling on a busy two-core machine.
SLACK_MS = 150


def _timed_posts(base_url: str, count: int, request: dict[str, Any] = CHAT_REQUEST
                 ) -> list[tuple[int, float]]:
    """(status, ms) of `count` sequential chat completions on one warm connection."""
    results = []
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        client.get("/health")
        for _ in range(count):
            started_s = time.perf_counter()
            response = client.post("/v1/chat/completions", json=request)
            results.append((response.status_code, (time.perf_counter() - started_s) * 1000))
    return results


def test_uniform_latency_spreads_between_its_bounds(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_LATENCY_DISTRIBUTION": "uniform:20:120", "MOCK_LLM_SEED": "7"})

    latencies_ms = sorted(ms for _, ms in _timed_posts(base_url, 30))

    measured = ", ".join(f"{ms:.0f}" for ms in latencies_ms)
    assert latencies_ms[0] >= 20 * 0.95, f"below the lower bound: {measured}"
    assert latencies_ms[len(latencies_ms) // 2] <= 120 + SLACK_MS, f"median too high: {measured}"
    # 30 uniform draws over 100 ms: a spread under 40 ms has a probability far below 1e-6.
    assert latencies_ms[-1] - latencies_ms[0] >= 40, f"no spread: {measured}"


def test_lognormal_latency_has_its_median(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_LATENCY_DISTRIBUTION": "lognormal:60:0.5",
                           "MOCK_LLM_SEED": "3"})

    latencies_ms = sorted(ms for _, ms in _timed_posts(base_url, 41))

    median_ms = latencies_ms[20]
    # The sample median of 41 draws with sigma 0.5 lies within 0.75..1.33 x the median with
    # a probability above 99 %; the upper side gets the machine's slack as well.
    assert 60 * 0.75 <= median_ms <= 60 * 1.33 + 30, f"median {median_ms:.1f} ms"


def test_replayed_latencies_come_from_the_file(start_mock: StartMock, tmp_path: Path) -> None:
    observed = tmp_path / "observed.csv"
    # A proxylab raw table: only rows with ok=1 are replayed.
    observed.write_text("latency_ms,ok\n30,1\n150,1\n5000,0\n")
    base_url = start_mock({"MOCK_LLM_LATENCY_DISTRIBUTION": f"replay:{observed}",
                           "MOCK_LLM_SEED": "11"})

    latencies_ms = [ms for _, ms in _timed_posts(base_url, 16)]

    near = [min((abs(ms - 30), 30), (abs(ms - 150), 150))[1] for ms in latencies_ms]
    measured = ", ".join(f"{ms:.0f}" for ms in latencies_ms)
    assert all(ms < 150 + SLACK_MS for ms in latencies_ms), f"the failed row replayed: {measured}"
    assert all(ms >= target * 0.95 for ms, target in zip(latencies_ms, near)), measured
    # 16 draws from two values: both appear unless p = 2 * 0.5**16.
    assert set(near) == {30, 150}, f"only {set(near)} replayed: {measured}"


def test_spikes_multiply_a_share_of_latencies(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_LATENCY_MS": "10", "MOCK_LLM_SPIKE_SHARE": "0.5",
                           "MOCK_LLM_SPIKE_FACTOR": "15", "MOCK_LLM_SEED": "5"})

    latencies_ms = [ms for _, ms in _timed_posts(base_url, 30)]

    spiked = sum(ms >= 150 * 0.95 for ms in latencies_ms)
    measured = ", ".join(f"{ms:.0f}" for ms in latencies_ms)
    # Binomial(30, 0.5): 6..24 spikes with a probability above 99.9 %.
    assert 6 <= spiked <= 24, f"{spiked} of 30 spiked: {measured}"
    assert all(ms >= 10 * 0.95 for ms in latencies_ms), measured


def test_errors_are_injected_by_share_in_openai_shape(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_ERROR_429_SHARE": "0.3", "MOCK_LLM_ERROR_500_SHARE": "0.2",
                           "MOCK_LLM_TIMEOUT_SHARE": "0.1", "MOCK_LLM_TIMEOUT_MS": "40",
                           "MOCK_LLM_SEED": "13"})
    count = 300

    results = _timed_posts(base_url, count)

    statuses = [status for status, _ in results]
    for status, share in ((429, 0.3), (500, 0.2), (504, 0.1), (200, 0.4)):
        expected = count * share
        spread = 4 * (count * share * (1 - share)) ** 0.5  # four standard deviations
        seen = statuses.count(status)
        assert abs(seen - expected) <= spread, f"{seen} x {status}, expected {expected:.0f}"
    assert all(ms >= 40 * 0.95 for status, ms in results if status == 504)
    with httpx.Client(base_url=base_url) as client:
        bodies = {}
        while len(bodies) < 3:
            response = client.post("/v1/chat/completions", json=CHAT_REQUEST)
            if response.status_code != 200:
                bodies[response.status_code] = response
    assert bodies[429].json()["error"]["code"] == "rate_limit_exceeded"
    assert bodies[429].headers["retry-after"] == "1"
    assert bodies[500].json()["error"]["type"] == "server_error"
    assert bodies[504].json()["error"]["type"] == "timeout"


def test_token_usage_is_configurable(start_mock: StartMock) -> None:
    base_url = start_mock({"MOCK_LLM_PROMPT_TOKENS": "321", "MOCK_LLM_COMPLETION_TOKENS": "40",
                           "MOCK_LLM_STREAM_CHUNKS": "4"})
    usage = httpx.post(base_url + "/v1/chat/completions", json=CHAT_REQUEST).json()["usage"]
    assert usage == {"prompt_tokens": 321, "completion_tokens": 40, "total_tokens": 361}


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_behaviours_file_gives_models_their_own_settings(
        start_mock: StartMock, tmp_path: Path, suffix: str) -> None:
    behaviours = {"models": {"mock-slow": {"latency_ms": 120, "completion_tokens": 3,
                                           "stream_chunks": 3},
                             "mock-broken": {"error_500_share": 1.0}}}
    path = tmp_path / f"behaviours{suffix}"
    if suffix == ".json":
        path.write_bytes(orjson.dumps(behaviours))
    else:
        import yaml

        path.write_text(yaml.safe_dump(behaviours, sort_keys=False))
    base_url = start_mock({"MOCK_LLM_BEHAVIOURS_FILE": str(path), "MOCK_LLM_MODELS": "mock-gpt"})

    slow = _timed_posts(base_url, 2, dict(CHAT_REQUEST, model="mock-slow"))
    fast = _timed_posts(base_url, 2, dict(CHAT_REQUEST, model="mock-gpt"))
    broken = _timed_posts(base_url, 2, dict(CHAT_REQUEST, model="mock-broken"))

    assert [status for status, _ in slow + fast] == [200] * 4
    assert min(ms for _, ms in slow) >= 120 * 0.95, slow
    assert max(ms for _, ms in fast) < 120 * 0.95, fast
    assert [status for status, _ in broken] == [500, 500]
    answer = httpx.post(base_url + "/v1/chat/completions",
                        json=dict(CHAT_REQUEST, model="mock-slow")).json()
    assert answer["usage"]["completion_tokens"] == 3
    listed = [model["id"] for model in httpx.get(base_url + "/v1/models").json()["data"]]
    assert listed == ["mock-gpt", "mock-slow", "mock-broken"]


def _stream_timeline_ms(base_url: str, request: dict[str, Any]) -> tuple[float, float, float, int]:
    """(headers, first content chunk, end) in ms from sending, and the content chunks seen."""
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        client.get("/health")
        started_s = time.perf_counter()
        first_s = None
        chunks = 0
        with client.stream("POST", "/v1/chat/completions", json=request) as response:
            headers_s = time.perf_counter()
            for event in _sse_events(response):
                if event != "[DONE]" and _content_chunks([orjson.loads(event)]):
                    chunks += 1
                    first_s = first_s or time.perf_counter()
        end_s = time.perf_counter()
    assert first_s is not None
    return ((headers_s - started_s) * 1000, (first_s - started_s) * 1000,
            (end_s - started_s) * 1000, chunks)


@pytest.mark.parametrize("headers_first", [True, False])
def test_streamed_ttft_and_token_pacing(start_mock: StartMock, headers_first: bool) -> None:
    ttft_ms, tokens, delay_ms = 150, 6, 30
    base_url = start_mock({"MOCK_LLM_LATENCY_MS": str(ttft_ms),
                           "MOCK_LLM_TOKEN_DELAY_MS": str(delay_ms),
                           "MOCK_LLM_COMPLETION_TOKENS": str(tokens),
                           "MOCK_LLM_STREAM_CHUNKS": str(tokens),
                           "MOCK_LLM_STREAM_HEADERS_FIRST": str(headers_first).lower()})

    request = dict(CHAT_REQUEST, stream=True)
    headers_ms, first_ms, end_ms, chunks = _stream_timeline_ms(base_url, request)

    timeline = f"headers {headers_ms:.1f}, first token {first_ms:.1f}, end {end_ms:.1f} ms"
    assert chunks == tokens
    # k tokens are k - 1 delays apart: the end is TTFT + (k - 1) x delay.
    expected_end_ms = ttft_ms + (tokens - 1) * delay_ms
    assert ttft_ms * 0.95 <= first_ms <= ttft_ms + SLACK_MS, timeline
    assert expected_end_ms * 0.95 <= end_ms <= expected_end_ms + SLACK_MS, timeline
    if headers_first:
        assert headers_ms < ttft_ms / 2, timeline
    else:
        assert headers_ms >= ttft_ms * 0.95, timeline


@pytest.mark.parametrize(
    "env",
    [
        {"MOCK_LLM_LATENCY_DISTRIBUTION": "gamma:1:2"},
        {"MOCK_LLM_LATENCY_DISTRIBUTION": "uniform:50"},
        {"MOCK_LLM_LATENCY_DISTRIBUTION": "uniform:90:10"},
        {"MOCK_LLM_LATENCY_DISTRIBUTION": "replay:/no/such/file"},
        {"MOCK_LLM_LATENCY_DISTRIBUTION": "fixed:10", "MOCK_LLM_LATENCY_MS": "10"},
        {"MOCK_LLM_SPIKE_SHARE": "1.5"},
        {"MOCK_LLM_SPIKE_FACTOR": "0.5"},
        {"MOCK_LLM_STREAM_HEADERS_FIRST": "maybe"},
        {"MOCK_LLM_ERROR_429_SHARE": "0.6", "MOCK_LLM_ERROR_500_SHARE": "0.6"},
        {"MOCK_LLM_PROMPT_TOKENS": "-1"},
        {"MOCK_LLM_SEED": "abc"},
        {"MOCK_LLM_BEHAVIOURS_FILE": "/no/such/behaviours.json"},
    ],
    ids=["unknown-distribution", "arity", "low-above-high", "no-replay-file", "both-latencies",
         "share-above-1", "factor-below-1", "flag", "shares-sum", "negative-tokens", "seed",
         "no-behaviours-file"],
)
def test_invalid_new_settings_exit_with_one_line(env: dict[str, str]) -> None:
    _assert_exits_with_one_line(_script_command(_free_port()), env)


def test_behaviours_file_with_unknown_field_exits_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "behaviours.json"
    path.write_bytes(orjson.dumps({"models": {"mock-x": {"latency": 5}}}))
    _assert_exits_with_one_line(_script_command(_free_port()),
                                {"MOCK_LLM_BEHAVIOURS_FILE": str(path)})
