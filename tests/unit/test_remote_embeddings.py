"""Embeddings on a remote pool, against fake OpenAI-compatible servers: the request passed
through, the answer read in either encoding, a refusal kept the client's, a failing node
left for another."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from modules.llm.inference import BackendUnavailableError, UnsupportedRequestError
from modules.llm.inference.embeddings import EmbeddingOptions, to_base64
from modules.llm.inference.remote import RemoteBackend, RemoteNode


class FakeEmbeddings(BaseHTTPRequestHandler):
    """Answers /embeddings with one vector per input ([index, 1, 0] in the encoding asked
    for), or `status` with `refusal` where set; keeps each request."""

    url: ClassVar[str]
    status: ClassVar[int]
    refusal: ClassVar[dict[str, Any]]
    requests: ClassVar[list[tuple[str, dict[str, Any]]]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        if self.status != 200:
            self._send(self.status, self.refusal)
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index in range(len(inputs)):
            vector = np.array([index, 1.0, 0.0], dtype=np.float32)
            embedding = (
                to_base64(vector) if body.get("encoding_format") == "base64" else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        data.reverse()  # out of order: read by `index`
        usage = {"prompt_tokens": 7 * len(inputs), "total_tokens": 7 * len(inputs)}
        self._send(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

    def _send(self, status: int, answer: dict[str, Any]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(answer).encode())

    def log_message(self, *_: object) -> None:
        return


def start(status: int = 200, refusal: dict[str, Any] | None = None) -> Any:
    class Scripted(FakeEmbeddings):
        pass

    Scripted.status, Scripted.refusal, Scripted.requests = status, refusal or {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    Scripted.url = f"http://127.0.0.1:{httpd.server_port}/v1"
    return httpd, Scripted


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    started: list[Any] = []
    yield started
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def pool(servers: list[Any], *statuses: int, refusal: dict[str, Any] | None = None) -> Any:
    handlers = []
    for status in statuses:
        httpd, handler = start(status, refusal)
        servers.append(httpd)
        handlers.append(handler)
    nodes = [RemoteNode(h.url, f"model-{i}", "key", httpx.Timeout(5)) for i, h in
             enumerate(handlers)]  # fmt: skip
    return RemoteBackend("far", nodes, context_size=4096), handlers


async def embed(backend: RemoteBackend, inputs: list[Any], **options: Any) -> Any:
    request = backend.embedding_request(inputs, EmbeddingOptions(**options))
    try:
        return await backend.embed(request, within_seconds=10)
    finally:
        for node in backend.nodes:
            await node.client().aclose()


async def test_the_request_passes_through_and_floats_come_back(servers: list[Any]) -> None:
    backend, (server,) = pool(servers, 200)
    answer = await embed(backend, ["one", "two"], dimensions=3, user="u-1")
    ((path, body),) = server.requests
    assert path == "/v1/embeddings"
    assert body == {
        "input": ["one", "two"],
        "model": "model-0",
        "encoding_format": "float",
        "dimensions": 3,
        "user": "u-1",
    }
    assert [v.tolist() for v in answer.vectors] == [[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    assert answer.prompt_tokens == 14  # the server's own count


async def test_base64_and_token_arrays_pass_through(servers: list[Any]) -> None:
    backend, (server,) = pool(servers, 200)
    answer = await embed(backend, [(1, 2, 3), (4,)], encoding_format="base64")
    ((_, body),) = server.requests
    assert body["input"] == [[1, 2, 3], [4]]
    assert body["encoding_format"] == "base64"
    assert "dimensions" not in body
    assert answer.vectors[1].dtype == np.float32
    assert answer.vectors[1].tolist() == [1.0, 1.0, 0.0]


async def test_a_refusal_is_the_clients_and_no_node_is_blamed(servers: list[Any]) -> None:
    refusal = {"error": {"message": "dimensions is not supported by this model"}}
    backend, handlers = pool(servers, 400, 400, refusal=refusal)
    with pytest.raises(UnsupportedRequestError) as raised:
        await embed(backend, ["x"], dimensions=2)
    assert "dimensions is not supported" in str(raised.value)
    assert sum(len(h.requests) for h in handlers) == 1  # tried nowhere else
    assert all(node.breaker.failures == 0 for node in backend.nodes)


async def test_a_failing_node_is_left_for_another(servers: list[Any]) -> None:
    backend, handlers = pool(servers, 500, 200)
    # Whichever node the input's hash prefers: the answer comes from the working one.
    answer = await embed(backend, ["x"])
    assert len(answer.vectors) == 1
    assert len(handlers[1].requests) == 1
    assert all(node.in_flight == 0 for node in backend.nodes)


async def test_every_node_down_is_unavailable(servers: list[Any]) -> None:
    backend, handlers = pool(servers, 500)
    with pytest.raises(BackendUnavailableError):
        await embed(backend, ["x"])
    assert len(handlers[0].requests) == 2  # a single node gets one more try
    assert backend.nodes[0].breaker.failures == 2
