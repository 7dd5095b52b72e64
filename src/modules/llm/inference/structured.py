"""What a client asks an answer to be beyond free text, in OpenAI's own shapes: a JSON
object or a JSON schema's instance (`response_format`), tool calls (`tools`,
`tool_choice`). Remote servers get these unchanged; a local model gets a grammar
(`grammars.py`) and, for tools, the generic tool format (`turns/tools.py`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

FunctionName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class JsonSchemaSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: Annotated[str, Meta(min_length=1, max_length=64)] = "response"
    # `schema` is OpenAI's field name; a Struct field cannot shadow nothing here.
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaSpec | None = None


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(msgspec.Struct, frozen=True):
    name: FunctionName


class NamedToolChoice(msgspec.Struct, frozen=True, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call the model made: `arguments` is the JSON text of the arguments."""

    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        """OpenAI's shape of a call in an assistant message."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def chosen_function(choice: ToolChoice | None) -> str | None:
    """The function a named `tool_choice` asks for, else None."""
    return choice.function.name if isinstance(choice, NamedToolChoice) else None
