"""What an OpenAI-compatible server streams, read as this service's events: each chunk's
choices by their `index`, their text with its logprobs (chat's shape or the completions
one), the pieces of their tool calls, and their finish reasons."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modules.llm.inference.events import (
    FinishReason,
    TokenDelta,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)

Output = TokenDelta | ToolCallDelta
# Any other reason a server gives (content_filter, a legacy function_call...) is a stop.
_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


class ChunkReader:
    """One stream's chunks, in order. `reasons` holds each choice's finish reason so far;
    a call's `id` and `name` pass once, with its first piece, however often a server
    repeats them (clients that join the pieces would join those too)."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] = {}
        self.reasons: dict[int, FinishReason] = {}
        self._calls: set[tuple[int, int]] = set()  # (choice, call) seen

    def read(self, chunk: dict[str, Any]) -> Iterator[Output]:
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index") or 0)
            delta = choice.get("delta") or {}
            text = delta.get("content") or choice.get("text") or ""
            logprobs = _logprobs(choice.get("logprobs"))
            if text or logprobs:
                yield TokenDelta(text, index, logprobs)
            for position, call in enumerate(delta.get("tool_calls") or []):
                yield self._call(index, position, call)
            if reason := choice.get("finish_reason"):
                self.reasons[index] = _REASONS.get(reason, "stop")

    def _call(self, choice: int, position: int, call: dict[str, Any]) -> ToolCallDelta:
        index = position if call.get("index") is None else int(call["index"])
        function = call.get("function") or {}
        first = (choice, index) not in self._calls
        self._calls.add((choice, index))
        return ToolCallDelta(
            index,
            id=(call.get("id") or None) if first else None,
            name=(function.get("name") or None) if first else None,
            arguments=function.get("arguments") or "",
            choice=choice,
        )


def _logprobs(logprobs: dict[str, Any] | None) -> tuple[TokenLogprob, ...]:
    if not logprobs:
        return ()
    if "content" in logprobs:
        return tuple(_chat_logprob(entry) for entry in logprobs["content"] or [])
    return _completion_logprobs(logprobs)


def _chat_logprob(entry: dict[str, Any]) -> TokenLogprob:
    """Chat's shape: one entry a token, its alternatives in `top_logprobs`."""
    top = tuple(
        TopLogprob(other["token"], float(other["logprob"]), _bytes(other))
        for other in entry.get("top_logprobs") or []
    )
    return TokenLogprob(entry["token"], float(entry["logprob"]), _bytes(entry), top)


def _completion_logprobs(logprobs: dict[str, Any]) -> tuple[TokenLogprob, ...]:
    """The completions shape: parallel lists, `tokens`, `token_logprobs`, and
    `top_logprobs` of `{token: logprob}` maps (null where there are none)."""
    tokens = logprobs.get("tokens") or []
    chosen = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    result = []
    for i, (token, logprob) in enumerate(zip(tokens, chosen, strict=False)):
        top = (tops[i] if i < len(tops) else None) or {}
        others = tuple(TopLogprob(t, float(v), tuple(t.encode())) for t, v in top.items())
        result.append(TokenLogprob(token, float(logprob), tuple(token.encode()), others))
    return tuple(result)


def _bytes(entry: dict[str, Any]) -> tuple[int, ...]:
    # A server that sends no bytes (null, or none at all): the token's own UTF-8.
    raw = entry.get("bytes")
    return tuple(raw) if raw is not None else tuple(str(entry["token"]).encode())
