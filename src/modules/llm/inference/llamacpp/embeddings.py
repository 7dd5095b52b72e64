"""Embeddings of a local model: a second llama.cpp context on the same loaded weights.

The chat engine's context is left alone: this one is made with `embeddings` on and a
pooling type, holds a few sequences in one unified KV cache, and is decoded by its own
worker thread. Requests wait in a bounded queue; the worker takes every request waiting,
packs their inputs into decodes (each input its own sequence, as many as fit the context
and `batch_inputs`), reads each sequence's pooled vector, and normalizes it (L2) as
OpenAI's are. The context is made on the first request (lazily): a service that never
embeds never pays its memory.

A sequence must be read in one piece for its pooled vector to cover all of it, so the
context's batch is its whole size (`n_batch = n_ubatch = n_ctx`), an input is at most that
long (the backend refuses a longer one, naming it), and the KV cache is unified (one
sequence is never split across micro-batches, as llama.cpp's equal split would).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import llama_cpp
import numpy as np
import structlog
from llama_cpp import _internals as internals

from modules.llm.inference.embeddings import EmbeddingInput, Vector, normalized
from modules.llm.inference.errors import (
    BackendUnavailableError,
    QueueFullError,
    QueueTimeoutError,
    UnsupportedRequestError,
)
from modules.llm.inference.llamacpp.model import FLASH_ATTENTION, LoadedModel

logger = structlog.get_logger(__name__)

Pooling = Literal["gguf", "mean", "cls", "last"]
POOLING_TYPES: dict[str, int] = {
    "mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    "cls": llama_cpp.LLAMA_POOLING_TYPE_CLS,
    "last": llama_cpp.LLAMA_POOLING_TYPE_LAST,
}
_NAMES = {number: name for name, number in POOLING_TYPES.items()}
# A text longer than this many characters per token of the context is first counted on a
# prefix that long (llama.cpp's tokenizer is slower than linear on long texts).
PROBE_CHARS_PER_TOKEN = 8


@dataclass(frozen=True, slots=True)
class EmbedderOptions:
    """`pooling`: "gguf" takes the file's own pooling type (an embedding model declares
    one), and mean pooling where it declares none (a chat model). `context_size`: the most
    tokens one decode reads, and so one input. `batch_inputs`: the most inputs (sequences)
    one decode reads. `queue_size`: requests waiting before the next one is a 503."""

    pooling: Pooling = "gguf"
    context_size: int = 1024
    batch_inputs: int = 32
    queue_size: int = 16
    threads: int = 1


def pooling_type(model: LoadedModel, pooling: Pooling) -> int:
    """The llama.cpp pooling type to make the context with (see `EmbedderOptions`)."""
    if pooling != "gguf":
        return POOLING_TYPES[pooling]
    metadata = model.model.metadata()
    architecture = metadata.get("general.architecture", "")
    declared = metadata.get(f"{architecture}.pooling_type")
    with contextlib.suppress(TypeError, ValueError):
        if declared is not None and int(declared) in _NAMES:
            return int(declared)
    return llama_cpp.LLAMA_POOLING_TYPE_MEAN


def input_tokens(
    model: LoadedModel, item: EmbeddingInput, index: int, context_size: int
) -> tuple[int, ...]:
    """Blocking. One input as the embedding context reads it: a text tokenized as plain
    text (a BOS where the model wants one), or the client's token ids, each checked
    against the vocabulary. Refused, naming `input[index]`: an empty one, one longer than
    `context_size` (a long text is first counted on a prefix: one far over is refused
    without tokenizing it all), a token the model does not have."""
    where = f"input[{index}]"
    if isinstance(item, str):
        prefix = item[: context_size * PROBE_CHARS_PER_TOKEN]
        tokens = model.tokenize(prefix, special=False, add_bos=model.add_bos)
        over = len(prefix) < len(item) and len(tokens) > context_size
        if not over and len(prefix) < len(item):
            tokens = model.tokenize(item, special=False, add_bos=model.add_bos)
        length = f"over {len(tokens)}" if over else str(len(tokens))
    else:
        tokens = list(item)
        wrong = next((t for t in tokens if not 0 <= t < model.n_vocab), None)
        if wrong is not None:
            raise UnsupportedRequestError(
                f"{where} holds token {wrong}, which is not in the model's vocabulary "
                f"(0 to {model.n_vocab - 1})",
                field=where,
            )
        length = str(len(tokens))
    if not tokens:
        raise UnsupportedRequestError(f"{where} is empty", field=where)
    if len(tokens) > context_size:
        raise UnsupportedRequestError(
            f"{where} is {length} tokens long; the model embeds at most {context_size} "
            "tokens an input (LLM_EMBEDDING_CONTEXT_SIZE)",
            field=where,
        )
    return tuple(tokens)


@dataclass(eq=False)
class _Job:
    """One request's inputs; its future gets every vector, in order, or an error."""

    tokens: tuple[tuple[int, ...], ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[Vector, ...]]
    deadline: float
    vectors: list[Vector | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = [None] * len(self.tokens)

    @property
    def abandoned(self) -> bool:
        return self.future.done()  # cancelled (the client left, or timed out)

    def resolve(self) -> None:
        result = tuple(v for v in self.vectors if v is not None)
        self.loop.call_soon_threadsafe(_set_result, self.future, result)

    def fail(self, error: Exception) -> None:
        self.loop.call_soon_threadsafe(_set_exception, self.future, error)


def _set_result(future: asyncio.Future[tuple[Vector, ...]], result: tuple[Vector, ...]) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[tuple[Vector, ...]], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)


