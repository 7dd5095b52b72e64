"""Tool formats: how a model writes the calls it makes, and how they are read back.

**The generic format**, for a model whose chat template knows no tools: the tools are
described in the system turn; the model answers a call as one JSON object,
`{"tool_calls": [{"name": "f", "arguments": {...}}]}`, which the grammar enforces
(`grammars.tool_call_grammar`): a named or required choice always yields a valid call, and
"auto" lets the model's first character choose between a call ("{") and a plain answer.
Earlier calls and their results are written into the conversation as the same JSON and as
"Result of ..." user turns (`chat_template.as_text`), so the model reads its format back.

**A template's own format** (`native_tool_syntax`): a template that renders tools itself
gets them, and the calls and results of the history, as it expects them, and the model
answers in the format it was trained on, which the grammar enforces the same way. One is
read today: Hermes's `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (Hermes 2 Pro
and 3, Qwen 2.5 and 3, and their fine-tunes), detected as llama.cpp's server detects it.
Templates with other formats (Llama 3.1's, Mistral's) get the generic one.

`ToolCallReader` turns the text of such an answer into OpenAI's tool-call deltas as it
streams: each call's id and name first, then its arguments in pieces."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from modules.llm.inference.events import (
    Event,
    Finished,
    Generation,
    TokenDelta,
    ToolCallDelta,
)
from modules.llm.inference.structured import Tool

CALLS_OPENING = re.compile(r'\s*\{\s*"tool_calls"\s*:\s*\[\s*')
CALL_HEAD = re.compile(
    r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=[{\[])', re.DOTALL
)
CALL_TAIL = re.compile(r"\s*\}\s*(?:,|(?P<end>\]))\s*")


@dataclass(frozen=True, slots=True)
class ToolSyntax:
    """How a model writes its tool calls around each call's `{"name": ..., "arguments":`."""

    name: str
    starts_calls: str  # an answer whose first non-blank character is this holds calls
    opening: re.Pattern[str]  # before the first call (and before each next, `reopens`)
    tail: re.Pattern[str]  # after a call's arguments; its group "end": no call follows
    reopens: bool
    # The grammar's text around calls (GBNF string literals' contents).
    before_call: str = ""
    after_call: str = ""


GENERIC = ToolSyntax("generic", "{", CALLS_OPENING, CALL_TAIL, reopens=False)
HERMES = ToolSyntax(
    "hermes",
    "<",
    re.compile(r"\s*<tool_call>\s*"),
    re.compile(r"\s*\}\s*</tool_call>\s*"),
    reopens=True,
    before_call="<tool_call>\\n",
    after_call="\\n</tool_call>",
)


def native_tool_syntax(template: str | None) -> ToolSyntax | None:
    """The tool format a chat template renders itself, where it is one this service reads."""
    if template and "<tool_call>" in template and "tools" in template:
        return HERMES
    return None


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def describe_tools(tools: Sequence[Tool], *, required: str | None, text_allowed: bool) -> str:
    """What the system turn says about the tools (`required`: the one function to call)."""
    lines = [
        "You can call functions. To call, answer with only this JSON object and nothing "
        'else: {"tool_calls": [{"name": "<function name>", "arguments": {<arguments>}}]}',
        "Functions:",
    ]
    for tool in tools:
        function = tool.function
        parameters = json.dumps(function.parameters or {"type": "object"}, separators=(",", ":"))
        description = f" {function.description}" if function.description else ""
        lines.append(f"- {function.name}:{description} Arguments (JSON schema): {parameters}")
    if required is not None:
        lines.append(f"Call {required} now.")
    elif text_allowed:
        lines.append(
            "Call a function only when you need its result; otherwise answer in plain text. "
            "After a function's result, answer the user."
        )
    else:
        lines.append("Call one of the functions now.")
    return "\n".join(lines)


@dataclass
class _Choice:
    """One choice's answer read so far (see `ToolCallReader`)."""

    text: str = ""
    read: int = 0  # how much of `text` is handled
    mode: str = "undecided"  # "text", "calls", "done"
    expect: str = "opening"  # in "calls": "opening", "head", "arguments", "tail"
    calls: int = 0  # calls started
    depth: int = 0  # within the arguments' JSON
    in_string: bool = False
    escaped: bool = False


