"""One OpenAI-compatible server: its connection pool, breaker and load.

Credentials written in a server's URL (`http://user:password@host/v1`) are taken out of it
here and sent as HTTP basic auth, as httpx would: the URL the node keeps and requests is
the one without them, so httpx's own log lines ("HTTP Request: POST <url>") and its error
messages never carry them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from modules.llm.inference.descriptions import NodeDescription, public_url, redact
from modules.llm.inference.errors import QueueFullError, UnsupportedRequestError
from modules.llm.inference.remote.breaker import CircuitBreaker
from modules.llm.inference.remote.chunks import ChunkReader, Output


class RemoteError(Exception):
    """The server failed before its first token: worth another try, here or elsewhere.
    (A request it refuses, a 400 or 422, is the client's: an UnsupportedRequestError.)"""


class RemoteNode:
    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: httpx.Timeout):
        self.base_url, self.auth = without_credentials(base_url.rstrip("/"))
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout
        self.breaker = CircuitBreaker()
        self.in_flight = 0
        self.turns = 0  # generations sent here: each node's share
        self.last_ttft: float | None = None
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def name(self) -> str:
        return public_url(self.base_url)

    @property
    def healthy(self) -> bool:
        return not self.breaker.is_open

    def describe(self) -> NodeDescription:
        return NodeDescription(
            url=self.name,
            model=self.model,
            up=self.healthy,
            in_flight=self.in_flight,
            turns=self.turns,
            latency_seconds=self.last_ttft,
        )

    def client(self) -> httpx.AsyncClient:
        # One pool per node, kept: a new client per request costs an SSL context and a
        # connection before the first token.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, headers=self.headers, auth=self.auth
            )
            self._loop = asyncio.get_running_loop()
        return self._client

    async def stream(
        self, path: str, payload: dict[str, Any], on_output: Callable[[Output], None]
    ) -> ChunkReader:
        """POST a streaming request; `on_output` gets each text or tool-call piece as it
        comes. Returns the reader, which holds the usage the server reported (empty when
        none) and each choice's finish reason."""
        reader = ChunkReader()
        try:
            async with self.client().stream(
                "POST", self.base_url + path, json={**payload, "model": self.model}
            ) as response:
                await _raise_for_status(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    for output in _read(reader, data):
                        on_output(output)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise RemoteError(redact(str(exc))) from exc
        return reader

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST a request whose answer is one JSON object (embeddings), with the errors of
        `stream`: a full server is a QueueFullError, a refusal an UnsupportedRequestError,
        any other failure a RemoteError."""
        try:
            response = await self.client().post(
                self.base_url + path, json={**payload, "model": self.model}
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise RemoteError(redact(str(exc))) from exc
        await _raise_for_status(response)
        try:
            answer = response.json()
        except ValueError as exc:  # not JSON
            raise RemoteError("the server sent a malformed answer") from exc
        if not isinstance(answer, dict):
            raise RemoteError("the server sent a malformed answer")
        return answer

    def close(self) -> None:
        """Blocking, from a worker thread: close the pool on the loop that made it."""
        client, loop, self._client = self._client, self._loop, None
        if client is not None and loop is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
            except Exception:  # best effort: the process is usually going away
                return


def resolve_model(base_url: str, api_key: str | None, timeout: float = 10) -> str:
    """Blocking: the first model the server lists at /models. A failure names the server by
    its public URL: httpx's own messages carry the URL as configured, credentials and all."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    base_url, auth = without_credentials(base_url.rstrip("/"))
    where = f"{public_url(base_url)}/models"
    try:
        response = httpx.get(f"{base_url}/models", headers=headers, auth=auth, timeout=timeout)
        response.raise_for_status()
        model: str = response.json()["data"][0]["id"]
    except httpx.HTTPStatusError as exc:
        raise RemoteError(f"{where} answered {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise RemoteError(f"{where}: {redact(str(exc)) or type(exc).__name__}") from None
    except (ValueError, LookupError, TypeError):
        raise RemoteError(f"{where} listed no model") from None
    return model


async def _raise_for_status(response: httpx.Response) -> None:
    """A full server is a QueueFullError, a refused request an UnsupportedRequestError (the
    request's fault, not the server's), any other failure a RemoteError."""
    if response.status_code in (429, 503):
        retry = response.headers.get("retry-after", "1")
        raise QueueFullError(int(retry) if retry.isdigit() else 1)
    if response.status_code in (400, 422):
        raise UnsupportedRequestError(await _refusal(response))
    if response.status_code >= 400:
        raise RemoteError(f"the server answered {response.status_code}")


async def _refusal(response: httpx.Response) -> str:
    """Why a server refused a request: its error's message (OpenAI's `error.message`, or
    vLLM's top-level `message`), read from at most the body's first few KiB."""
    body = b""
    async for part in response.aiter_bytes():
        body += part
        if len(body) > 4096:
            break
    try:
        answer = json.loads(body)
        message = (answer.get("error") or answer)["message"]
    except (ValueError, LookupError, TypeError, AttributeError):
        message = None
    said = f": {redact(message)[:300]}" if isinstance(message, str) and message else ""
    return f"the model's server refused the request{said}"


def _read(reader: ChunkReader, data: str) -> list[Output]:
    try:
        return list(reader.read(json.loads(data)))
    except (LookupError, TypeError, AttributeError) as exc:  # JSON, not of OpenAI's shape
        raise RemoteError(f"the server sent a malformed chunk: {type(exc).__name__}") from exc


def without_credentials(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without its `user:password@`, and those as basic auth (None when none)."""
    where = urlsplit(url)
    if where.username is None and where.password is None:
        return url, None
    netloc = where.netloc.rpartition("@")[2]
    auth = httpx.BasicAuth(unquote(where.username or ""), unquote(where.password or ""))
    return urlunsplit(where._replace(netloc=netloc)), auth
