"""A remote backend: any OpenAI-compatible server (llama.cpp's llama-server, vLLM, Ollama,
or another llm-service) behind an alias. Tokens stream through as they arrive; usage comes
from the server's own report, or is counted here; a dead server trips a circuit breaker so
requests fail in milliseconds instead of one timeout each."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from modules.llm.inference.backend import Prompt
from modules.llm.inference.chat_template import ChatMessage
from modules.llm.inference.errors import BackendUnavailableError, QueueFullError
from modules.llm.inference.events import (
    Event,
    Failed,
    Finished,
    FinishReason,
    TokenDelta,
    drain,
)
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.stats import GenerationStats, Load

# Control strings of the common chat-template families: a remote model's vocabulary cannot
# be read, so the sanitizer removes all of these from what is sent to it.
REMOTE_CONTROL_TOKENS: tuple[str, ...] = (
    # ChatML (Qwen, SmolLM, many fine-tunes) and Qwen's tool tags
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>",
    "<tool_response>", "</tool_response>",
    # Llama 2 and Mistral
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>", "<s>", "</s>", "[TOOL_CALLS]",
    "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
    # Llama 3
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>",
    # Gemma
    "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>",
    # Phi
    "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
    # DeepSeek
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",
)  # fmt: skip


@dataclass
class CircuitBreaker:
    """Open after `threshold` failures in a row; while open, refuse at once for `cooldown`
    seconds, then let one request try."""

    threshold: int = 3
    cooldown: float = 10.0
    failures: int = 0
    open_until: float = 0.0

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def succeeded(self) -> None:
        self.failures, self.open_until = 0, 0.0

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.open_until = time.monotonic() + self.cooldown


class RemoteError(Exception):
    """The remote server failed before the first token (worth one retry)."""


class RemoteGeneration:
    def __init__(
        self,
        backend: RemoteBackend,
        prompt: Prompt,
        params: SamplingParams,
        timeout: float,
    ) -> None:
        self.backend = backend
        self.prompt = prompt
        self.params = params
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.generated = 0
        self.first: float | None = None  # when the first token arrived
        self.task = asyncio.get_running_loop().create_task(self._run(deadline=timeout))

    def cancel(self) -> None:
        self.task.cancel()

    def events(self) -> AsyncIterator[Event]:
        return drain(self.queue, self.cancel)

    def _payload(self) -> tuple[str, dict[str, Any]]:
        params = self.params
        payload: dict[str, Any] = {
            "model": self.backend.model,
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

    async def _run(self, *, deadline: float) -> None:
        backend = self.backend
        backend.in_flight += 1
        started = time.monotonic()
        usage: dict[str, Any] = {}
        reason: FinishReason = "stop"
        try:
            async with asyncio.timeout(deadline):
                for attempt in (1, 2):  # a retry only before the first token
                    try:
                        usage, reason = await self._stream_once()
                        break
                    except RemoteError:
                        if attempt == 2 or self.generated:
                            raise
            backend.breaker.succeeded()
        except asyncio.CancelledError:
            reason = "cancelled"
        except TimeoutError:
            reason = "timeout"
        except QueueFullError as exc:
            self.queue.put_nowait(Failed(exc))
            return
        except (RemoteError, httpx.HTTPError, ValueError) as exc:
            backend.breaker.failed()
            backend.stats.failed += 1
            error = BackendUnavailableError(f"model {backend.alias!r}: its server failed")
            error.__cause__ = exc
            self.queue.put_nowait(Failed(error))
            return
        finally:
            backend.in_flight -= 1
        now = time.monotonic()
        first = self.first or now
        completion = int(usage.get("completion_tokens") or self.generated)
        prompt = int(usage.get("prompt_tokens") or self.prompt.token_count)
        if completion:
            backend.last_ttft = first - started
        backend.stats.record(
            reason,
            prompt_tokens=prompt,
            completion_tokens=completion,
            submitted=started,
            first=first,
            now=now,
        )
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

    async def _stream_once(self) -> tuple[dict[str, Any], FinishReason]:
        backend = self.backend
        path, payload = self._payload()
        usage: dict[str, Any] = {}
        reason: FinishReason = "stop"
        try:
            async with (
                httpx.AsyncClient(timeout=backend.timeout, headers=backend.headers) as client,
                client.stream("POST", backend.base_url + path, json=payload) as response,
            ):
                if response.status_code in (429, 503):
                    retry = response.headers.get("retry-after", "1")
                    raise QueueFullError(int(retry) if retry.isdigit() else 1)
                if response.status_code >= 400:
                    raise RemoteError(f"the server answered {response.status_code}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or choice.get("text")
                        if text:
                            self.first = self.first or time.monotonic()
                            self.generated += 1
                            self.queue.put_nowait(TokenDelta(text))
                        if choice.get("finish_reason") == "length":
                            reason = "length"
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            raise RemoteError(str(exc)) from exc
        return usage, reason


class RemoteBackend:
    """An OpenAI-compatible server's model. Prompts are sent as messages: the server applies
    its own chat template, so token counts here are estimates until it reports usage."""

    def __init__(
        self,
        alias: str,
        base_url: str,
        model: str,
        api_key: str | None,
        *,
        context_size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.alias = alias
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.stats = GenerationStats()
        self.breaker = CircuitBreaker()
        self.in_flight = 0
        self.last_ttft: float | None = None
        self._context_size = context_size

    @classmethod
    def connect(cls, alias: str, url: str, api_key: str | None, **options: Any) -> RemoteBackend:
        """Blocking. `url#model` names the model; without it, the server's first."""
        base_url, _, model = url.partition("#")
        if not model:
            headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
            response = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=10)
            response.raise_for_status()
            model = response.json()["data"][0]["id"]
        return cls(alias, base_url, model, api_key, **options)

    @property
    def context_size(self) -> int:
        return self._context_size

    @property
    def control_tokens(self) -> tuple[str, ...]:
        return REMOTE_CONTROL_TOKENS

    @property
    def is_running(self) -> bool:
        return not self.breaker.is_open

    async def chat_prompt(self, messages: Sequence[ChatMessage]) -> Prompt:
        return Prompt(tuple(messages), (), estimated_tokens=_estimate(messages))

    async def text_prompt(self, text: str) -> Prompt:
        messages = (ChatMessage("user", text),)
        return Prompt(messages, (), raw=True, estimated_tokens=_estimate(messages))

    def stream(
        self, prompt: Prompt, params: SamplingParams, *, owner: str, timeout: float
    ) -> RemoteGeneration:
        if self.breaker.is_open:
            self.stats.rejected += 1
            raise BackendUnavailableError(
                f"model {self.alias!r} is unavailable: its server keeps failing"
            )
        return RemoteGeneration(self, prompt, params, timeout)

    def load(self) -> Load:
        return Load(
            running=not self.breaker.is_open,
            slots=0,
            busy_slots=self.in_flight,
            queue_depth=0,
            queue_size=0,
        )

    def describe(self) -> dict[str, Any]:
        where = urlsplit(self.base_url)
        return {
            "backend": "remote",
            # Never the credentials: host and path only.
            "file": f"{where.scheme}://{where.hostname}:{where.port or ''}{where.path}",
            "context_size": self._context_size,
            "breaker": "open" if self.breaker.is_open else "closed",
            "latency_ms": round(self.last_ttft * 1000, 1) if self.last_ttft else None,
        }

    def close(self) -> None:
        """Nothing to free: each generation has its own connection."""


def _estimate(messages: Sequence[ChatMessage]) -> int:
    # About 4 characters a token, plus a few for each message's template.
    return sum(len(m.content) // 4 + 4 for m in messages)


__all__ = ["REMOTE_CONTROL_TOKENS", "CircuitBreaker", "RemoteBackend"]
