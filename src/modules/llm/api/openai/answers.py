"""A turn's answer in OpenAI's shapes: whole (`chat_completion`, `text_completion`) and as
stream chunks (`ChatChunks`, `TextChunks`), every choice with its tool calls and logprobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from modules.llm.api.openai.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChoiceLogprobs,
    ChunkChoice,
    TextChoice,
    TextCompletion,
    TextLogprobs,
    TokenLogprobOut,
    TopLogprobOut,
)
from modules.llm.api.openai.translate import finish_reason
from modules.llm.api.schemas import Usage
from modules.llm.inference import Completion, Finished, TokenDelta, TokenLogprob, ToolCallDelta


@dataclass(frozen=True, slots=True)
class AnswerIds:
    """What every chunk and whole answer of one request repeats."""

    id: str
    created: int
    model: str
    conversation_id: uuid.UUID | None = None


def chat_logprobs(logprobs: Sequence[TokenLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=entry.token,
                logprob=entry.logprob,
                bytes=list(entry.bytes),
                top_logprobs=[
                    TopLogprobOut(token=top.token, logprob=top.logprob, bytes=list(top.bytes))
                    for top in entry.top
                ],
            )
            for entry in logprobs
        ]
    )


def text_logprobs(logprobs: Sequence[TokenLogprob], offset: int = 0) -> TextLogprobs:
    """The legacy shape; `offset`: where the first token's text starts in the answer."""
    offsets = []
    for entry in logprobs:
        offsets.append(offset)
        offset += len(entry.token)
    return TextLogprobs(
        tokens=[entry.token for entry in logprobs],
        token_logprobs=[entry.logprob for entry in logprobs],
        top_logprobs=[{top.token: top.logprob for top in entry.top} for entry in logprobs],
        text_offset=offsets,
    )


def chat_completion(ids: AnswerIds, completion: Completion, *, logprobs: bool) -> ChatCompletion:
    choices = []
    for choice in completion.all_choices:
        calls = [call.openai() for call in choice.tool_calls]
        message = AssistantMessage(
            content=choice.text if choice.text or not calls else None, tool_calls=calls or None
        )
        choices.append(
            ChatChoice(
                index=choice.index,
                message=message,
                finish_reason=finish_reason(choice.finish_reason),
                logprobs=chat_logprobs(choice.logprobs) if logprobs else None,
            )
        )
    return ChatCompletion(
        id=ids.id,
        created=ids.created,
        model=ids.model,
        conversation_id=ids.conversation_id,
        choices=choices,
        usage=Usage.of(completion.finished),
    )


def text_completion(ids: AnswerIds, completion: Completion, *, logprobs: bool) -> TextCompletion:
    return TextCompletion(
        id=ids.id,
        created=ids.created,
        model=ids.model,
        choices=[
            TextChoice(
                index=choice.index,
                text=choice.text,
                finish_reason=finish_reason(choice.finish_reason),
                logprobs=text_logprobs(choice.logprobs) if logprobs else None,
            )
            for choice in completion.all_choices
        ],
        usage=Usage.of(completion.finished),
    )


@dataclass
class ChatChunks:
    """Chat completion chunks, one per event: each choice's first chunk says its role, a
    tool call's first piece its id and name."""

    ids: AnswerIds
    logprobs: bool
    _opened: set[int] = field(default_factory=set)

    def of(self, event: TokenDelta | ToolCallDelta) -> ChatCompletionChunk:
        delta: dict[str, Any] = {}
        if event.choice not in self._opened:
            self._opened.add(event.choice)
            delta["role"] = "assistant"
        chunk_logprobs = None
        if isinstance(event, TokenDelta):
            delta["content"] = event.text
            if self.logprobs:
                chunk_logprobs = chat_logprobs(event.logprobs)
        else:
            function: dict[str, Any] = {"arguments": event.arguments}
            call: dict[str, Any] = {"index": event.index, "function": function}
            if event.id is not None:
                call.update(id=event.id, type="function")
                function["name"] = event.name
            delta["tool_calls"] = [call]
        return self._chunk([ChunkChoice(event.choice, delta, None, chunk_logprobs)])

    def finished(self, finished: Finished) -> list[ChatCompletionChunk]:
        return [
            self._chunk([ChunkChoice(index, {}, finish_reason(reason))])
            for index, reason in enumerate(finished.reasons)
        ]

    def usage(self, finished: Finished) -> ChatCompletionChunk:
        final = self._chunk([])
        final.usage = Usage.of(finished)
        return final

    def _chunk(self, choices: list[ChunkChoice]) -> ChatCompletionChunk:
        ids = self.ids
        return ChatCompletionChunk(
            id=ids.id,
            created=ids.created,
            model=ids.model,
            conversation_id=ids.conversation_id,
            choices=choices,
        )


@dataclass
class TextChunks:
    """Text completion chunks, one per text delta."""

    ids: AnswerIds
    logprobs: bool
    _offsets: dict[int, int] = field(default_factory=dict)

    def of(self, event: TokenDelta | ToolCallDelta) -> TextCompletion:
        text = event.text if isinstance(event, TokenDelta) else ""
        chunk_logprobs = None
        if self.logprobs and isinstance(event, TokenDelta):
            offset = self._offsets.get(event.choice, 0)
            chunk_logprobs = text_logprobs(event.logprobs, offset)
            self._offsets[event.choice] = offset + len(text)
        return self._chunk([TextChoice(event.choice, text, None, chunk_logprobs)])

    def finished(self, finished: Finished) -> list[TextCompletion]:
        return [
            self._chunk([TextChoice(index, "", finish_reason(reason))])
            for index, reason in enumerate(finished.reasons)
        ]

    def usage(self, finished: Finished) -> TextCompletion:
        final = self._chunk([])
        final.usage = Usage.of(finished)
        return final

    def _chunk(self, choices: list[TextChoice]) -> TextCompletion:
        ids = self.ids
        return TextCompletion(id=ids.id, created=ids.created, model=ids.model, choices=choices)
