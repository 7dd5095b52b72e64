"""JSON schemas to grammars (checked keyword by keyword, cached, linear in the schema), and
the tool formats' readers (the same calls however the text is cut)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from modules.llm.inference import Finished, TokenDelta, ToolCallDelta
from modules.llm.inference.answers import AnswerBuilder
from modules.llm.inference.events import Event
from modules.llm.inference.grammars import (
    MAX_REPETITION,
    SchemaError,
    json_grammar,
    tool_call_grammar,
    tool_calls_schema,
)
from modules.llm.inference.structured import FunctionSpec
from modules.llm.inference.tool_format import (
    GENERIC,
    HERMES,
    ToolCallReader,
    ToolSyntax,
    native_tool_syntax,
)

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_a_schema_compiles_once() -> None:
    first = json_grammar(PERSON, strict=True, field="f")
    assert json_grammar(dict(PERSON), strict=True, field="f") is first
    assert 'root ::= "{" space name-kv "," space age-kv "}" space' in first
    # JSON strings hold no raw control characters.
    assert "\\x00-\\x1F" in first


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "integer", "minimum": 1}, "f.minimum"),
        ({"type": "object", "properties": {"a": {"not": {}}}}, "f.properties.a.not"),
        ({"type": "string", "format": "email"}, "f.format"),
        ({"type": "array", "items": {"uniqueItems": True}}, "f.items.uniqueItems"),
        ({"type": "string", "maxLength": MAX_REPETITION + 1}, "f.maxLength"),
        ({"anyOf": [{"type": "string"}, {"if": {}}]}, "f.anyOf[1].if"),
    ],
)
def test_strict_refuses_what_the_grammar_cannot_enforce(schema: dict[str, Any], where: str) -> None:
    with pytest.raises(SchemaError) as raised:
        json_grammar(schema, strict=True, field="f")
    assert raised.value.field == where
    # Without strict the keyword is dropped and the shape still enforced.
    json_grammar(schema, strict=False, field="f")


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "strnig"}, "f.type"),
        ({"$ref": "https://example.com/schema.json"}, "f"),
        ({"$ref": "#/$defs/missing"}, "f"),
        ({"anyOf": []}, "f.anyOf"),
        ({"properties": []}, "f.properties"),
        ({"type": "string", "maxLength": -1}, "f.maxLength"),
        ([], "f"),
    ],
)
def test_malformed_schemas_are_named_errors(schema: Any, where: str) -> None:
    with pytest.raises(SchemaError) as raised:
        json_grammar(schema, strict=False, field="f")
    assert raised.value.field == where


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for depth in (100, 400, 3000):
        for _ in range(depth):
            schema = {"type": "array", "items": schema}
        with pytest.raises(SchemaError, match="levels deep"):
            json_grammar(schema, strict=False, field="f")


def test_tool_parameters_keep_their_own_definitions() -> None:
    parameters = {
        "type": "object",
        "properties": {"where": {"$ref": "#/$defs/Place"}},
        "required": ["where"],
        "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    functions = [FunctionSpec(name="a", parameters=parameters), FunctionSpec(name="b")]
    schema = tool_calls_schema(functions, parallel=False)
    assert set(schema["$defs"]) == {"f0-Place"}
    assert schema["properties"]["tool_calls"]["maxItems"] == 1
    grammar = tool_call_grammar(functions, text_allowed=True, parallel=False)
    assert grammar.startswith("root ::= calls | answer-text")


def _compile_seconds(properties: int) -> float:
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "maxLength": 8} for i in range(properties)},
        "required": [f"p{i}" for i in range(properties)],
    }
    started = time.thread_time()
    json_grammar(schema, strict=True, field=f"f{time.monotonic_ns()}")  # never cached
    return time.thread_time() - started


def test_compiling_stays_linear_in_the_schema() -> None:
    """Doubling a schema at most a little more than doubles its compile time (a ratio)."""
    for _ in range(3):
        small = min(_compile_seconds(400) for _ in range(3))
        large = min(_compile_seconds(800) for _ in range(3))
        if large / small < 3.0:
            return
    pytest.fail(f"compiling 800 properties took {large / small:.1f}x 400")


async def _events(pieces: list[str]) -> AsyncIterator[Event]:
    for piece in pieces:
        yield TokenDelta(piece)
    yield Finished("stop", 1, len(pieces))


class _Generation:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def events(self) -> AsyncIterator[Event]:
        return _events(self.pieces)

    def cancel(self) -> None:
        pass


def _read(text: str, size: int, syntax: ToolSyntax = GENERIC) -> tuple[AnswerBuilder, list[Event]]:
    pieces = [text[i : i + size] for i in range(0, len(text), size)]

    async def run() -> list[Event]:
        return [event async for event in ToolCallReader(_Generation(pieces), syntax).events()]

    events = asyncio.run(run())
    answers = AnswerBuilder()
    for event in events:
        if isinstance(event, TokenDelta | ToolCallDelta):
            answers.add(event)
    return answers, events


CALLS = (
    '{ "tool_calls": [ {"name": "get_weather", "arguments": {"city": "Pa\\"ris", '
    '"days": [1, {"x": "}"}]}}, {"name":"b","arguments":{}} ] }'
)
# The same calls in Hermes's format, as a template with tools has the model write them.
HERMES_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa\\"ris", '
    '"days": [1, {"x": "}"}]}} \n</tool_call>\n'
    '<tool_call>\n{"name":"b","arguments":{}}\n</tool_call>'
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(("text", "syntax"), [(CALLS, GENERIC), (HERMES_CALLS, HERMES)])
def test_the_reader_finds_the_same_calls_however_the_text_is_cut(
    size: int, text: str, syntax: ToolSyntax
) -> None:
    answers, events = _read(text, size, syntax)
    calls = answers.tool_calls()
    assert [call.name for call in calls] == ["get_weather", "b"]
    assert json.loads(calls[0].arguments) == {"city": 'Pa"ris', "days": [1, {"x": "}"}]}
    assert json.loads(calls[1].arguments) == {}
    assert answers.text() == ""
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "tool_calls"
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].id is not None
    assert deltas[0].name == "get_weather"


@pytest.mark.parametrize("syntax", [GENERIC, HERMES])
def test_a_plain_answer_passes_through(syntax: ToolSyntax) -> None:
    answers, events = _read("  The weather is fine.", 3, syntax)
    assert answers.text() == "  The weather is fine."
    assert answers.tool_calls() == ()
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "stop"


def test_a_template_that_writes_tool_call_tags_gets_its_own_format() -> None:
    hermes = (Path(__file__).parents[1] / "templates" / "qwen2.5-tools.jinja").read_text()
    assert native_tool_syntax(hermes) is HERMES
    assert native_tool_syntax(None) is None
    assert native_tool_syntax("{% for m in messages %}{{ m.content }}{% endfor %}") is None


def test_the_native_grammar_frames_each_call_and_bounds_them() -> None:
    functions = [FunctionSpec(name="get_weather", parameters=PERSON)]
    forced = tool_call_grammar(functions, text_allowed=False, parallel=False, syntax=HERMES)
    assert forced.startswith('root ::= framed-call\nframed-call ::= "<tool_call>\\n" call')
    auto = tool_call_grammar(functions, text_allowed=True, parallel=True, syntax=HERMES)
    assert auto.startswith("root ::= calls | answer-text\nanswer-text ::= [^<]")
    assert 'calls ::= framed-call ("\\n" framed-call){0,7}' in auto
    generic = tool_call_grammar(functions, text_allowed=True, parallel=True)
    assert "answer-text ::= [^{]" in generic
