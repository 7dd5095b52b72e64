"""The clients people use, with their defaults, against the bundled SmolLM2: the openai
SDK's `parse`, LangChain's `with_structured_output` and `bind_tools`, instructor's default
mode, a tool round trip whole and streamed, logprobs and n; then the same through a
gateway whose model is a remote `llm-service` node.

SmolLM2 is a 135M model with no tool syntax in its template: what these tests check is
that every answer is well-formed (the grammar's work), not that it is wise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import instructor
import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.model.conftest import ModelApi
from tests.support import WEATHER_TOOL, node_and_gateways, token_on

MODEL = "SmolLM2-135M-Instruct.Q4_1"
PROMPTS = [
    "Alice is 31 years old. Extract her name and age.",
    "Bob turned 45 last week. Give his name and age.",
    "Describe a person called Carol, aged 27.",
]
WEATHER = WEATHER_TOOL


class Person(BaseModel):
    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny and 21 C in {city}"


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path
) -> Iterator[tuple[str, str]]:
    """A gateway (no model file) whose `smol` is a remote llm-service node with the bundled
    model: its base URL and a user's token on it."""
    with node_and_gateways(tmp_path_factory.mktemp("gateway")) as (url,):
        yield url, token_on(url)


@pytest.fixture(params=["local", "gateway"])
def target(request: pytest.FixtureRequest, api: ModelApi, user_token: str) -> tuple[str, str, str]:
    """(base URL, token, model) of the local model or of the gateway's remote one."""
    if request.param == "local":
        return api.base_url, user_token, MODEL
    url, token = request.getfixturevalue("gateway")
    return url, token, "smol"


def client_of(target: tuple[str, str, str]) -> openai.OpenAI:
    base, token, _ = target
    return openai.OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0)


def test_openai_parse_with_a_pydantic_model(target: tuple[str, str, str]) -> None:
    client, model = client_of(target), target[2]
    for prompt in PROMPTS:
        completion = client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            response_format=Person,
            temperature=0,
            max_tokens=80,
        )
        choice = completion.choices[0]
        if choice.finish_reason == "length":
            continue  # cut by max_tokens: the only way out of the schema
        assert isinstance(choice.message.parsed, Person), choice.message.content


def test_json_schema_sampled_answers_validate(target: tuple[str, str, str]) -> None:
    schema = {
        "type": "object",
        "properties": {
            "colors": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "count": {"type": "integer"},
            "ok": {"type": "boolean"},
        },
        "required": ["colors", "count", "ok"],
        "additionalProperties": False,
    }
    client, model = client_of(target), target[2]
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "List some colors."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "colors", "schema": schema, "strict": True},
        },
        temperature=1.0,
        seed=3,
        max_tokens=120,
        n=2,
    )
    for choice in completion.choices:
        if choice.finish_reason != "length":
            jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_langchain_structured_output_and_bind_tools(target: tuple[str, str, str]) -> None:
    base, token, model = target
    llm = ChatOpenAI(
        base_url=f"{base}/v1",
        api_key=token,
        model=model,
        temperature=0,
        max_tokens=160,  # a call's JSON is over the suite's default of 32 tokens
        max_retries=0,
    )
    person = llm.with_structured_output(Person).invoke(PROMPTS[0])
    assert isinstance(person, Person)
    with_tools = llm.bind_tools([get_weather], tool_choice="get_weather")
    message = with_tools.invoke("What is the weather in Paris?")
    assert isinstance(message, AIMessage)
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"].get("city"), str)
    # The round trip: the tool's result back, then an answer in words.
    answer = llm.bind_tools([get_weather]).invoke(
        [
            HumanMessage("What is the weather in Paris?"),
            message,
            ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]),
        ]
    )
    assert isinstance(answer, AIMessage)
    assert answer.content or answer.tool_calls


def test_instructor_default_mode(target: tuple[str, str, str]) -> None:
    client = instructor.from_openai(client_of(target))
    person = client.chat.completions.create(
        model=target[2],
        response_model=Person,
        messages=[{"role": "user", "content": PROMPTS[1]}],
        temperature=0,
        max_tokens=160,  # the call's JSON is over the suite's default of 32 tokens
        max_retries=2,
    )
    assert isinstance(person, Person)


def _call_and_answer(client: openai.OpenAI, model: str, *, stream: bool) -> tuple[Any, str]:
    """A required call, its result, then the answer: (the call, the answer's text)."""
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=model, messages=ask, tools=[WEATHER], tool_choice="required", temperature=0
    )
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    history = [
        *ask,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny and 21 C"},
    ]
    request: dict[str, Any] = {
        "model": model,
        "messages": history,
        "tools": [WEATHER],
        "tool_choice": "none",
        "temperature": 0,
        "max_tokens": 40,
    }
    if not stream:
        answer = client.chat.completions.create(**request)
        return call, answer.choices[0].message.content or ""
    text = ""
    for chunk in client.chat.completions.create(**request, stream=True):
        for choice in chunk.choices:
            text += choice.delta.content or ""
    return call, text


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_round_trip(target: tuple[str, str, str], stream: bool) -> None:
    call, text = _call_and_answer(client_of(target), target[2], stream=stream)
    assert call.function.name == "get_weather"
    assert text.strip()


def test_a_streamed_tool_call_comes_in_pieces(target: tuple[str, str, str]) -> None:
    stream = client_of(target).chat.completions.create(
        model=target[2],
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        stream=True,
    )
    pieces = [p for chunk in stream for c in chunk.choices for p in c.delta.tool_calls or []]
    assert pieces[0].id
    assert pieces[0].function.name == "get_weather"  # type: ignore[union-attr]
    arguments = "".join(p.function.arguments or "" for p in pieces)  # type: ignore[union-attr]
    assert isinstance(json.loads(arguments)["city"], str)


def test_logprobs_and_two_choices(target: tuple[str, str, str]) -> None:
    client, model = client_of(target), target[2]
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name a fruit."}],
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
        n=2,
    )
    first, second = completion.choices
    assert first.message.content == second.message.content  # greedy: the same answer
    content = first.logprobs.content if first.logprobs else None
    assert content
    assert "".join(entry.token for entry in content) == first.message.content
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2 * len(content)
