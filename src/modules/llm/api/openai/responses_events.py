"""A turn's events as the Responses API's stream, in OpenAI's order, each with its
`sequence_number`: response.created, response.in_progress; per output item
response.output_item.added, then for a message response.content_part.added,
response.output_text.delta..., response.output_text.done, response.content_part.done,
and for a function call response.function_call_arguments.delta...,
response.function_call_arguments.done; response.output_item.done; and last
response.completed (response.incomplete when it stopped short, response.failed when it
failed)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.response import ServerSentEventMessage

from modules.llm.api.openai.responses_answers import ResponseFrame, incomplete, item_id
from modules.llm.api.openai.responses_schemas import (
    FunctionCallOut,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseObject,
)
from modules.llm.api.streaming import sse
from modules.llm.inference import Finished, TokenDelta, ToolCallDelta

Event = dict[str, Any]


class ResponseEvents:
    """The stream of one response: the output items it has opened so far, the one still
    open, and the sequence number."""

    def __init__(self, frame: ResponseFrame) -> None:
        self.frame = frame
        self.items: list[OutputItem] = []
        self._open: int | None = None
        self._calls: dict[int, int] = {}  # a call's index in the answer -> its output index
        self._sequence = 0

    def message(self, event: Event) -> ServerSentEventMessage:
        """One event as SSE, numbered in order."""
        event["sequence_number"] = self._sequence
        self._sequence += 1
        return sse(event, event["type"])

    def started(self) -> list[Event]:
        response = _builtins(self.frame.in_progress())
        return [
            {"type": "response.created", "response": response},
            {"type": "response.in_progress", "response": response},
        ]

    def of(self, event: TokenDelta | ToolCallDelta) -> list[Event]:
        if event.choice != 0:  # the Responses API has one answer (no `n`)
            return []
        if isinstance(event, TokenDelta):
            return self._text(event.text)
        return self._call(event)

    def finished(self, response: ResponseObject) -> list[Event]:
        """The open item closed, then the whole response."""
        status = "incomplete" if response.status == "incomplete" else "completed"
        events = self._close(status)
        kind = "response.incomplete" if response.status == "incomplete" else "response.completed"
        events.append({"type": kind, "response": _builtins(response)})
        return events

    def response(self, finished: Finished) -> ResponseObject:
        """The whole response of the items streamed (their final status set)."""
        status = "incomplete" if incomplete(finished.finish_reason) else "completed"
        items = [
            msgspec.structs.replace(item, status=status) if index == self._open else item
            for index, item in enumerate(self.items)
        ]
        return self.frame.finished(items, finished)

    def failed(self, detail: str, request_id: str | None) -> ServerSentEventMessage:
        """The last event of a stream that failed (or that the server's drain ends)."""
        response = _builtins(self.frame.failed(detail, request_id))
        return self.message({"type": "response.failed", "response": response})

    def _text(self, text: str) -> list[Event]:
        if not text:
            return []
        events: list[Event] = []
        item = self._current(OutputMessage)
        if item is None:
            events.extend(self._close("completed"))
            item = OutputMessage(id=item_id("msg"), content=[], status="in_progress")
            events.extend(self._open_item(item))
            part = OutputText(text="")
            item.content.append(part)
            events.append(self._part("response.content_part.added", item, part))
        item.content[0].text += text
        events.append(
            {**self._where(item), "content_index": 0, "delta": text, "logprobs": []}
            | {"type": "response.output_text.delta"}
        )
        return events

    def _call(self, event: ToolCallDelta) -> list[Event]:
        events: list[Event] = []
        if event.id is not None:  # a new call
            events.extend(self._close("completed"))
            call = FunctionCallOut(
                id=item_id("fc"),
                call_id=event.id,
                name=event.name or "",
                arguments="",
                status="in_progress",
            )
            self._calls[event.index] = len(self.items)
            events.extend(self._open_item(call))
        item = self.items[self._calls[event.index]]
        if event.arguments and isinstance(item, FunctionCallOut):
            item.arguments += event.arguments
            events.append(
                {"type": "response.function_call_arguments.delta", **self._where(item)}
                | {"delta": event.arguments}
            )
        return events

    def _current(self, kind: type[OutputMessage]) -> OutputMessage | None:
        item = self.items[self._open] if self._open is not None else None
        return item if isinstance(item, kind) else None

    def _open_item(self, item: OutputItem) -> list[Event]:
        self._open = len(self.items)
        self.items.append(item)
        return [
            {
                "type": "response.output_item.added",
                "output_index": self._open,
                "item": _builtins(item),
            }
        ]

    def _close(self, status: str) -> list[Event]:
        if self._open is None:
            return []
        index, item = self._open, self.items[self._open]
        self._open = None
        events: list[Event] = []
        if isinstance(item, OutputMessage):
            part = item.content[0]
            done = {"type": "response.output_text.done", **self._where(item)}
            events.append(done | {"content_index": 0, "text": part.text, "logprobs": []})
            events.append(self._part("response.content_part.done", item, part))
        else:
            done = {"type": "response.function_call_arguments.done", **self._where(item)}
            events.append(done | {"arguments": item.arguments, "name": item.name})
        item.status = status
        events.append(
            {"type": "response.output_item.done", "output_index": index, "item": _builtins(item)}
        )
        return events

    def _part(self, kind: str, item: OutputMessage, part: OutputText) -> Event:
        return {"type": kind, **self._where(item), "content_index": 0, "part": _builtins(part)}

    def _where(self, item: OutputItem) -> Event:
        return {"item_id": item.id, "output_index": self.items.index(item)}


def _builtins(value: msgspec.Struct) -> Any:
    return msgspec.to_builtins(value)
