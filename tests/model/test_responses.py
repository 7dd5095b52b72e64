"""/v1/responses against the bundled SmolLM2: the OpenAI Agents SDK running a tool-using
agent, the openai SDK's `responses.stream`, and a conversation continued by
`previous_response_id` across two gateway replicas that share PostgreSQL and whose model
is a remote llm-service node (so the Responses API is mapped onto the node's chat
completions).

SmolLM2 is a 135M model with no tool syntax in its template: the agent asks for the tool
by name (`tool_choice`), which the grammar enforces (the local engine's grammar sampling,
see llamacpp/sampler.py). The Agents SDK would reset the choice once the tool
was used, and the small model would then call it again and again: so one run calls the
tool and a second sends it all back for an answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    RunResult,
    function_tool,
    set_tracing_disabled,
)

from app.migrations import upgrade_to_head
from tests.model.conftest import ModelApi
from tests.support import WEATHER_TOOL, node_and_gateways, token_on

MODEL = "SmolLM2-135M-Instruct.Q4_1"
# The Responses API's flat shape of the same tool.
WEATHER: Any = {"type": "function", **WEATHER_TOOL["function"], "strict": True}


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, model_path: Path
) -> Iterator[list[str]]:
    """Two gateway replicas (no model file) on one PostgreSQL database, whose `smol` is a
    remote llm-service node with the bundled model: their base URLs."""
    tmp_path = tmp_path_factory.mktemp("replicas")
    upgrade_to_head(postgres_url)  # the replicas' database, whichever test runs first
    with node_and_gateways(tmp_path, database_url=postgres_url, gateways=2) as urls:
        yield urls


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny and 21 C in {city}"


def test_the_agents_sdk_runs_a_tool_using_agent(api: ModelApi, user_token: str) -> None:
    """Two runs, as the small model needs: the first asks for the tool by name and stops on
    its result; the second sends the whole run back (the SDK's default, stateless: the
    function_call and function_call_output items) and asks for words."""
    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=f"{api.base_url}/v1", api_key=user_token, max_retries=0)
    model = OpenAIResponsesModel(model=MODEL, openai_client=client)
    caller = Agent(
        name="weather",
        instructions="You answer questions about the weather. Use the tool.",
        tools=[get_weather],
        model=model,
        model_settings=ModelSettings(tool_choice="get_weather", temperature=0, max_tokens=48),
        tool_use_behavior="stop_on_first_tool",
    )
    answerer = caller.clone(
        # Room for the small model to end its words: the SDK takes an answer cut at
        # max_tokens (`response.incomplete`) as an error, and at 48 one run in a few was cut.
        model_settings=ModelSettings(tool_choice="none", temperature=0, max_tokens=160),
        tool_use_behavior="run_llm_again",
    )

    async def run() -> tuple[RunResult, RunResult]:
        try:
            called = await Runner.run(caller, "What is the weather in Paris?", max_turns=2)
            follow_up = [*called.to_input_list(), {"role": "user", "content": "Tell me."}]
            answered = await Runner.run(answerer, follow_up, max_turns=2)  # type: ignore[arg-type]
            return called, answered
        finally:
            await client.close()

    called, answered = asyncio.run(run())
    kinds = [item.type for item in called.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item"], kinds
    call: Any = called.new_items[0].raw_item
    assert call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert str(called.final_output).startswith("Sunny and 21 C")
    assert called.last_response_id is not None
    assert called.last_response_id.startswith("resp_")
    assert isinstance(answered.final_output, str)
    assert answered.final_output
    assert [item.type for item in answered.new_items] == ["message_output_item"]


def test_responses_stream_against_the_model(api: ModelApi, user_token: str) -> None:
    client = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=user_token, max_retries=0)
    whole = client.responses.create(
        model=MODEL, input="Say hello.", temperature=0, max_output_tokens=400
    )
    with client.responses.stream(
        model=MODEL,
        input="Say hello.",
        temperature=0,
        max_output_tokens=400,
        extra_body={"use_cache": False},
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens  # type: ignore[union-attr]
    with client.responses.stream(
        model=MODEL,
        input="Weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
    ) as stream:
        pieces = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        called = stream.get_final_response()
    (call,) = called.output
    assert call.type == "function_call"
    assert "".join(pieces) == call.arguments
    assert isinstance(json.loads(call.arguments)["city"], str)


def test_previous_response_id_continues_across_two_gateway_replicas(
    replicas: list[str],
) -> None:
    one, two = replicas
    token = token_on(one)
    first_replica = openai.OpenAI(base_url=f"{one}/v1", api_key=token, max_retries=0)
    second_replica = openai.OpenAI(base_url=f"{two}/v1", api_key=token, max_retries=0)
    first = first_replica.responses.create(
        model="smol", input="My name is Ada. Say hello.", temperature=0, max_output_tokens=16
    )
    second = second_replica.responses.create(
        model="smol",
        input="What is my name?",
        previous_response_id=first.id,
        temperature=0,
        max_output_tokens=16,
    )
    conversation = first.model_extra["conversation_id"]  # type: ignore[index]
    assert second.model_extra["conversation_id"] == conversation  # type: ignore[index]
    assert second.previous_response_id == first.id
    # Each replica returns the other's responses; another user gets a 404 on both.
    assert first_replica.responses.retrieve(second.id).output_text == second.output_text
    assert second_replica.responses.retrieve(first.id).id == first.id
    stranger = openai.OpenAI(base_url=f"{two}/v1", api_key=token_on(two), max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(first.id)
    with httpx.Client(base_url=one, timeout=60) as raw:
        messages = raw.get(
            f"/conversations/{conversation}", headers={"Authorization": f"Bearer {token}"}
        ).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "My name is Ada. Say hello."
