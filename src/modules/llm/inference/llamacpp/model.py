"""The loaded model: one llama.cpp model and ONE context holding `parallel` sequences.

The context is created with `n_seq_max = parallel` and a per-sequence window of `n_ctx`
tokens (so its total size is `n_ctx * parallel`). Sequences keep separate KV buffers: a
request's numbers then do not depend on what else is in the batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import llama_cpp
from llama_cpp import _internals as internals
from llama_cpp import _logger as llama_log


class ModelClosedError(RuntimeError):
    """The model was unloaded (shutdown or failure)."""


FLASH_ATTENTION = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


class GpuUnavailableError(RuntimeError):
    """GPU offload was asked for, and this llama.cpp build cannot do it."""


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


@dataclass(frozen=True, slots=True)
class ModelOptions:
    n_ctx: int  # tokens per sequence
    n_threads: int
    n_batch: int
    n_gpu_layers: int
    parallel: int = 1
    # llama.cpp's extra CPU buffer types (AMX, weight repacking). Off by default: their AMX
    # matrix kernel crashed the process on an Intel Sapphire Rapids VM (ggml_backend_amx_mul_mat).
    cpu_extra_buffers: bool = False
    flash_attention: Literal["auto", "on", "off"] = "auto"


class LoadedModel:
    """Owns the model and its context. Only the engine thread decodes; tokenizing is
    read-only on the vocabulary and safe from any thread."""

    def __init__(
        self,
        path: Path,
        alias: str,
        options: ModelOptions,
        on_progress: Callable[[float], None] | None = None,
    ) -> None:
        if options.n_gpu_layers and not gpu_offload_supported():
            raise GpuUnavailableError(
                f"LLM_GPU_LAYERS={options.n_gpu_layers} asks for GPU offload, but this build "
                "of llama-cpp-python is CPU-only; rebuild it for your GPU (README: GPU) or "
                "set LLM_GPU_LAYERS=0"
            )
        self.path = path
        self.options = options
        # llama.cpp logs through llama-cpp-python's logger: errors only.
        llama_log.set_verbose(False)
        model_params = self._model_params(options, on_progress)
        self.model = internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
        self.context = internals.LlamaContext(
            model=self.model, params=_context_params(options), verbose=False
        )
        self.vocab = self.model.vocab
        self.n_vocab = int(self.model.n_vocab())
        self.n_seq = int(llama_cpp.llama_n_seq_max(self.context.ctx))
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(self.context.ctx))
        self.n_layers = int(llama_cpp.llama_model_n_layer(self.model.model))
        wanted = self.n_layers if options.n_gpu_layers < 0 else options.n_gpu_layers
        # llama.cpp offloads the repeating layers plus the output layer at most.
        self.gpu_layers = min(wanted, self.n_layers + 1)
        self.memory = self.context.memory
        self._pieces: dict[int, bytes] = {}
        self._lifecycle = threading.Lock()
        self.closed = False
        self.alias = alias or path.stem
        self.size_bytes = path.stat().st_size
        metadata = self.model.metadata()
        self.chat_template: str | None = metadata.get("tokenizer.chat_template")
        self.bos_id = self.model.token_bos()
        self.eos_id = self.model.token_eos()
        self.bos_text = self._text(self.bos_id)
        self.eos_text = self._text(self.eos_id)
        ids = self.control_token_ids()
        self.control_tokens = tuple(self._text(t) for t in sorted(ids))

    def _model_params(
        self, options: ModelOptions, on_progress: Callable[[float], None] | None
    ) -> llama_cpp.llama_model_params:
        params: llama_cpp.llama_model_params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if options.n_gpu_layers < 0 else options.n_gpu_layers
        params.use_extra_bufts = options.cpu_extra_buffers
        if on_progress is not None:
            # llama.cpp calls it from this thread while it reads the weights; True goes on.
            def progress(fraction: float, _: object) -> bool:
                on_progress(float(fraction))
                return True

            self._progress = llama_cpp.llama_progress_callback(progress)  # kept alive
            params.progress_callback = self._progress
        return params

    def _text(self, token: int) -> str:
        return "" if token < 0 else str(self.model.token_get_text(token))

    def control_token_ids(self) -> frozenset[int]:
        return frozenset(
            token
            for token in range(self.n_vocab)
            if self.model.token_get_attr(token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        )

    @property
    def add_bos(self) -> bool:
        return bool(self.model.add_bos_token())

    def tokenize(self, text: str, *, special: bool, add_bos: bool = False) -> list[int]:
        """`special=False` for anything a user wrote: control-token text stays plain text."""
        if not text:
            return []
        with self._lifecycle:  # never tokenize with a model that close() is freeing
            if self.closed:
                raise ModelClosedError("the model is not loaded")
            return list(self.model.tokenize(text.encode("utf-8"), add_bos, special))

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def token_bytes(self, token: int) -> bytes:
        """The token's text as UTF-8 bytes (possibly part of a character); cached."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._token_to_piece(token)
        return piece

    def _token_to_piece(self, token: int) -> bytes:
        # llama-cpp-python's own helper uses a fixed 32-byte buffer and returns its padding.
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, size, 0, False)
            if length >= 0:
                return buffer.raw[:length]
            size = -length

    def close(self) -> None:
        with self._lifecycle:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(Exception):
                self.context.close()
            with contextlib.suppress(Exception):
                self.model.close()


def _context_params(options: ModelOptions) -> llama_cpp.llama_context_params:
    """One context of `parallel` sequences of `n_ctx` tokens each, not unified."""
    params: llama_cpp.llama_context_params = llama_cpp.llama_context_default_params()
    params.n_ctx = options.n_ctx * options.parallel
    params.n_seq_max = options.parallel
    params.kv_unified = False
    params.n_batch = options.n_batch
    params.n_ubatch = options.n_batch
    params.n_threads = options.n_threads
    params.n_threads_batch = options.n_threads
    params.flash_attn_type = FLASH_ATTENTION[options.flash_attention]
    return params
