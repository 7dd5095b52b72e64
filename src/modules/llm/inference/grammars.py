"""JSON schemas to GBNF grammars for llama.cpp's grammar sampler, checked once.

llama-cpp-python ships llama.cpp's JSON-schema-to-GBNF converter (`SchemaConverter`). It
silently ignores what it cannot express (`minimum`, `not`, `uniqueItems`, most formats),
so every schema is walked first: with `strict`, a keyword the converter cannot honour is
refused by name; without it, the keyword is dropped (the answer is still JSON of the
schema's shape). Bounds that would make the grammar large (`maxLength: 100000` spells a
rule per character) are refused past `MAX_REPETITION`, so a grammar's size stays linear
in its schema's. A schema's grammar is compiled once and kept by its digest."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

from modules.llm.inference.structured import FunctionSpec
from modules.llm.inference.tool_format import GENERIC, ToolSyntax

# Keywords the converter turns into grammar rules.
HONOURED = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems",
        "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
        "$defs", "definitions", "pattern", "minLength", "maxLength", "format",
    }
)  # fmt: skip
# Keywords that say nothing about the text's shape.
ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "$schema", "$id", "$comment",
        "deprecated", "readOnly", "writeOnly", "discriminator", "nullable", "strict",
    }
)  # fmt: skip
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid3", "uuid4", "uuid5"})
TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
# The largest count a schema may bound a repetition with (characters, items): each unit of
# a bound is a rule of the grammar.
MAX_REPETITION = 1000
# The most tool calls one answer may make at once.
MAX_PARALLEL_CALLS = 8
# The deepest a schema may nest (the converter recurses a few frames per level).
MAX_DEPTH = 64
CACHED_GRAMMARS = 256
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'
# A JSON object, any keys, any values (`response_format: json_object`).
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class SchemaError(ValueError):
    """A schema that cannot become a grammar; `field` is where, as the client sent it."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.detail = detail
        self.field = field


