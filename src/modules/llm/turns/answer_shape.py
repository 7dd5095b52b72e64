"""What a turn's answer must be (JSON, a schema's instance, tool calls, logprobs, several
choices), made ready for the model that gives it, and refused with a 400 that names what
is wrong before any work.

A remote server (`Backend.passthrough`) gets OpenAI's fields as the client sent them. A
local model gets a grammar instead: a JSON schema's, or a tool format's (`tool_format.py`)
with a reader that turns the answer into tool calls: its template's own format, the tools
rendered by the template, where it has one; otherwise the generic format, described in
the system turn."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from modules.llm.inference import Backend, Capability, SamplingParams
from modules.llm.inference.grammars import SchemaError, json_grammar, tool_call_grammar
from modules.llm.inference.structured import chosen_function
from modules.llm.inference.tool_format import GENERIC, ToolSyntax, describe_tools
from modules.llm.turns.options import InvalidTurnRequest

# Where a request asks for each capability, for the error that names it.
_ASKED_BY: dict[Capability, str] = {"logprobs": "logprobs", "n": "n", "grammar": "response_format"}


@dataclass(frozen=True, slots=True)
class AnswerShape:
    params: SamplingParams  # with the grammar a local model samples with
    tools_prompt: str | None = None  # the generic tool format's text for the system turn
    template_tools: bool = False  # the tools go to the chat template, which renders them
    reads_tool_calls: ToolSyntax | None = None  # the format the answer's calls are read in

    @property
    def plain(self) -> bool:
        """A single text answer and nothing else: one the response cache can hold."""
        params = self.params
        return not (params.tools or params.logprobs or params.n > 1)


def answer_shape(backend: Backend, params: SamplingParams) -> AnswerShape:
    _check_capabilities(backend, params)
    if backend.passthrough:
        return AnswerShape(params)
    try:
        if params.tools and params.tool_choice != "none":
            return _tools(backend, params)
        return AnswerShape(msgspec.structs.replace(params, grammar=_json_grammar(params)))
    except SchemaError as exc:
        raise InvalidTurnRequest(exc.detail, field=exc.field, status_code=400) from exc


def _check_capabilities(backend: Backend, params: SamplingParams) -> None:
    needed: list[Capability] = []
    if params.logprobs:
        needed.append("logprobs")
    if params.n > 1:
        needed.append("n")
    if params.response_format is not None and params.response_format.type != "text":
        needed.append("grammar")
    missing = backend.capabilities.missing(*needed)
    if missing:
        has = ", ".join(backend.capabilities.names())
        raise InvalidTurnRequest(
            f"model {backend.alias!r} does not support {missing[0]} (it supports: {has})",
            field=_ASKED_BY[missing[0]],
            status_code=400,
        )


def _json_grammar(params: SamplingParams) -> str | None:
    response_format = params.response_format
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return json_grammar(None, strict=False, field="response_format")
    spec = response_format.json_schema
    if spec is None:
        raise SchemaError("json_schema is required for type json_schema", "response_format")
    return json_grammar(
        spec.schema, strict=spec.strict is True, field="response_format.json_schema.schema"
    )


def _tools(backend: Backend, params: SamplingParams) -> AnswerShape:
    if params.response_format is not None and params.response_format.type != "text":
        raise SchemaError(
            "a local model answers either tool calls or JSON: send tools or response_format",
            "response_format",
        )
    named = chosen_function(params.tool_choice)
    functions = [tool.function for tool in params.tools]
    if named is not None:
        functions = [function for function in functions if function.name == named]
        if not functions:
            raise SchemaError(f"tool_choice names {named!r}, which is not in tools", "tool_choice")
    text_allowed = params.tool_choice in (None, "auto")
    # A named function is called once (OpenAI's forced call); otherwise several calls at
    # once unless the client said no.
    parallel = named is None and params.parallel_tool_calls is not False
    syntax = backend.tool_syntax or GENERIC
    grammar = tool_call_grammar(
        functions, text_allowed=text_allowed, parallel=parallel, syntax=syntax
    )
    params = msgspec.structs.replace(params, grammar=grammar)
    if syntax is not GENERIC:
        return AnswerShape(params, template_tools=True, reads_tool_calls=syntax)
    prompt = describe_tools(params.tools, required=named, text_allowed=text_allowed)
    return AnswerShape(params, prompt, reads_tool_calls=GENERIC)