class ToolCallReader:
    """A generation in a tool format, read as OpenAI's tool-call deltas. A plain answer
    (tool_choice "auto") passes through as text. Linear in the answer."""

    def __init__(self, generation: Generation, syntax: ToolSyntax = GENERIC) -> None:
        self._generation = generation
        self._syntax = syntax
        self._choices: dict[int, _Choice] = {}

    def cancel(self) -> None:
        self._generation.cancel()

    async def events(self) -> AsyncIterator[Event]:
        async for event in self._generation.events():
            if isinstance(event, TokenDelta):
                for out in self._read(event):
                    yield out
            elif isinstance(event, Finished):
                yield _with_tool_calls(event, self._choices)
            else:
                yield event

    def _read(self, delta: TokenDelta) -> list[Event]:
        choice = self._choices.setdefault(delta.choice, _Choice())
        if choice.mode == "text":
            return [delta]
        choice.text += delta.text
        if choice.mode == "undecided":
            stripped = choice.text.lstrip()
            if not stripped:
                return [TokenDelta("", delta.choice, delta.logprobs)] if delta.logprobs else []
            if not stripped.startswith(self._syntax.starts_calls):
                choice.mode = "text"
                return [TokenDelta(choice.text, delta.choice, delta.logprobs)]
            choice.mode = "calls"
        events: list[Event] = []
        _advance(choice, delta.choice, events, self._syntax)
        if delta.logprobs:  # no text to carry them: an empty delta does
            events.append(TokenDelta("", delta.choice, delta.logprobs))
        return events


def _advance(choice: _Choice, index: int, events: list[Event], syntax: ToolSyntax) -> None:
    """Read what arrived of a choice's calls, adding the deltas it makes to `events`."""
    text = choice.text
    while choice.mode == "calls":
        if choice.expect == "arguments":
            start = choice.read
            choice.read = end = _scan_arguments(choice, text)
            if end > start:
                piece = text[start:end]
                events.append(ToolCallDelta(choice.calls - 1, arguments=piece, choice=index))
            if choice.expect == "arguments":
                return  # the rest has not arrived
            continue
        pattern = {"opening": syntax.opening, "head": CALL_HEAD, "tail": syntax.tail}
        match = pattern[choice.expect].match(text, choice.read)
        if match is None:
            return
        choice.read = match.end()
        if choice.expect == "opening":
            choice.expect = "head"
        elif choice.expect == "tail":
            choice.expect = "opening" if syntax.reopens else "head"
            if match.groupdict().get("end"):
                choice.mode = "done"
        else:
            name = json.loads(f'"{match.group(1)}"')
            events.append(ToolCallDelta(choice.calls, id=new_call_id(), name=name, choice=index))
            choice.calls += 1
            choice.expect = "arguments"
            choice.depth = 0


def _scan_arguments(choice: _Choice, text: str) -> int:
    """Move through the arguments' JSON from `choice.read`; where it stops (at their end,
    or at the end of what arrived)."""
    position = choice.read
    while position < len(text):
        char = text[position]
        position += 1
        if choice.in_string:
            if choice.escaped:
                choice.escaped = False
            elif char == "\\":
                choice.escaped = True
            elif char == '"':
                choice.in_string = False
        elif char == '"':
            choice.in_string = True
        elif char in "{[":
            choice.depth += 1
        elif char in "}]":
            choice.depth -= 1
            if choice.depth == 0:
                choice.expect = "tail"
                return position
    return position


def _with_tool_calls(finished: Finished, choices: dict[int, _Choice]) -> Finished:
    """A choice that made calls and stopped finished for "tool_calls"."""
    reasons = list(finished.reasons)
    for index, choice in choices.items():
        if choice.calls and index < len(reasons) and reasons[index] == "stop":
            reasons[index] = "tool_calls"
    return replace(
        finished,
        finish_reason=reasons[0],
        choice_reasons=tuple(reasons) if finished.choice_reasons else (),
    )
