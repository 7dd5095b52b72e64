"""One generation on a remote pool: tokens pass through as they arrive; before the first
token, a failed node is tried once more or left for another node. A request the server
refuses (a 400: fields it lacks, passed through) is the client's, tried nowhere else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from modules.llm.inference.backend import Prompt
from modules.llm.inference.chat_template import ChatMessage
from modules.llm.inference.errors import (
    BackendUnavailableError,
    QueueFullError,
    UnsupportedRequestError,
)
from modules.llm.inference.events import Event, Failed, Finished, FinishReason, drain
from modules.llm.inference.remote.chunks import ChunkReader, Output
from modules.llm.inference.remote.node import RemoteError, RemoteNode
from modules.llm.inference.remote.routing import choose
from modules.llm.inference.sampling import SamplingParams

if TYPE_CHECKING:
    from modules.llm.inference.remote.backend import RemoteBackend


class RemoteGeneration:
    def __init__(
        self,
        backend: RemoteBackend,
        node: RemoteNode,
        key: str,  # the conversation's affinity key: where to go if `node` fails
        prompt: Prompt,
        params: SamplingParams,
        timeout: float,
    ) -> None:
        self.backend = backend
        self.key = key
        self.prompt = prompt
        self.params = params
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.generated = 0
        self.first: float | None = None  # when the first token arrived
        # The node's load counts this generation from now (routing reads it) until the
        # task is done, however it ends: even cancelled before it started.
        self.node = node
        node.in_flight += 1
        node.turns += 1
        self.task = asyncio.get_running_loop().create_task(self._run(deadline=timeout))
        self.task.add_done_callback(lambda _: self._leave())

    def _leave(self) -> None:
        self.node.in_flight -= 1

    def _move_to(self, node: RemoteNode) -> None:
        if node is not self.node:
            self._leave()
            self.node = node
            node.in_flight += 1
            node.turns += 1

    def cancel(self) -> None:
        self.task.cancel()

    def events(self) -> AsyncIterator[Event]:
        return drain(self.queue, self.cancel)

    def _on_output(self, output: Output) -> None:
        self.first = self.first or time.monotonic()
        self.generated += 1  # a piece of text or of a tool call: output, not retried
        self.queue.put_nowait(output)

    def _request(self) -> tuple[str, dict[str, Any]]:
        """The endpoint and its body: OpenAI's fields as the client sent them, those left
        at their defaults left out (never `grammar`, a local model's own)."""
        params = self.params
        payload: dict[str, Any] = {
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.response_format is not None:  # llama-server reads it on /completions too
            payload["response_format"] = msgspec.to_builtins(params.response_format)
        if params.n > 1:
            payload["n"] = params.n
        if self.prompt.raw:
            payload["prompt"] = self.prompt.messages[0].content
            if params.logprobs:  # here, the number of alternatives
                payload["logprobs"] = params.top_logprobs
            return "/completions", payload
        if params.logprobs:
            # top_logprobs always: llama-server reads none as 20 alternatives.
            payload.update(logprobs=True, top_logprobs=params.top_logprobs)
        if params.tools:
            payload["tools"] = msgspec.to_builtins(params.tools)
        if params.tool_choice is not None:
            payload["tool_choice"] = msgspec.to_builtins(params.tool_choice)
        if params.parallel_tool_calls is not None:
            payload["parallel_tool_calls"] = params.parallel_tool_calls
        payload["messages"] = [_message(m) for m in self.prompt.messages]
        return "/chat/completions", payload

    async def _attempts(self) -> ChunkReader:
        """Stream from this generation's node. Before the first token, a full or failing
        node is left for another one (a failing single node gets one more try)."""
        nodes, key = self.backend.nodes, self.key
        path, payload = self._request()
        tried: set[RemoteNode] = set()
        attempts = max(2, len(nodes))
        for attempt in range(1, attempts + 1):
            node = self.node
            try:
                reader = await node.stream(path, payload, self._on_output)
            except QueueFullError:
                tried.add(node)
                other = choose(nodes, key, exclude=tried)
                if other is None:
                    raise
                self._move_to(other)
                continue
            except UnsupportedRequestError:
                # The client's fields (an `n` or `tools` this server lacks): the node is
                # well, and every other node would refuse them too.
                node.breaker.succeeded()
                raise
            except (RemoteError, httpx.HTTPError, ValueError):
                node.breaker.failed()
                if self.generated or attempt == attempts:
                    raise
                tried.add(node)
                self._move_to(choose(nodes, key, exclude=tried) or node)
                continue
            node.breaker.succeeded()
            return reader
        raise RemoteError("no node answered")

    async def _run(self, *, deadline: float) -> None:
        backend = self.backend
        started = time.monotonic()
        reader = ChunkReader()
        ending: FinishReason | None = None  # cut short: cancelled or timed out
        try:
            async with asyncio.timeout(deadline):
                reader = await self._attempts()
        except asyncio.CancelledError:
            ending = "cancelled"
        except TimeoutError:
            ending = "timeout"
        except (QueueFullError, UnsupportedRequestError) as exc:
            self.queue.put_nowait(Failed(exc))
            return
        except (RemoteError, httpx.HTTPError, ValueError) as exc:
            backend.stats.failed += 1
            error = BackendUnavailableError(f"model {backend.alias!r}: its server failed")
            error.__cause__ = exc
            self.queue.put_nowait(Failed(error))
            return
        self._finish(reader, ending, started)

    def _finish(self, reader: ChunkReader, ending: FinishReason | None, started: float) -> None:
        """One Finished for every choice. A generation cut short (`ending`) ends every
        choice so: what was cut short is not a whole answer, even a choice that finished."""
        now = time.monotonic()
        first = self.first or now
        # The server's usage counts every choice's tokens; without it, the pieces do.
        completion = int(reader.usage.get("completion_tokens") or self.generated)
        prompt = int(reader.usage.get("prompt_tokens") or self.prompt.token_count)
        if completion:
            self.node.last_ttft = first - started
        n = self.params.n
        reasons = tuple(ending or reader.reasons.get(choice, "stop") for choice in range(n))
        self.backend.stats.record(
            ending or reasons[0], prompt_tokens=prompt, completion_tokens=completion,
            submitted=started, first=first, now=now,
        )  # fmt: skip
        self.queue.put_nowait(
            Finished(
                finish_reason=reasons[0],
                prompt_tokens=prompt,
                completion_tokens=completion,
                prompt_seconds=first - started,
                generation_seconds=now - first,
                time_to_first_token=first - started,
                choice_reasons=reasons if n > 1 else (),
            )
        )


def _message(message: ChatMessage) -> dict[str, Any]:
    """A message in OpenAI's shape: an assistant's calls, the call a tool's result answers."""
    sent: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        sent["tool_calls"] = [call.openai() for call in message.tool_calls]
    if message.tool_call_id is not None:
        sent["tool_call_id"] = message.tool_call_id
    return sent
