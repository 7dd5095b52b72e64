"""/v1/responses, driven by the openai SDK's `responses.create` and `responses.stream`
against the fast tier's fake backend (which answers a grammar's least instance: a tool
call, a schema's least instance): input items, instructions, text.format, tools and a
function_call_output round trip, previous_response_id over stored conversations, owner
scoping, retrieval, store false; and OpenAI's error shape for every path under /v1."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.api.conftest import FakeApi
from tests.support import Api

MODEL = "SmolLM2-135M-Instruct.Q4_1"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def client_for(api: Api, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=token, max_retries=0)


def stored_messages(api: Api, token: str, conversation_id: Any) -> list[dict[str, Any]]:
    with api.client(token) as raw:
        detail = raw.get(f"/conversations/{conversation_id}")
    assert detail.status_code == 200, detail.text
    messages: list[dict[str, Any]] = detail.json()["messages"]
    return messages


def test_string_input_whole(api: FakeApi, user_token: str) -> None:
    response = client_for(api, user_token).responses.create(
        model=MODEL, input="Say hello.", max_output_tokens=20, temperature=0
    )
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text
    (message,) = response.output
    assert message.type == "message"
    assert message.role == "assistant"
    assert response.usage is not None
    assert 0 < response.usage.output_tokens <= 20
    total = response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.total_tokens == total


def test_items_and_instructions_reach_the_model(api: FakeApi, user_token: str) -> None:
    items: Any = [
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi there"}]},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
        },
        {"role": "user", "content": "How are you?"},
    ]
    response = client_for(api, user_token).responses.create(
        model=MODEL,
        instructions="Be brief.",
        input=items,
        max_output_tokens=4,
    )
    assert response.instructions == "Be brief."
    prompt = api.backend.prompts[-1]
    roles = [(m.role, m.content) for m in prompt.messages]
    assert roles[0] == ("system", "Be brief.\n\nAnswer in English.")
    assert roles[1:] == [
        ("user", "Hi there"),
        ("assistant", "Hello!"),
        ("user", "How are you?"),
    ]


def test_max_output_tokens_makes_an_incomplete_response(api: FakeApi, user_token: str) -> None:
    response = client_for(api, user_token).responses.create(
        model=MODEL, input="Count to thirty.", max_output_tokens=3, extra_body={"use_cache": False}
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]


def test_text_format_json_schema(api: FakeApi, user_token: str) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response = client_for(api, user_token).responses.create(
        model=MODEL,
        input="Invent a person.",
        text={
            "format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}
        },
    )
    assert set(json.loads(response.output_text)) == {"name", "age"}
    assert response.text.format.type == "json_schema"  # type: ignore[union-attr]


def test_tool_call_and_function_call_output_round_trip(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    ask: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(
        model=MODEL,
        input=ask,
        tools=[WEATHER],
        tool_choice="required",
    )
    (call,) = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "sea"}  # the fake's least instance
    # Stateless, as the Agents SDK does it: the whole input again, the call and its output.
    follow_up: Any = [
        *ask,
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ]
    second = client.responses.create(
        model=MODEL,
        input=follow_up,
        tools=[WEATHER],
        tool_choice="none",
    )
    assert second.output_text
    conversation_id = second.model_extra["conversation_id"]  # type: ignore[index]
    stored = stored_messages(api, user_token, conversation_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[1]["tool_calls"][0]["id"] == call.call_id
    assert stored[2]["tool_call_id"] == call.call_id
    assert stored[2]["content"] == "Sunny, 21 C"


def test_stream_text_events_in_order(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    with client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=20) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    assert final.usage is not None
    # The streamed response is stored like a whole one.
    assert client.responses.retrieve(final.id).output_text == final.output_text


def test_stream_function_call(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    with client.responses.stream(
        model=MODEL,
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert "response.function_call_arguments.delta" in types
    assert types[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (call,) = final.output
    assert call.type == "function_call"
    assert call.name == "get_weather"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == call.arguments


def test_a_stream_cut_short_ends_with_response_incomplete(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    with client.responses.stream(
        model=MODEL, input="Count to thirty.", max_output_tokens=3, store=False
    ) as stream:
        events = list(stream)
    assert events[-1].type == "response.incomplete"
    response: Any = events[-1].response
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    with pytest.raises(openai.NotFoundError):  # store false: not kept, streamed or not
        client.responses.retrieve(response.id)


def test_previous_response_id_continues_the_conversation(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    first = client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=8)
    second = client.responses.create(
        model=MODEL,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=8,
    )
    assert second.id != first.id
    assert second.previous_response_id == first.id
    conversation_id = first.model_extra["conversation_id"]  # type: ignore[index]
    assert second.model_extra["conversation_id"] == conversation_id  # type: ignore[index]
    prompt = [m.content for m in api.backend.prompts[-1].messages]
    assert "My name is Ada." in prompt
    assert len(stored_messages(api, user_token, conversation_id)) == 4
    # Continuing an older response would branch the conversation: refused, named.
    with pytest.raises(openai.ConflictError, match="latest"):
        client.responses.create(model=MODEL, input="Again?", previous_response_id=first.id)
    # The latest goes on, streamed too.
    with client.responses.stream(
        model=MODEL, input="And again?", previous_response_id=second.id, max_output_tokens=20
    ) as stream:
        third = stream.get_final_response()
    assert len(stored_messages(api, user_token, conversation_id)) == 6
    assert client.responses.retrieve(third.id).previous_response_id == second.id


def test_another_users_response_is_a_404(api: FakeApi, user_token: str) -> None:
    mine = client_for(api, user_token).responses.create(model=MODEL, input="Secret.")
    theirs = client_for(api, api.user_token())
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError) as raised:
        theirs.responses.create(model=MODEL, input="Continue.", previous_response_id=mine.id)
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["type"] == "not_found_error"
    for unknown in ("resp_" + "0" * 32, "resp_nothex", "chatcmpl-1"):
        with pytest.raises(openai.NotFoundError):
            theirs.responses.retrieve(unknown)


def test_retrieve_returns_the_stored_response(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    created = client.responses.create(
        model=MODEL, input="Hi", metadata={"run": "7"}, max_output_tokens=5
    )
    retrieved = client.responses.retrieve(created.id)
    assert retrieved.model_dump() == created.model_dump()


def test_store_false_keeps_nothing(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    with api.client(user_token) as raw:
        before = raw.get("/conversations").json()["total"]
    response = client.responses.create(model=MODEL, input="Forget me.", store=False)
    assert response.output_text
    assert response.model_extra["store"] is False  # type: ignore[index]
    assert response.model_extra["conversation_id"] is None  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with api.client(user_token) as raw:
        assert raw.get("/conversations").json()["total"] == before
    # A stored response continued with store false: read, not appended to.
    kept = client.responses.create(model=MODEL, input="Remember me.")
    client.responses.create(
        model=MODEL, input="Just asking.", previous_response_id=kept.id, store=False
    )
    conversation_id = kept.model_extra["conversation_id"]  # type: ignore[index]
    assert len(stored_messages(api, user_token, conversation_id)) == 2


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "name": "f", "frob": 1}]}, "tools[0].frob"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"role": "system", "content": "only"}]}, "input"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"temperature": 3}, "temperature"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_unsupported_requests_are_clear_400s(
    api: Api, user_token: str, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "input": "Hi", **extra}
    with pytest.raises(openai.BadRequestError) as raised:
        client_for(api, user_token).post("/responses", cast_to=object, body=body)
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["param"] == param or param in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_what_the_sdks_send_by_default_is_accepted(api: Api, user_token: str) -> None:
    # The Agents SDK sends `include: []`; others send these with their defaults.
    response = client_for(api, user_token).responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "Hi"}],
        include=[],
        truncation="auto",
        metadata={"a": "b"},
        prompt_cache_key="k",
        reasoning={"effort": None},
        parallel_tool_calls=True,
        tools=[WEATHER],
        tool_choice="auto",
        store=True,
        user="someone",
        safety_identifier="x",
        service_tier="auto",
    )
    assert response.status == "completed"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nope", 404),
        ("POST", "/v1/embeddingz", 404),
        ("GET", "/v1", 404),
        ("GET", "/v1/chat/completions", 405),
        ("DELETE", "/v1/responses/resp_1", 405),
        ("PUT", "/v1/responses", 405),
    ],
)
def test_unknown_paths_and_methods_under_v1_use_openai_shape(
    api: Api, user_token: str, method: str, path: str, status: int
) -> None:
    with api.client(user_token) as raw:
        response = raw.request(method, path, headers={"X-Request-ID": "req-123"})
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code", "request_id"}
    assert error["request_id"] == response.headers["x-request-id"] == "req-123"
    assert path in error["message"]


def test_the_sdk_reads_a_404_message(api: Api, user_token: str) -> None:
    with pytest.raises(openai.NotFoundError, match="Invalid URL"):
        client_for(api, user_token).get("/nope", cast_to=object)


def test_other_unknown_paths_keep_problem_details(api: Api) -> None:
    with api.client() as raw:
        response = raw.get("/v1x/nope")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["request_id"] == response.headers["x-request-id"]
