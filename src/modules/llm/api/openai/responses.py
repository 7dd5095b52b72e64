"""/v1/responses: OpenAI's Responses API over the turn service. A stored response maps to
the conversation turn it answered, so `previous_response_id` continues that conversation
(on any replica: the mapping is in the database), and `GET /v1/responses/{id}` returns it
to its owner only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.response import ServerSentEventMessage

from modules.llm.api.openai.controller import ERRORS
from modules.llm.api.openai.responses_answers import ResponseFrame, output_items
from modules.llm.api.openai.responses_events import ResponseEvents
from modules.llm.api.openai.responses_schemas import ResponseObject, ResponsesRequest
from modules.llm.api.openai.responses_translate import response_turn
from modules.llm.api.streaming import STREAM_FAILED, event_stream, request_id_of, whole_answer
from modules.llm.inference import Finished
from modules.llm.turns import Turn, TurnService
from modules.responses import ResponseStore, new_response_id

Save = Callable[[ResponseObject], Awaitable[None]]


async def _stream(
    turn: Turn, events: ResponseEvents, save: Save, request_id: str | None
) -> AsyncIterator[ServerSentEventMessage]:
    for started in events.started():
        yield events.message(started)
    try:
        async for event in turn.events():
            if isinstance(event, Finished):
                response = events.response(event)
                # Kept before the client hears it is done: its next request may continue it.
                await save(response)
                for done in events.finished(response):
                    yield events.message(done)
            else:
                for delta in events.of(event):
                    yield events.message(delta)
    except Exception:  # logged by the turn; the client gets a stable message, no internals
        yield events.failed(STREAM_FAILED, request_id)


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ("openai",)

    @post("/", status_code=200, responses=ERRORS)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ResponsesRequest],
        turn_service: NamedDependency[TurnService],
        response_store: NamedDependency[ResponseStore],
    ) -> ResponseObject:
        """OpenAI's Responses API, whole or streamed. `previous_response_id` continues the
        stored conversation of one of the caller's own responses (its latest); `store:
        false` keeps neither the response nor the turn. Extensions (the openai SDK sends
        them with `extra_body`): `profile`, `use_cache`."""
        previous = data.previous_response_id
        conversation_id = await response_store.continuation(previous) if previous else None
        turn = await turn_service.start(response_turn(data, conversation_id))
        frame = ResponseFrame.of(new_response_id(), turn.model, data, turn.conversation_id)

        async def save(response: ResponseObject) -> None:
            if turn.conversation_id is not None:  # stored: the turn was kept
                body = msgspec.to_builtins(response)
                await response_store.save(response.id, turn.conversation_id, body)

        if data.stream:
            events = ResponseEvents(frame)
            return event_stream(
                ResponseObject,
                _stream(turn, events, save, request_id_of(request)),
                events.failed,
                headers=(
                    None
                    if turn.conversation_id is None
                    else {"X-Conversation-Id": str(turn.conversation_id)}
                ),
            )
        completion = await whole_answer(request, turn)
        response = frame.finished(output_items(completion), completion.finished)
        await save(response)
        return response

    @get("/{response_id:str}", responses=ERRORS)
    async def retrieve(
        self, response_id: FromPath[str], response_store: NamedDependency[ResponseStore]
    ) -> ResponseObject:
        """One of the caller's stored responses (another user's id is a 404)."""
        return msgspec.convert(await response_store.get(response_id), ResponseObject)
