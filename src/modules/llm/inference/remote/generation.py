"""One generation on a remote pool: tokens pass through as they arrive; before the first
token, a failed node is tried once more or left for another node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from modules.llm.inference.backend import Prompt
from modules.llm.inference.errors import BackendUnavailableError, QueueFullError
from modules.llm.inference.events import Event, Failed, Finished, FinishReason, TokenDelta, drain
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

    def _on_text(self, text: str) -> None:
        self.first = self.first or time.monotonic()
        self.generated += 1
        self.queue.put_nowait(TokenDelta(text))

    def _request(self) -> tuple[str, dict[str, Any]]:
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
        if self.prompt.raw:
            payload["prompt"] = self.prompt.messages[0].content
            return "/completions", payload
        payload["messages"] = [{"role": m.role, "content": m.content} for m in self.prompt.messages]
        return "/chat/completions", payload

    async def _attempts(self) -> tuple[dict[str, Any], FinishReason]:
        """Stream from this generation's node. Before the first token, a full or failing
        node is left for another one (a failing single node gets one more try)."""
        nodes, key = self.backend.nodes, self.key
        path, payload = self._request()
        tried: set[RemoteNode] = set()
        attempts = max(2, len(nodes))
        for attempt in range(1, attempts + 1):
            node = self.node
            try:
                usage, reason = await node.stream(path, payload, self._on_text)
            except QueueFullError:
                tried.add(node)
                other = choose(nodes, key, exclude=tried)
                if other is None:
                    raise
                self._move_to(other)
                continue
            except (RemoteError, httpx.HTTPError, ValueError):
                node.breaker.failed()
                if self.generated or attempt == attempts:
                    raise
                tried.add(node)
                self._move_to(choose(nodes, key, exclude=tried) or node)
                continue
            node.breaker.succeeded()
            return usage, reason
        raise RemoteError("no node answered")

    async def _run(self, *, deadline: float) -> None:
        backend = self.backend
        started = time.monotonic()
        usage: dict[str, Any] = {}
        reason: FinishReason = "stop"
        try:
            async with asyncio.timeout(deadline):
                usage, reason = await self._attempts()
        except asyncio.CancelledError:
            reason = "cancelled"
        except TimeoutError:
            reason = "timeout"
        except QueueFullError as exc:
            self.queue.put_nowait(Failed(exc))
            return
        except (RemoteError, httpx.HTTPError, ValueError) as exc:
            backend.stats.failed += 1
            error = BackendUnavailableError(f"model {backend.alias!r}: its server failed")
            error.__cause__ = exc
            self.queue.put_nowait(Failed(error))
            return
        now = time.monotonic()
        first = self.first or now
        completion = int(usage.get("completion_tokens") or self.generated)
        prompt = int(usage.get("prompt_tokens") or self.prompt.token_count)
        if completion:
            self.node.last_ttft = first - started
        backend.stats.record(
            reason, prompt_tokens=prompt, completion_tokens=completion,
            submitted=started, first=first, now=now,
        )  # fmt: skip
        self.queue.put_nowait(
            Finished(
                finish_reason=reason,
                prompt_tokens=prompt,
                completion_tokens=completion,
                prompt_seconds=first - started,
                generation_seconds=now - first,
                time_to_first_token=first - started,
            )
        )