class Embedder:
    """Embeds token sequences on its own context and thread (see the module's text)."""

    def __init__(self, model: LoadedModel, options: EmbedderOptions) -> None:
        self.model = model
        self.options = options
        self.pooling = pooling_type(model, options.pooling)
        self.pooling_name = _NAMES[self.pooling]
        self.dimensions = int(llama_cpp.llama_model_n_embd(model.model.model))
        self.context_size = options.context_size
        self.batch_inputs = options.batch_inputs
        self.inputs_embedded = 0
        self.decodes = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._context: internals.LlamaContext | None = None
        self._batch: internals.LlamaBatch | None = None
        self._closed = False

    @property
    def queue_depth(self) -> int:
        return self._waiting

    async def embed(
        self, tokens: Sequence[Sequence[int]], within_seconds: float
    ) -> tuple[Vector, ...]:
        """Every input's vector, in order; QueueFullError at once when the queue is full."""
        job = self._submit(tokens, within_seconds)
        try:
            async with asyncio.timeout(within_seconds):
                return await job.future
        except TimeoutError:
            raise QueueTimeoutError("the embeddings were not ready in time") from None
        finally:
            job.future.cancel()  # the worker skips what is left of it

    def _submit(self, tokens: Sequence[Sequence[int]], timeout: float) -> _Job:
        loop = asyncio.get_running_loop()
        job = _Job(
            tuple(tuple(t) for t in tokens), loop, loop.create_future(), time.monotonic() + timeout
        )
        with self._lock:
            if self._closed:
                raise BackendUnavailableError(f"model {self.model.alias!r} is not loaded")
            if self._waiting >= self.options.queue_size:
                raise QueueFullError(retry_after=1)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="llm-embeddings", daemon=True
                )
                self._thread.start()
            self._waiting += 1
        self._queue.put(job)
        return job

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            jobs = [job]
            with contextlib.suppress(queue.Empty):
                while True:  # every request waiting shares the decodes
                    jobs.append(self._queue.get_nowait())
            taken = [j for j in jobs if j is not None]
            with self._lock:
                self._waiting -= len(taken)
            try:
                self._serve(taken)
            except Exception as exc:  # a failed decode fails its requests, not the thread
                logger.error("embedding failed", error=str(exc))
                for each in taken:
                    each.fail(BackendUnavailableError(f"model {self.model.alias!r}: {exc}"))
            if len(taken) < len(jobs):  # close() asked to stop
                for each in self._drain():
                    each.fail(BackendUnavailableError("the service is shutting down"))
                return

    def _drain(self) -> list[_Job]:
        left: list[_Job] = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    left.append(item)
        return left

    def _serve(self, jobs: Sequence[_Job]) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.abandoned:
                continue
            if now > job.deadline:
                job.fail(QueueTimeoutError("the embeddings were not ready in time"))
                continue
            live.append(job)
        items = [(job, index) for job in live for index in range(len(job.tokens))]
        for group in self._groups(items):
            vectors = self._decode([job.tokens[index] for job, index in group])
            for (job, index), vector in zip(group, vectors, strict=True):
                job.vectors[index] = vector
        for job in live:
            job.resolve()

    def _groups(self, items: list[tuple[_Job, int]]) -> list[list[tuple[_Job, int]]]:
        """Inputs packed in order into decodes: at most `batch_inputs` a decode, and at most
        `context_size` tokens (every input fits alone: the backend checked)."""
        groups: list[list[tuple[_Job, int]]] = []
        current: list[tuple[_Job, int]] = []
        used = 0
        for job, index in items:
            length = len(job.tokens[index])
            if current and (len(current) >= self.batch_inputs or used + length > self.context_size):
                groups.append(current)
                current, used = [], 0
            current.append((job, index))
            used += length
        if current:
            groups.append(current)
        return groups

    def _decode(self, sequences: Sequence[tuple[int, ...]]) -> list[Vector]:
        """One llama_decode of every sequence, each its own id; their pooled vectors."""
        context, batch = self._ready()
        if self.model.closed:
            raise BackendUnavailableError(f"model {self.model.alias!r} is not loaded")
        batch.reset()
        for seq_id, tokens in enumerate(sequences):
            batch.add_sequence(list(tokens), seq_id, True)
        try:
            status = llama_cpp.llama_decode(context.ctx, batch.batch)
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}")
            vectors = []
            for seq_id in range(len(sequences)):
                pointer = llama_cpp.llama_get_embeddings_seq(context.ctx, seq_id)
                if not pointer:
                    raise RuntimeError("the context holds no pooled embedding")
                raw = np.ctypeslib.as_array(pointer, shape=(self.dimensions,))
                vectors.append(normalized(raw))  # a copy: the buffer is the context's
        finally:
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context.ctx), True)
        self.decodes += 1
        self.inputs_embedded += len(sequences)
        return vectors

    def _ready(self) -> tuple[internals.LlamaContext, internals.LlamaBatch]:
        """The context and batch, made on first use (in the worker thread)."""
        if self._context is None or self._batch is None:
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = self.context_size
            params.n_seq_max = self.batch_inputs
            params.kv_unified = True
            params.embeddings = True
            params.pooling_type = self.pooling
            params.n_threads = params.n_threads_batch = self.options.threads
            params.flash_attn_type = FLASH_ATTENTION[self.model.options.flash_attention]
            self._context = internals.LlamaContext(
                model=self.model.model, params=params, verbose=False
            )
            self._batch = internals.LlamaBatch(
                n_tokens=self.context_size, embd=0, n_seq_max=1, verbose=False
            )
            logger.info(
                "embedding context ready",
                model=self.model.alias,
                pooling=self.pooling_name,
                context_size=self.context_size,
                batch_inputs=self.batch_inputs,
            )
        return self._context, self._batch

    def close(self, timeout: float = 30.0) -> None:
        """Blocking: stop the thread (what waits fails), then free the context, before the
        model is freed. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
            if thread.is_alive():
                # A decode is still running: freeing its memory now would crash the process.
                logger.error("embedding thread did not stop; leaving its context", timeout=timeout)
                return
        for each in self._drain():
            each.fail(BackendUnavailableError("the service is shutting down"))
        if self._batch is not None:
            self._batch.close()
        if self._context is not None:
            self._context.close()
        self._context = self._batch = None
