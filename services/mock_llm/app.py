"""A mock OpenAI-compatible LLM that answers fast, so the proxy in front of it is what we measure.

Routes:
    POST /v1/chat/completions   chat.completion JSON, or SSE chunks with `"stream": true`
    GET  /v1/models             the configured model names
    GET  /health                200 {"status": "ok"}
    GET  /metrics               Prometheus text: mock_llm_requests_total,
                                mock_llm_request_duration_seconds

Environment variables, read once at startup (see settings.py, where each is defined, and
README.md):
    MOCK_LLM_LATENCY_MS            fixed latency before the first byte (streamed: before the
                                   first chunk), as a non-blocking sleep; default 0
    MOCK_LLM_LATENCY_DISTRIBUTION  latency drawn per request instead: fixed, uniform, normal,
                                   lognormal, or replay:PATH of observed latencies
    MOCK_LLM_SPIKE_SHARE           share of requests whose latency is multiplied by
    MOCK_LLM_SPIKE_FACTOR          this factor
    MOCK_LLM_STREAM_CHUNKS         content chunks in a streamed answer; default 8
    MOCK_LLM_TOKEN_DELAY_MS        delay between consecutive streamed content chunks; default 0
    MOCK_LLM_STREAM_HEADERS_FIRST  streamed headers at once, the latency before the first chunk
    MOCK_LLM_COMPLETION_TOKENS     tokens (words) in every answer; default 16; must be at least
                                   MOCK_LLM_STREAM_CHUNKS
    MOCK_LLM_PROMPT_TOKENS         usage.prompt_tokens; default 0: estimated from the messages
    MOCK_LLM_ERROR_429_SHARE       shares of requests answered 429 at once, 500 after their
    MOCK_LLM_ERROR_500_SHARE       latency, or held MOCK_LLM_TIMEOUT_MS and answered 504
    MOCK_LLM_TIMEOUT_SHARE
    MOCK_LLM_TIMEOUT_MS
    MOCK_LLM_MODELS                comma-separated model names for /v1/models; default mock-gpt
    MOCK_LLM_SEED                  seed of every random draw; unset: new draws each start
    MOCK_LLM_BEHAVIOURS_FILE       JSON or YAML file of per-model settings

An invalid value stops the process at start with a one-line message on stderr and exit code 2.
Any model name in a request is answered and echoed back, listed or not.

Run natively:     python services/mock_llm/app.py --host 127.0.0.1 --port 18080
Run from here:    uvicorn app:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from behaviour import OK, RATE_LIMITED, SERVER_ERROR, Behaviour, Decision
from completions import (
    DONE_EVENT,
    Answer,
    ChunkWriter,
    completion_body,
    estimate_prompt_tokens,
    make_answer,
)
from metrics import Metrics, MetricsMiddleware
from settings import Settings, SettingsError, load_settings

logger = logging.getLogger("mock_llm.app")

# Exit status for a configuration error, as argparse uses for a usage error.
EXIT_BAD_SETTINGS = 2

# Above the 5 s idle expiry of httpx's pool (which the proxy uses): were the mock to close
# idle connections first, the proxy could send on a connection being closed and fail.
DEFAULT_KEEP_ALIVE_S = 75

HEALTH_BODY = orjson.dumps({"status": "ok"})


def _error(
    status_code: int, message: str, error_type: str = "invalid_request_error",
    code: str | None = None, headers: Mapping[str, str] | None = None,
) -> Response:
    """Return an error in OpenAI's shape, so clients report it as they would a real one."""
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return Response(
        orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers
    )


@dataclass(frozen=True)
class ModelPlan:
    """Everything about answering one model, prepared once: the answer and its timing."""

    answer: Answer
    behaviour: Behaviour
    # Converted once here: handlers work in seconds, settings speak milliseconds.
    token_delay_s: float
    headers_first: bool
    prompt_tokens: int  # 0: estimate from the request

    @classmethod
    def of(cls, settings: Settings) -> ModelPlan:
        return cls(
            answer=make_answer(settings.completion_tokens, settings.stream_chunks),
            behaviour=settings.behaviour(),
            token_delay_s=settings.token_delay_ms / 1000,
            headers_first=settings.stream_headers_first,
            prompt_tokens=settings.prompt_tokens,
        )


