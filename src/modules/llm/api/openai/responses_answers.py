"""A turn's answer as a Responses API response object: its output items (a message with
`output_text`, then one `function_call` item per call), status and usage, with the
request's own fields echoed as OpenAI does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from modules.llm.api.openai.responses_schemas import (
    FunctionCallOut,
    IncompleteDetails,
    InputTokensDetails,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseError,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
)
from modules.llm.api.openai.responses_translate import function_tools
from modules.llm.inference import Completion, Finished, FinishReason


def item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def incomplete(reason: FinishReason) -> bool:
    # OpenAI names one reason an answer stops short: max_output_tokens. A deadline is the
    # closest to it (as "length" is on chat completions).
    return reason in ("length", "timeout")


def usage_of(finished: Finished) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=finished.prompt_tokens,
        output_tokens=finished.completion_tokens,
        total_tokens=finished.prompt_tokens + finished.completion_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=finished.cached_tokens),
    )


def output_items(completion: Completion) -> list[OutputItem]:
    choice = completion.all_choices[0]
    status = "incomplete" if incomplete(choice.finish_reason) else "completed"
    items: list[OutputItem] = []
    if choice.text or not choice.tool_calls:
        text = OutputText(text=choice.text)
        items.append(OutputMessage(id=item_id("msg"), content=[text], status=status))
    items.extend(
        FunctionCallOut(id=item_id("fc"), call_id=call.id, name=call.name, arguments=call.arguments)
        for call in choice.tool_calls
    )
    return items


@dataclass(frozen=True, slots=True)
class ResponseFrame:
    """What every state of one response repeats: its id, model and the request's fields."""

    id: str
    created_at: int
    model: str
    request: ResponsesRequest
    conversation_id: uuid.UUID | None

    @classmethod
    def of(
        cls, response_id: str, model: str, request: ResponsesRequest, conversation_id: Any
    ) -> ResponseFrame:
        return cls(response_id, int(time.time()), model, request, conversation_id)

    def in_progress(self) -> ResponseObject:
        return self._response("in_progress", [], None)

    def finished(self, items: Sequence[OutputItem], finished: Finished) -> ResponseObject:
        response = self._response("completed", list(items), usage_of(finished))
        if incomplete(finished.finish_reason):
            response.status = "incomplete"
            response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
        return response

    def failed(self, message: str, request_id: str | None) -> ResponseObject:
        response = self._response("failed", [], None)
        response.error = ResponseError(code="server_error", message=message, request_id=request_id)
        return response

    def _response(
        self, status: str, items: list[OutputItem], usage: ResponseUsage | None
    ) -> ResponseObject:
        request = self.request
        text_format = request.text.format if request.text and request.text.format else None
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            output=items,
            usage=usage,
            instructions=request.instructions,
            temperature=request.temperature,
            top_p=request.top_p,
            max_output_tokens=request.max_output_tokens,
            previous_response_id=request.previous_response_id,
            tool_choice=request.tool_choice or "auto",
            tools=[msgspec.to_builtins(tool) for tool in function_tools(request)],
            text={"format": msgspec.to_builtins(text_format) if text_format else {"type": "text"}},
            parallel_tool_calls=request.parallel_tool_calls is not False,
            store=request.store,
            conversation_id=self.conversation_id,
            metadata=request.metadata or {},
            truncation=request.truncation or "disabled",
            user=request.user,
        )
