"""A generation's events gathered into whole answers, one per choice."""

from __future__ import annotations

from dataclasses import dataclass, field

from modules.llm.inference.events import (
    Finished,
    FinishReason,
    TokenDelta,
    TokenLogprob,
    ToolCallDelta,
)
from modules.llm.inference.structured import ToolCall


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(slots=True)
class _Parts:
    text: list[str] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)


class AnswerBuilder:
    """Collects text, tool-call pieces and logprobs by choice."""

    def __init__(self) -> None:
        self._choices: dict[int, _Parts] = {}

    def add(self, event: TokenDelta | ToolCallDelta) -> None:
        parts = self._choices.setdefault(event.choice, _Parts())
        if isinstance(event, TokenDelta):
            parts.text.append(event.text)
            parts.logprobs.extend(event.logprobs)
            return
        while len(parts.calls) <= event.index:
            parts.calls.append({"id": "", "name": "", "arguments": ""})
        call = parts.calls[event.index]
        call["id"] = event.id or call["id"]
        call["name"] = event.name or call["name"]
        call["arguments"] += event.arguments

    def text(self, choice: int = 0) -> str:
        parts = self._choices.get(choice)
        return "".join(parts.text) if parts else ""

    def tool_calls(self, choice: int = 0) -> tuple[ToolCall, ...]:
        parts = self._choices.get(choice)
        return tuple(ToolCall(**call) for call in parts.calls) if parts else ()

    def choices(self, finished: Finished) -> tuple[Choice, ...]:
        return tuple(
            Choice(
                index=index,
                text=self.text(index),
                finish_reason=reason,
                tool_calls=self.tool_calls(index),
                logprobs=tuple(self._choices[index].logprobs) if index in self._choices else (),
            )
            for index, reason in enumerate(finished.reasons)
        )
