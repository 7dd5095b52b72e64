"""The remote backend's pure parts: the control strings sent models must never receive, the
circuit breaker, which node of a pool takes a turn, and what is shown of a server."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from modules.llm.inference import (
    BackendUnavailableError,
    ChatMessage,
    Event,
    Failed,
    Finished,
    FunctionSpec,
    JsonSchemaSpec,
    NamedToolChoice,
    ResponseFormat,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    UnsupportedRequestError,
)
from modules.llm.inference.descriptions import redact
from modules.llm.inference.remote import (
    REMOTE_CONTROL_TOKENS,
    CircuitBreaker,
    RemoteBackend,
    RemoteNode,
    affinity_key,
    choose,
    home,
    public_url,
)
from modules.llm.inference.remote.node import RemoteError, resolve_model, without_credentials
from modules.llm.inference.remote.routing import IMBALANCE
from modules.llm.inference.sampling import DEFAULTS
from modules.llm.inference.structured import NamedFunction
from modules.sanitizer import Sanitizer


def basic_auth(user: str, password: str) -> str:
    """The Authorization header HTTP basic auth sends (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("token", REMOTE_CONTROL_TOKENS)
def test_every_family_control_string_is_removed(token: str) -> None:
    sanitizer = Sanitizer(control_tokens=REMOTE_CONTROL_TOKENS)
    cleaned = sanitizer.clean(f"before {token} after").text
    assert token not in cleaned
    assert cleaned.startswith("before") and cleaned.endswith("after")  # noqa: PT018


def test_the_families_are_all_there() -> None:
    for family_marker in ("<|im_start|>", "[INST]", "<|eot_id|>", "<start_of_turn>", "<|end|>",
                          "<｜Assistant｜>", "<tool_call>"):  # fmt: skip
        assert family_marker in REMOTE_CONTROL_TOKENS


def test_the_breaker_opens_after_failures_in_a_row_and_closes_on_success() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # the count is of failures in a row
    breaker.failed()
    breaker.failed()
    assert not breaker.is_open
    breaker.failed()
    assert breaker.is_open
    breaker.open_until = 0  # the cooldown has passed: one request may try
    assert not breaker.is_open
    breaker.succeeded()
    assert breaker.failures == 0


def pool(count: int) -> list[RemoteNode]:
    return [
        RemoteNode(f"http://10.0.0.{n}:8080/v1", "m", None, httpx.Timeout(1))
        for n in range(1, count + 1)
    ]


def opening(n: int) -> str:
    return affinity_key([ChatMessage("system", "Be brief."), ChatMessage("user", f"Topic {n}")])


def test_a_conversation_keeps_its_node_whatever_follows_its_opening() -> None:
    nodes = pool(3)
    first = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello")]
    later = [*first, ChatMessage("assistant", "Hi."), ChatMessage("user", "And then?")]
    assert affinity_key(first) == affinity_key(later)
    assert choose(nodes, affinity_key(first)) is choose(nodes, affinity_key(later))
    # Another replica with its own node objects picks the same server: no shared state.
    other = pool(3)
    for n in range(20):
        assert home(opening(n), nodes).name == home(opening(n), other).name


def test_conversations_spread_and_only_a_failed_nodes_move() -> None:
    nodes = pool(3)
    homes = {n: home(opening(n), nodes) for n in range(300)}
    shares = [sum(1 for node in homes.values() if node is each) for each in nodes]
    assert min(shares) > 60  # about 100 each
    down = nodes[1]
    for _ in range(down.breaker.threshold):
        down.breaker.failed()
    for n, before in homes.items():
        after = choose(nodes, opening(n))
        assert after is not down
        if before is not down:
            assert after is before  # the others' conversations keep their caches


def test_a_busy_home_gives_the_turn_to_the_least_busy_node() -> None:
    nodes = pool(2)
    key = opening(1)
    own = home(key, nodes)
    other = next(node for node in nodes if node is not own)
    own.in_flight = IMBALANCE - 1
    assert choose(nodes, key) is own
    own.in_flight = IMBALANCE
    assert choose(nodes, key) is other
    assert choose(nodes, key, exclude=[other]) is own
    assert choose(nodes, key, exclude=nodes) is None


def test_server_names_never_carry_credentials() -> None:
    assert public_url("https://user:secret@gpu-1:8443/v1/#qwen") == "https://gpu-1:8443/v1"
    assert public_url("http://gpu-2/v1") == "http://gpu-2/v1"


def test_redaction_hides_credentials_and_directories_in_any_text() -> None:
    status = (
        "Client error '401 Unauthorized' for url 'http://user:s3cret@gpu-1:8443/v1/models'\n"
        "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401"
    )
    assert redact(status) == (
        "Client error '401 Unauthorized' for url 'http://gpu-1:8443/v1/models'\n"
        "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401"
    )
    assert redact("Model path does not exist: /srv/private/q.gguf.") == (
        "Model path does not exist: q.gguf."
    )
    # A directory with a space in its name, home-relative paths, paths after `=` or in
    # brackets; a slash that is not a path stays.
    assert redact("from file: /srv/my models/q.gguf") == "from file: q.gguf"
    assert redact("path=~/models/a.gguf (/opt/b.gguf), 3 / 4 and 50/50") == (
        "path=a.gguf (b.gguf), 3 / 4 and 50/50"
    )
    # What the caller knows is in it goes first, whatever it holds.
    assert redact("cannot read /data/x, y/z.gguf", ["/data/x, y/z.gguf"]) == "cannot read z.gguf"
    assert redact("https://u:p@[::1]:8080/v1?key=k#model") == "https://[::1]:8080/v1"


def test_credentials_in_a_url_travel_as_basic_auth_not_in_the_url() -> None:
    node = RemoteNode("https://user:s%40cret@gpu-1:8443/v1/", "m", None, httpx.Timeout(1))
    assert node.base_url == node.name == "https://gpu-1:8443/v1"
    assert node.auth is not None
    request = next(node.auth.auth_flow(httpx.Request("GET", node.base_url)))
    assert request.headers["Authorization"] == basic_auth("user", "s@cret")
    assert without_credentials("http://gpu-2/v1") == ("http://gpu-2/v1", None)


class Refusing(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(401)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def test_a_server_that_refuses_is_named_without_its_credentials() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://user:s3cret@127.0.0.1:{server.server_port}/v1"
        with pytest.raises(RemoteError) as refused:
            resolve_model(url, None, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert str(refused.value) == f"http://127.0.0.1:{server.server_port}/v1/models answered 401"
    assert Refusing.seen == [basic_auth("user", "s3cret")]  # still sent


# What passes through to a server and back: a fake OpenAI-compatible server streams
# scripted chunks and keeps what it was asked.


class FakeOpenAI(BaseHTTPRequestHandler):
    """Streams `chunks` as server-sent events to any POST, or answers 400 with `refusal`
    where there is one; keeps each request."""

    url: ClassVar[str]
    chunks: ClassVar[list[dict[str, Any]]]
    refusal: ClassVar[dict[str, Any] | None]
    requests: ClassVar[list[tuple[str, dict[str, Any]]]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        if self.refusal is not None:
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(self.refusal).encode())
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for chunk in self.chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[type[FakeOpenAI]]:
    class Scripted(FakeOpenAI):  # this test's own script and requests
        pass

    Scripted.chunks, Scripted.refusal, Scripted.requests = [], None, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    Scripted.url = f"http://127.0.0.1:{httpd.server_port}/v1"
    yield Scripted
    httpd.shutdown()
    httpd.server_close()


async def generate(
    server: type[FakeOpenAI],
    params: SamplingParams = DEFAULTS,
    messages: Sequence[ChatMessage] = (ChatMessage("user", "Hi"),),
    *,
    raw: bool = False,
    node: RemoteNode | None = None,
) -> list[Event]:
    """Every event of one generation on the server (through `node` where given)."""
    node = node or RemoteNode(server.url, "m", None, httpx.Timeout(5))
    backend = RemoteBackend("far", [node], context_size=4096)
    if raw:
        prompt = await backend.text_prompt(messages[0].content)
    else:
        prompt = await backend.chat_prompt(messages)
    resolved = params.resolved(temperature=0.0, max_tokens=8)
    try:
        generation = backend.stream(prompt, resolved, owner="u", timeout=10)
        return [event async for event in generation.events()]
    finally:
        await node.client().aclose()


def chunk(*choices: dict[str, Any], usage: dict[str, int] | None = None) -> dict[str, Any]:
    return {"object": "chat.completion.chunk", "choices": list(choices), "usage": usage}


def choice(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


def sent(server: type[FakeOpenAI]) -> dict[str, Any]:
    ((_, body),) = server.requests
    return body


WEATHER = Tool(
    function=FunctionSpec(
        name="weather",
        description="Today's weather in a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
)


async def test_the_request_carries_openai_fields_as_sent_never_a_grammar(
    server: type[FakeOpenAI],
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params = SamplingParams(
        response_format=ResponseFormat(
            type="json_schema", json_schema=JsonSchemaSpec(name="answer", schema=schema)
        ),
        tools=(WEATHER,),
        tool_choice=NamedToolChoice(function=NamedFunction("weather")),
        parallel_tool_calls=False,
        logprobs=True,
        top_logprobs=2,
        n=2,
        grammar='root ::= "x"',
    )
    await generate(server, params)
    body = sent(server)
    assert server.requests[0][0] == "/v1/chat/completions"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema},
    }
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Today's weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert (body["parallel_tool_calls"], body["logprobs"], body["top_logprobs"]) == (False, True, 2)
    assert body["n"] == 2
    assert "grammar" not in body
    assert body["model"] == "m"


async def test_defaults_stay_out_of_the_request(server: type[FakeOpenAI]) -> None:
    await generate(server, SamplingParams(grammar='root ::= "x"'))
    left_out = {"response_format", "tools", "tool_choice", "parallel_tool_calls", "logprobs",
                "top_logprobs", "n", "grammar"}  # fmt: skip
    assert not left_out & set(sent(server))
    assert sent(server)["messages"] == [{"role": "user", "content": "Hi"}]


async def test_a_raw_prompt_asks_completions_for_logprobs_by_count(
    server: type[FakeOpenAI],
) -> None:
    params = SamplingParams(
        response_format=ResponseFormat(type="json_object"), logprobs=True, top_logprobs=3
    )
    await generate(server, params, (ChatMessage("user", "Once upon"),), raw=True)
    body = sent(server)
    assert server.requests[0][0] == "/v1/completions"
    assert body["prompt"] == "Once upon"
    assert body["logprobs"] == 3  # the number of alternatives: OpenAI's completions shape
    assert body["response_format"] == {"type": "json_object"}
    assert "top_logprobs" not in body
    assert "messages" not in body


async def test_tool_calls_and_results_are_sent_in_openai_shape(server: type[FakeOpenAI]) -> None:
    call = ToolCall(id="call_1", name="weather", arguments='{"city": "Paris"}')
    messages = (
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"sky": "clear"}', tool_call_id="call_1"),
    )
    await generate(server, SamplingParams(tools=(WEATHER,)), messages)
    assert sent(server)["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"sky": "clear"}', "tool_call_id": "call_1"},
    ]


def piece(index: int, arguments: str, **first: str) -> dict[str, Any]:
    """A piece of a streamed tool call; its first one has an `id` and a `name`."""
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if first:
        call.update(id=first["id"], type="function")
        call["function"]["name"] = first["name"]
    return call


async def test_tool_calls_stream_back_in_pieces(server: type[FakeOpenAI]) -> None:
    server.chunks = [
        chunk(choice(content=None, tool_calls=[piece(0, "", id="c1", name="weather")])),
        chunk(choice(tool_calls=[piece(0, '{"city": ')])),
        chunk(choice(tool_calls=[piece(0, '"Paris"}')])),
        # A second call; the server repeats its id and name: they pass once.
        chunk(choice(tool_calls=[piece(1, '{"city": "Oslo"}', id="c2", name="weather")])),
        chunk(choice(tool_calls=[piece(1, "", id="c2", name="weather")])),
        chunk(choice(finish="tool_calls")),
        chunk(usage={"prompt_tokens": 12, "completion_tokens": 9}),
    ]  # fmt: skip
    *deltas, finished = await generate(server, SamplingParams(tools=(WEATHER,)))
    assert deltas == [
        ToolCallDelta(0, id="c1", name="weather"),
        ToolCallDelta(0, arguments='{"city": '),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, id="c2", name="weather", arguments='{"city": "Oslo"}'),
        ToolCallDelta(1),
    ]
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "tool_calls"
    assert finished.choice_reasons == ()
    assert (finished.prompt_tokens, finished.completion_tokens) == (12, 9)


async def test_chat_logprobs_come_back_with_their_alternatives(server: type[FakeOpenAI]) -> None:
    server.chunks = [
        chunk(
            {
                "index": 0,
                "delta": {"content": "Hi"},
                "logprobs": {
                    "content": [
                        {
                            "token": "Hi",
                            "logprob": -0.25,
                            "bytes": [72, 105],
                            "top_logprobs": [
                                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                                {"token": "é", "logprob": -2.0, "bytes": None},
                            ],
                        }
                    ]
                },
                "finish_reason": "length",
            }
        )
    ]
    delta, finished = await generate(server, SamplingParams(logprobs=True, top_logprobs=2))
    assert delta == TokenDelta(
        "Hi",
        logprobs=(
            TokenLogprob(
                "Hi",
                -0.25,
                (72, 105),
                top=(TopLogprob("Hi", -0.25, (72, 105)), TopLogprob("é", -2.0, (0xC3, 0xA9))),
            ),
        ),
    )
    assert isinstance(finished, Finished)
    assert finished.finish_reason == "length"
    assert finished.completion_tokens == 1  # counted: the server sent no usage


async def test_completion_logprobs_come_back_in_the_same_shape(server: type[FakeOpenAI]) -> None:
    server.chunks = [
        {
            "object": "text_completion",
            "choices": [
                {
                    "index": 0,
                    "text": " a time",
                    "logprobs": {
                        "tokens": [" a", " time"],
                        "token_logprobs": [-0.5, -0.1],
                        "top_logprobs": [{" a": -0.5, " the": -1.5}, None],
                        "text_offset": [9, 11],
                    },
                    "finish_reason": "stop",
                }
            ],
        }
    ]
    params = SamplingParams(logprobs=True, top_logprobs=2)
    delta, _ = await generate(server, params, (ChatMessage("user", "Once upon"),), raw=True)
    alternatives = (TopLogprob(" a", -0.5, tuple(b" a")), TopLogprob(" the", -1.5, tuple(b" the")))
    assert delta == TokenDelta(
        " a time",
        logprobs=(
            TokenLogprob(" a", -0.5, tuple(b" a"), top=alternatives),
            TokenLogprob(" time", -0.1, tuple(b" time")),  # bytes: the token's own
        ),
    )


async def test_choices_come_back_tagged_by_their_index(server: type[FakeOpenAI]) -> None:
    server.chunks = [
        chunk(choice(0, content="Red"), choice(1, content="Blue")),
        chunk(choice(1, content=" sky")),
        chunk(choice(0, content=" sun", finish="stop")),
        chunk(choice(1, finish="length")),
        chunk(usage={"prompt_tokens": 5, "completion_tokens": 4}),  # both choices' tokens
    ]  # fmt: skip
    *deltas, finished = await generate(server, SamplingParams(n=2))
    assert deltas == [
        TokenDelta("Red", 0),
        TokenDelta("Blue", 1),
        TokenDelta(" sky", 1),
        TokenDelta(" sun", 0),
    ]
    assert isinstance(finished, Finished)
    assert (finished.finish_reason, finished.choice_reasons) == ("stop", ("stop", "length"))
    assert (finished.prompt_tokens, finished.completion_tokens) == (5, 4)


async def test_a_chunk_not_of_openais_shape_fails_the_generation(server: type[FakeOpenAI]) -> None:
    server.chunks = [{"choices": "not a list of choices"}]
    (failed,) = await generate(server)
    assert isinstance(failed, Failed)
    assert isinstance(failed.error, BackendUnavailableError)
    assert len(server.requests) == 2  # nothing came back yet: worth one more try


async def refusal_of(server: type[FakeOpenAI], node: RemoteNode | None = None) -> Exception:
    (failed,) = await generate(server, SamplingParams(n=2), node=node)
    assert isinstance(failed, Failed)
    return failed.error


async def test_a_request_the_server_refuses_is_the_clients_not_the_servers_fault(
    server: type[FakeOpenAI],
) -> None:
    # llama-server's answer to `n` > 1: its error in OpenAI's shape.
    server.refusal = {"error": {"code": 400, "message": "Only one completion choice is allowed",
                                "type": "invalid_request_error"}}  # fmt: skip
    node = RemoteNode(server.url, "m", None, httpx.Timeout(5))
    node.breaker.failed()
    error = await refusal_of(server, node)
    assert isinstance(error, UnsupportedRequestError)  # a 400 for the client
    assert str(error) == (
        "the model's server refused the request: Only one completion choice is allowed"
    )
    assert len(server.requests) == 1  # not tried again
    assert node.breaker.failures == 0  # the server is well
    # vLLM's shape, and a body that says nothing.
    server.refusal = {"object": "error", "message": "n must be at most 1", "code": 400}
    assert str(await refusal_of(server)).endswith(": n must be at most 1")
    server.refusal = {}
    assert str(await refusal_of(server)) == "the model's server refused the request"