class MockLLM:
    """The route handlers, bound to the settings the process started with."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.default_plan = ModelPlan.of(settings)
        self.plans = {name: ModelPlan.of(model) for name, model in settings.per_model.items()}
        # One generator for every draw; with MOCK_LLM_SEED a run's draws repeat.
        self.rng = random.Random(settings.seed)
        created_s = int(time.time())
        models = [
            {"id": name, "object": "model", "created": created_s, "owned_by": "proxylab"}
            for name in settings.all_models()
        ]
        self.models_body = orjson.dumps({"object": "list", "data": models})

    @staticmethod
    async def wait_latency(latency_s: float) -> None:
        """Sleep a request's drawn latency without blocking the event loop."""
        if latency_s > 0:
            await asyncio.sleep(latency_s)

    async def chat_completions(self, request: Request) -> Response:
        """Answer a chat completion, whole or as Server-Sent Events, or fail it as drawn."""
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _error(400, "request body is not valid JSON")
        if not isinstance(payload, dict):
            return _error(400, "request body must be a JSON object")

        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "'model' must be a non-empty string")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list")

        plan = self.plans.get(model, self.default_plan)
        decision = plan.behaviour.draw(self.rng)
        if decision.outcome != OK:
            return await self._fail(decision)
        prompt_tokens = plan.prompt_tokens or estimate_prompt_tokens(messages)

        if payload.get("stream") is True:
            stream_options = payload.get("stream_options")
            include_usage = (
                isinstance(stream_options, dict) and stream_options.get("include_usage") is True
            )
            first_chunk_wait_s = decision.latency_s if plan.headers_first else 0.0
            if not plan.headers_first:
                await self.wait_latency(decision.latency_s)
            return StreamingResponse(
                self._stream(plan, model, prompt_tokens, include_usage, first_chunk_wait_s),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )

        await self.wait_latency(decision.latency_s)
        return Response(
            completion_body(model, prompt_tokens, plan.answer), media_type="application/json"
        )

    async def _fail(self, decision: Decision) -> Response:
        """Answer a request drawn to fail: 429 at once, 500 after its latency, 504 after a hold."""
        await self.wait_latency(decision.latency_s)
        if decision.outcome == RATE_LIMITED:
            return _error(
                429, "Rate limit reached (injected by the mock)", "requests",
                "rate_limit_exceeded", headers={"retry-after": "1"},
            )
        if decision.outcome == SERVER_ERROR:
            return _error(500, "Internal error (injected by the mock)", "server_error")
        return _error(504, "Timed out (injected by the mock)", "timeout")

    async def _stream(
        self, plan: ModelPlan, model: str, prompt_tokens: int, include_usage: bool,
        first_chunk_wait_s: float,
    ) -> AsyncIterator[bytes]:
        """Yield the SSE events: role, content chunks, finish, usage if asked, [DONE].

        The first content chunk leaves `first_chunk_wait_s` after the headers, each later one
        `token_delay_s` after the one before: k chunks end (k - 1) token delays after the first.
        """
        await self.wait_latency(first_chunk_wait_s)
        writer = ChunkWriter(model, include_usage)
        yield writer.delta_event({"role": "assistant", "content": ""})

        for index, piece in enumerate(plan.answer.pieces):
            if index > 0 and plan.token_delay_s > 0:
                await asyncio.sleep(plan.token_delay_s)
            yield writer.delta_event({"content": piece})

        yield writer.delta_event({}, finish_reason="stop")
        if include_usage:
            yield writer.usage_event(prompt_tokens, plan.answer.completion_tokens)
        yield DONE_EVENT

    async def models(self, request: Request) -> Response:
        """List the configured model names."""
        return Response(self.models_body, media_type="application/json")

    async def health(self, request: Request) -> Response:
        """Report that the process serves requests."""
        return Response(HEALTH_BODY, media_type="application/json")


async def _warm_up_streaming() -> None:
    """Send one streamed response into a null sink, so the first real one is not slow.

    Starlette streams inside an anyio task group, and anyio imports its stream and socket
    modules on first use: 130 ms measured on the lab machine, which would otherwise land on
    the first streamed request of every run.
    """

    async def one_event() -> AsyncIterator[bytes]:
        yield DONE_EVENT

    async def wait_for_disconnect() -> Message:
        # Cancelled by the task group once the response has been sent.
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def discard(message: Message) -> None:
        pass

    # The ASGI spec version uvicorn announces, which selects Starlette's task-group path.
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}
    await StreamingResponse(one_event())(scope, wait_for_disconnect, discard)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Warm up before uvicorn accepts connections; nothing to clean up at shutdown."""
    await _warm_up_streaming()
    yield


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI app for the given settings, with a fresh metrics registry."""
    handlers = MockLLM(settings)
    metrics = Metrics()
    routes = [
        Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/v1/models", handlers.models, methods=["GET"]),
        Route("/health", handlers.health, methods=["GET"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
    ]
    middleware = [Middleware(MetricsMiddleware, metrics=metrics)]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def settings_or_exit(environ: Mapping[str, str] = os.environ) -> Settings:
    """Load the settings, or print the one-line reason to stderr and exit with status 2."""
    try:
        return load_settings(environ)
    except SettingsError as error:
        print(f"mock_llm: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_SETTINGS) from None


def __getattr__(name: str) -> Any:
    """Build the module's `app` on first access, for `uvicorn app:app`.

    Built lazily rather than at import, so that `python app.py` reads the environment once,
    after its arguments, and importing this module has no side effects.
    """
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    application = create_app(settings_or_exit())
    globals()["app"] = application
    return application


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; settings of the answers come from the environment only."""
    parser = argparse.ArgumentParser(
        description="Mock OpenAI-compatible LLM (configured by MOCK_LLM_* variables).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=18080, help="port to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout-keep-alive-s",
        type=int,
        default=DEFAULT_KEEP_ALIVE_S,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level of the mock and of uvicorn (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the mock under uvicorn: one worker, uvloop, httptools, no access log."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    settings = settings_or_exit()
    logger.info("starting on %s:%d with %s", args.host, args.port, settings)

    # One worker on purpose: the lab runs on two cores, and the proxy needs the other one.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        workers=1,
        access_log=False,
        # Nothing sits in front of the mock whose X-Forwarded-* headers it should trust.
        proxy_headers=False,
        log_level=args.log_level,
        timeout_keep_alive=args.timeout_keep_alive_s,
        # Bounded, so stopping the mock never hangs on a slow stream.
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
