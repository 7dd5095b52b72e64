"""Embeddings on a remote pool: the request passed through to a node's /embeddings, its
answer read back as vectors (float lists or base64, whichever the server sent). A node
that is full or fails is left for another one, as before a generation's first token (a
failing single node gets one more try); a request the server refuses (a 400) is the
client's, tried nowhere else."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from modules.llm.inference.embeddings import EmbeddingRequest, Embeddings, Vector, from_base64
from modules.llm.inference.errors import (
    BackendUnavailableError,
    QueueFullError,
    UnsupportedRequestError,
)
from modules.llm.inference.remote.node import RemoteError, RemoteNode
from modules.llm.inference.remote.routing import OPENING_CHARS, choose

if TYPE_CHECKING:
    from modules.llm.inference.remote.backend import RemoteBackend


def payload(request: EmbeddingRequest) -> dict[str, Any]:
    """OpenAI's body as the client sent it (the inputs sanitized), defaults left out."""
    options = request.options
    body: dict[str, Any] = {
        "input": [item if isinstance(item, str) else list(item) for item in request.inputs],
        "encoding_format": options.encoding_format,
    }
    if options.dimensions is not None:
        body["dimensions"] = options.dimensions
    if options.user is not None:
        body["user"] = options.user
    return body


async def remote_embeddings(
    backend: RemoteBackend, request: EmbeddingRequest, within_seconds: float
) -> Embeddings:
    first = request.inputs[0] if request.inputs else ""
    key = first[:OPENING_CHARS] if isinstance(first, str) else str(first[:OPENING_CHARS])
    try:
        async with asyncio.timeout(within_seconds):
            return await _attempts(backend, request, key)
    except TimeoutError:
        error: Exception = TimeoutError("no answer in time")
    except (RemoteError, httpx.HTTPError) as exc:
        error = exc
    backend.stats.failed += 1
    raise BackendUnavailableError(f"model {backend.alias!r}: its server failed") from error


async def _attempts(backend: RemoteBackend, request: EmbeddingRequest, key: str) -> Embeddings:
    nodes = backend.nodes
    node = choose(nodes, key)
    if node is None:
        backend.stats.rejected += 1
        raise BackendUnavailableError(
            f"model {backend.alias!r} is unavailable: its server keeps failing"
        )
    body = payload(request)
    tried: set[RemoteNode] = set()
    attempts = max(2, len(nodes))
    for attempt in range(1, attempts + 1):
        current = node  # `node` may change in a handler, before `finally` runs
        current.in_flight += 1
        try:
            answer = _read(await node.post("/embeddings", body), request)
        except QueueFullError:
            tried.add(node)
            other = choose(nodes, key, exclude=tried)
            if other is None:
                raise
            node = other
            continue
        except UnsupportedRequestError:
            node.breaker.succeeded()  # the client's fields: every node would refuse them
            raise
        except (RemoteError, httpx.HTTPError):
            node.breaker.failed()
            if attempt == attempts:
                raise
            tried.add(node)
            node = choose(nodes, key, exclude=tried) or node
            continue
        finally:
            current.in_flight -= 1
        node.breaker.succeeded()
        return answer
    raise RemoteError("no node answered")


def _read(answer: dict[str, Any], request: EmbeddingRequest) -> Embeddings:
    """The vectors in input order, and the server's count of tokens (ours without it)."""
    try:
        items = sorted(answer["data"], key=lambda item: int(item.get("index") or 0))
        vectors = tuple(_vector(item["embedding"]) for item in items)
        usage = answer.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or request.total_tokens)
    except (LookupError, TypeError, ValueError, AttributeError) as exc:
        raise RemoteError(f"the server sent a malformed answer: {type(exc).__name__}") from exc
    if len(vectors) != len(request.inputs):
        raise RemoteError(f"the server sent {len(vectors)} embeddings for {len(request.inputs)}")
    return Embeddings(vectors, prompt_tokens)


def _vector(embedding: Any) -> Vector:
    if isinstance(embedding, str):
        return from_base64(embedding)
    if not isinstance(embedding, list):
        raise TypeError("an embedding is a list of numbers or base64")
    return np.asarray(embedding, dtype=np.float32)
