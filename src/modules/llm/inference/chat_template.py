"""Chat prompts built with the model's own template, safe against forged roles.

The template is rendered with a placeholder in place of each message's content; the pieces
the template wrote are tokenized with special tokens parsed, the contents without. So text a
client sends can never become `<|im_start|>` or any other control token, whatever it spells.

A template that renders tools itself (`tool_format.native_tool_syntax`) gets the request's
tools and the history's calls and results as OpenAI's JSON; every string in them was
cleaned of control-token text by the sanitizer first (`turns/preparation.py`), as the
contents are. A template without tools reads them as text (`as_text`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from modules.llm.inference.structured import ToolCall
from modules.llm.inference.tool_format import ToolSyntax, native_tool_syntax

# Control characters that the sanitizer removes from every message, so no content holds them.
_OPEN, _CLOSE = "\x01", "\x02"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

# What a message is rendered after when its template overhead is measured (see
# `ChatPromptBuilder.message_tokens`), in order of preference: templates that refuse some
# orders (roles that must alternate, no system role) get the next one.
_OPENINGS: tuple[tuple[str, ...], ...] = (("system",), ("user",), ("user", "assistant"), ())
# Where no opening renders: a typical template's tokens around one message.
_FALLBACK_OVERHEAD = 8

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    # An assistant's calls (its content may then be empty), and the call a "tool"
    # message answers. A template that knows no tools never sees them: the turn service
    # writes them as text first (`turns/tools.py`).
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


def as_text(message: ChatMessage) -> ChatMessage:
    """A message of a conversation with tools as a template without tools reads it: calls
    as the generic tool format's JSON (`tool_format.py`), a result as a user turn."""
    if message.role == "tool":
        who = f" of call {message.tool_call_id}" if message.tool_call_id else ""
        return ChatMessage("user", f"Result{who}: {message.content}")
    if message.tool_calls:
        calls = [
            {"name": call.name, "arguments": _json_or_text(call.arguments)}
            for call in message.tool_calls
        ]
        text = json.dumps({"tool_calls": calls}, ensure_ascii=False)
        content = f"{message.content}\n{text}" if message.content else text
        return ChatMessage(message.role, content)
    return message


def _slot(index: int, message: ChatMessage, *, native: bool = False) -> dict[str, Any]:
    """A message as the template sees it: its content a placeholder (none when empty, so
    that `if message.content` reads false), and natively its calls and the call answered."""
    slot: dict[str, Any] = {
        "role": message.role,
        "content": f"{_OPEN}{index}{_CLOSE}" if message.content else "",
    }
    if native and message.tool_calls:
        slot["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                # Templates write `arguments | tojson`: an object, as llama.cpp gives them.
                "function": {"name": call.name, "arguments": _json_or_text(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if native and message.tool_call_id is not None:
        slot["tool_call_id"] = message.tool_call_id
    return slot


def _json_or_text(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


class ChatTemplateError(ValueError):
    pass


Tokenizer = Callable[[str, bool], list[int]]


class ChatPromptBuilder:
    """Renders messages with a Jinja chat template into prompt tokens."""

    def __init__(
        self,
        template: str | None,
        *,
        bos_token: str,
        eos_token: str,
        tokenize: Tokenizer,
        bos_id: int | None,
    ) -> None:
        def raise_exception(message: str) -> None:
            raise ChatTemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now(UTC).strftime(fmt)
        self._template = env.from_string(template or CHATML_TEMPLATE)
        # The tool format the template writes itself; None: the generic one, as text.
        self.tool_syntax: ToolSyntax | None = native_tool_syntax(template)
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._tokenize = tokenize
        self._bos_id = bos_id
        self._overheads: dict[str, int] = {}  # by role, see `message_tokens`

    def render_with_placeholders(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> str:
        """`tools` (OpenAI's JSON) reach a template with tools of its own, only."""
        extra: dict[str, Any] = {}
        if self.tool_syntax is None:
            slots = [_slot(i, as_text(m)) for i, m in enumerate(messages)]
        else:
            slots = [_slot(i, m, native=True) for i, m in enumerate(messages)]
            if tools:
                extra["tools"] = list(tools)
        try:
            return self._template.render(
                messages=slots,
                add_generation_prompt=True,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
                **extra,
            )
        except TemplateError as exc:
            raise ChatTemplateError(f"chat template failed: {exc}") from exc

    def render_text(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> str:
        """The prompt as text (for logs and tests); not what the model is fed."""
        messages = self._as_read(messages)
        rendered = self.render_with_placeholders(messages, tools)
        return _PLACEHOLDER.sub(lambda m: messages[int(m.group(1))].content, rendered)

    def build(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] = ()
    ) -> list[int]:
        messages = self._as_read(messages)
        rendered = self.render_with_placeholders(messages, tools)
        tokens: list[int] = []
        position = 0
        for match in _PLACEHOLDER.finditer(rendered):
            tokens += self._tokenize(rendered[position : match.start()], True)
            tokens += self._tokenize(messages[int(match.group(1))].content, False)
            position = match.end()
        tokens += self._tokenize(rendered[position:], True)
        if self._bos_id is not None and (not tokens or tokens[0] != self._bos_id):
            tokens.insert(0, self._bos_id)
        return tokens

    def _as_read(self, messages: Sequence[ChatMessage]) -> list[ChatMessage]:
        """The messages whose contents the placeholders stand for."""
        if self.tool_syntax is None:
            return [as_text(m) for m in messages]
        return list(messages)

    def message_tokens(self, message: ChatMessage) -> int:
        """The tokens `message` adds to a prompt that `build` makes: its content, tokenized
        as `build` does it (special tokens off), plus what the template writes around a
        message of its role, measured once per role. Exact for templates that write the
        same text around every message of a role (ChatML and most others); an estimate for
        the rest (the turn service checks the final prompt). Blocking: it tokenizes."""
        message = as_text(message)
        overhead = self._overheads.get(message.role)
        if overhead is None:
            overhead = self._overheads[message.role] = self._overhead(message.role)
        return overhead + len(self._tokenize(message.content, False))

    def _overhead(self, role: str) -> int:
        # The difference between an opening with and without one empty message of the role:
        # what a template writes once per prompt (BOS, a default system turn, the generation
        # prompt) cancels out.
        for roles in _OPENINGS:
            opening = [ChatMessage(r, "") for r in roles]
            try:
                return max(
                    0, len(self.build([*opening, ChatMessage(role, "")])) - len(self.build(opening))
                )
            except ChatTemplateError:
                continue
        return _FALLBACK_OVERHEAD
