"""OpenAI-shaped bodies: chat.completion objects and chat.completion.chunk SSE events.

Only building bytes and dicts happens here; when to send them (latency, pacing) is decided in
`app.py`, so timing behaviour can change without touching the wire format.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

# Each word counts as one completion token; the text itself carries no meaning.
_WORDS = ("The", "mock", "model", "answers", "with", "this", "fixed", "text.")

# Roughly four characters per token for English text, as OpenAI's guidance has it.
_CHARS_PER_TOKEN = 4

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class Answer:
    """The fixed answer text, whole and split into the chunks of a streamed response."""

    content: str
    pieces: tuple[str, ...]
    completion_tokens: int


def make_answer(completion_tokens: int, stream_chunks: int) -> Answer:
    """Build an answer of `completion_tokens` words split evenly into `stream_chunks` pieces.

    The pieces concatenate to the whole content, and each holds at least one word when
    `stream_chunks <= completion_tokens` (which the settings guarantee).
    """
    words = [_WORDS[index % len(_WORDS)] for index in range(completion_tokens)]

    base, extra = divmod(completion_tokens, stream_chunks)
    pieces = []
    start = 0
    for chunk_index in range(stream_chunks):
        end = start + base + (1 if chunk_index < extra else 0)
        piece = " ".join(words[start:end])
        # Every piece after the first carries the space that joins it to the previous one.
        pieces.append(piece if chunk_index == 0 else " " + piece)
        start = end

    content = " ".join(words)
    return Answer(content=content, pieces=tuple(pieces), completion_tokens=completion_tokens)


def estimate_prompt_tokens(messages: list[Any]) -> int:
    """Estimate prompt tokens from the text of the messages: characters / 4, at least 1."""
    chars = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            # Multimodal form: a list of parts, of which only text parts count.
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return max(1, chars // _CHARS_PER_TOKEN)


def new_completion_id() -> str:
    """Return a fresh id in OpenAI's `chatcmpl-...` form."""
    return "chatcmpl-" + secrets.token_hex(12)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """Return the `usage` object of a completion."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(model: str, prompt_tokens: int, answer: Answer) -> bytes:
    """Return the JSON bytes of a whole (non-streamed) chat.completion."""
    body = {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(prompt_tokens, answer.completion_tokens),
    }
    return orjson.dumps(body)


class ChunkWriter:
    """Builds the SSE events of one streamed completion, all sharing one id and timestamp."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._base = {
            "id": new_completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._include_usage = include_usage

    def _event(self, choices: list[dict[str, Any]], usage_value: Any) -> bytes:
        chunk = dict(self._base, choices=choices)
        # OpenAI sends `"usage": null` on every chunk when usage was asked for.
        if self._include_usage:
            chunk["usage"] = usage_value
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def delta_event(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        """Return an event carrying one delta of the only choice."""
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event([choice], None)

    def usage_event(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """Return the closing usage event: no choices, only the token counts."""
        return self._event([], usage(prompt_tokens, completion_tokens))
