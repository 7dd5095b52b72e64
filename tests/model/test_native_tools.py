"""A model whose chat template renders tools gets them in its own format: the bundled
SmolLM2 served with Qwen 2.5's template (LLM_CHAT_TEMPLATES), which writes Hermes's
`<tool_call>` tags, through a real server and the openai SDK. The grammar makes the model
write its calls in those tags; the reader turns them into OpenAI's tool calls.

SmolLM2 was never trained on those tags: left free to make parallel calls it repeats the
same one until max_tokens, so these tests ask for one call at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import NO_LIMITS, WEATHER_TOOL, cli_server, token_on

TEMPLATE = Path(__file__).parents[1] / "templates" / "qwen2.5-tools.jinja"
WEATHER = WEATHER_TOOL
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    env = {
        "DATA_DIR": str(tmp_path_factory.mktemp("native-tools")),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "LLM_MODEL_ALIAS": "qwen-style",
        "LLM_CHAT_TEMPLATES": f"qwen-style={TEMPLATE}",
        **NO_LIMITS,
    }
    with cli_server(env) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key=token_on(url), max_retries=0)


def test_the_template_is_the_models_and_has_tools(client: openai.OpenAI) -> None:
    (model,) = client.models.list().data
    assert model.id == "qwen-style"


@pytest.mark.parametrize("tool_choice", ["required", "auto"])
def test_a_call_in_the_templates_format_comes_back_as_openais(
    client: openai.OpenAI, tool_choice: str
) -> None:
    completion = client.chat.completions.create(
        model="qwen-style",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice=tool_choice,  # type: ignore[arg-type]
        parallel_tool_calls=False,
        max_tokens=64,
        temperature=0,
    )
    choice = completion.choices[0]
    if tool_choice == "auto" and not choice.message.tool_calls:
        assert choice.message.content  # a plain answer is the other way out
        assert not choice.message.content.lstrip().startswith("<")
        return
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]


def test_a_round_trip_streams_the_answer_after_the_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="qwen-style",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=64,
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    history = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
    ]
    stream = client.chat.completions.create(
        model="qwen-style",
        messages=history,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_tokens=24,
        stream=True,
    )
    text = "".join(c.delta.content or "" for chunk in stream for c in chunk.choices)
    assert text.strip()
