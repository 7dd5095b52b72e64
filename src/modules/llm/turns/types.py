"""What a front end hands the turn service, and the sanitization report it gets back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import msgspec

from modules.llm.inference import SamplingParams, ToolCall


@dataclass(frozen=True, slots=True)
class InputMessage:
    role: str
    content: str
    field: str  # where the client put it, for error messages: "messages[2].content"
    # An assistant's earlier calls, and the call a "tool" message answers: client input
    # too, their arguments cleaned like any text.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One chat turn as any front end asks for it."""

    messages: list[InputMessage]
    system: str | None = None
    settings: SamplingParams = field(default_factory=SamplingParams)
    model: str | None = None
    conversation_id: uuid.UUID | None = None
    use_cache: bool = True
    profile: str | None = None
    # A plain completion (/v1/completions): the text as is, no template, no conversation.
    raw: bool = False
    # A model tried out (/llm/validate-model): that model only (no fallback), nothing
    # stored or cached.
    probe: bool = False
    # False: answered from the conversation's history (if any) but nothing is stored, and
    # a new conversation is not created (the Responses API's `store: false`).
    store: bool = True
    # Recall the k stored messages nearest to this turn's question from the caller's other
    # conversations into the system turn (0: none).
    memory: int = 0


class MessageSanitization(msgspec.Struct):
    index: int
    role: str
    actions: list[str]


class SanitizationReport(msgspec.Struct):
    changed: bool
    actions: list[str]
    messages: list[MessageSanitization]