class _Grammars:
    """Compiled grammars by the digest of what they were compiled from (thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        with self._lock:
            grammar = self._entries.get(digest)
            if grammar is not None:
                self._entries.move_to_end(digest)
            return grammar

    def put(self, digest: str, grammar: str) -> None:
        with self._lock:
            self._entries[digest] = grammar
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


_cache = _Grammars(CACHED_GRAMMARS)


def digest_of(material: Any, field: str) -> str:
    try:
        encoded = json.dumps(material, sort_keys=True).encode()
    except RecursionError:
        raise SchemaError(f"the schema nests more than {MAX_DEPTH} levels deep", field) from None
    return hashlib.sha256(encoded).hexdigest()


def json_grammar(schema: dict[str, Any] | None, *, strict: bool, field: str) -> str:
    """The grammar of a JSON instance of `schema` (None: any JSON object)."""
    schema = ANY_OBJECT if schema is None else schema
    digest = digest_of(["json", schema, strict], field)
    grammar = _cache.get(digest)
    if grammar is None:
        checked = checked_schema(schema, strict=strict, field=field)
        grammar = _convert(checked, field, root="")
        _cache.put(digest, grammar)
    return grammar


def tool_call_grammar(
    functions: Sequence[FunctionSpec],
    *,
    text_allowed: bool,
    parallel: bool,
    syntax: ToolSyntax = GENERIC,
) -> str:
    """The grammar of a tool format (`tool_format.py`): the generic one's JSON object
    (see `tool_calls_schema`), or each call framed as the template's format writes it;
    with `text_allowed` (tool_choice "auto"), a plain answer is the other way out."""
    material = [
        "tools",
        [_function_material(function) for function in functions],
        text_allowed,
        parallel,
        syntax.name,
    ]
    digest = digest_of(material, "tools")
    grammar = _cache.get(digest)
    if grammar is None:
        grammar = _tool_call_grammar(functions, text_allowed, parallel, syntax)
        _cache.put(digest, grammar)
    return grammar


def _tool_call_grammar(
    functions: Sequence[FunctionSpec], text_allowed: bool, parallel: bool, syntax: ToolSyntax
) -> str:
    if syntax is GENERIC:
        schema = tool_calls_schema(functions, parallel=parallel)
        calls = _convert(schema, "tools", root="calls" if text_allowed else "")
    else:
        one_call = _convert(one_call_schema(functions), "tools", root="call")
        more = MAX_PARALLEL_CALLS - 1 if parallel else 0
        repeat = f' ("\\n" framed-call){{0,{more}}}' if more else ""
        framed = f'framed-call ::= "{syntax.before_call}" call "{syntax.after_call}"'
        root = "calls" if text_allowed else "root"
        calls = f"{root} ::= framed-call{repeat}\n{framed}\n{one_call}"
    if not text_allowed:
        return calls
    # A plain answer starts with anything but what starts calls.
    text_rule = f"answer-text ::= [^{syntax.starts_calls}] [^\\x00]*"
    return f"root ::= calls | answer-text\n{text_rule}\n{calls}"


def _function_material(function: FunctionSpec) -> dict[str, Any]:
    return {"name": function.name, "parameters": function.parameters, "strict": function.strict}


def one_call_schema(functions: Sequence[FunctionSpec]) -> dict[str, Any]:
    """`{"name": ..., "arguments": {...}}`: a call of one of the given functions, with
    arguments of its own schema. Each function's `$defs` move to the root under its own
    prefix, its `$ref`s with them."""
    defs: dict[str, Any] = {}
    calls = []
    for index, function in enumerate(functions):
        field = f"tools[{index}].function.parameters"
        parameters = checked_schema(
            function.parameters or ANY_OBJECT, strict=bool(function.strict), field=field
        )
        parameters = _rooted(parameters, f"f{index}-", defs)
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": function.name}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"anyOf": calls} if len(calls) > 1 else calls[0]
    return {**schema, "$defs": defs} if defs else schema


def tool_calls_schema(functions: Sequence[FunctionSpec], *, parallel: bool) -> dict[str, Any]:
    """`{"tool_calls": [{"name": ..., "arguments": {...}}, ...]}`: one call (or several,
    with `parallel`) of the given functions (`one_call_schema`), the generic format."""
    items = one_call_schema(functions)
    defs = items.pop("$defs", None)
    # A bound on calls at once: a small model can otherwise repeat a call until max_tokens.
    most = MAX_PARALLEL_CALLS if parallel else 1
    array: dict[str, Any] = {"type": "array", "items": items, "minItems": 1, "maxItems": most}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"tool_calls": array},
        "required": ["tool_calls"],
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def checked_schema(schema: Any, *, strict: bool, field: str) -> dict[str, Any]:
    """A copy of `schema` the converter honours in full: with `strict`, a SchemaError for
    the first keyword it cannot honour; without, such keywords are left out."""
    if not isinstance(schema, dict):
        raise SchemaError("a schema must be a JSON object", field)
    try:
        checked: dict[str, Any] = copy.deepcopy(schema)
    except RecursionError:
        raise SchemaError(f"the schema nests more than {MAX_DEPTH} levels deep", field) from None
    for node, path in _nodes(checked, field):
        _check_node(node, path, strict=strict)
    for node, _ in _nodes(checked, field):
        if node.get("items") == {}:  # any items (maybe emptied above): the converter
            del node["items"]  # fails on `{}`, and reads its absence as "any"
    return checked


def _nodes(schema: dict[str, Any], path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every subschema with its path, the root first (iterative: no recursion here; the
    converter's is bounded by MAX_DEPTH)."""
    stack: list[tuple[Any, str, int]] = [(schema, path, 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, bool):
            continue  # `true` / `false` schemas (additionalProperties)
        if not isinstance(node, dict):
            raise SchemaError("a schema must be a JSON object or a boolean", where)
        if depth > MAX_DEPTH:
            raise SchemaError(f"the schema nests more than {MAX_DEPTH} levels deep", where)
        yield node, where
        children = list(_children(node, where))
        stack.extend((child, at, depth + 1) for child, at in children)


def _children(node: dict[str, Any], where: str) -> Iterator[tuple[Any, str]]:
    """A schema's direct subschemas, with their paths."""
    for key in ("properties", "$defs", "definitions"):
        children = node.get(key, {})
        if not isinstance(children, dict):
            raise SchemaError(f"'{key}' must be an object", f"{where}.{key}")
        yield from ((child, f"{where}.{key}.{name}") for name, child in children.items())
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key not in node:
            continue
        children = node[key]
        if not isinstance(children, list) or not children:
            raise SchemaError(f"'{key}' must be a non-empty array", f"{where}.{key}")
        yield from ((child, f"{where}.{key}[{i}]") for i, child in enumerate(children))
    items = node.get("items")
    if isinstance(items, list):
        yield from ((child, f"{where}.items[{i}]") for i, child in enumerate(items))
    elif items is not None:
        yield items, f"{where}.items"
    if isinstance(node.get("additionalProperties"), dict):
        yield node["additionalProperties"], f"{where}.additionalProperties"


def _check_node(node: dict[str, Any], path: str, *, strict: bool) -> None:
    for key in list(node):
        if key in ANNOTATIONS:
            continue
        if key not in HONOURED or not _honoured_value(key, node[key], path):
            if strict:
                raise SchemaError(
                    f"'{key}' cannot be enforced by this server's grammar sampler "
                    "(send strict: false to have it ignored)",
                    f"{path}.{key}",
                )
            del node[key]
    types = node.get("type")
    for name in types if isinstance(types, list) else [types] if types is not None else []:
        if name not in TYPES:
            raise SchemaError(f"unknown type {name!r}", f"{path}.type")
    ref = node.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
        raise SchemaError("only references within the schema (#/...) are allowed", path)
    if "required" in node and not isinstance(node["required"], list):
        raise SchemaError("'required' must be an array", f"{path}.required")
    if "enum" in node and (not isinstance(node["enum"], list) or not node["enum"]):
        raise SchemaError("'enum' must be a non-empty array", f"{path}.enum")


def _honoured_value(key: str, value: Any, path: str) -> bool:
    """Whether the converter honours this keyword's value as given."""
    if key == "format":
        return value in FORMATS
    if key in ("minItems", "maxItems", "minLength", "maxLength"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SchemaError(f"'{key}' must be a non-negative integer", f"{path}.{key}")
        return value <= MAX_REPETITION
    return True


def _rooted(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move `schema`'s definitions into `defs` under `prefix`, rewriting its references."""
    own = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}
    for name, definition in own.items():
        defs[prefix + name] = definition
    nodes = [node for tree in (schema, *own.values()) for node, _ in _nodes(tree, "schema")]
    for node in nodes:
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.removeprefix("#/$defs/").removeprefix("#/definitions/")
            if name == ref or "/" in name:
                raise SchemaError("a tool's parameters may only refer to their own $defs", "tools")
            node["$ref"] = f"#/$defs/{prefix}{name}"
    return schema


def _convert(schema: dict[str, Any], field: str, *, root: str) -> str:
    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    try:
        resolved = converter.resolve_refs(schema, "input")
        converter.visit(resolved, root)  # type: ignore[no-untyped-call]
    except RecursionError:
        raise SchemaError("the schema nests too deeply", field) from None
    except Exception as exc:  # the converter asserts and raises bare errors
        raise SchemaError(f"the schema cannot be converted to a grammar: {exc}", field) from None
    # JSON strings hold no raw control characters (the converter's rule allows them).
    grammar: str = converter.format_grammar()  # type: ignore[no-untyped-call]
    return grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
