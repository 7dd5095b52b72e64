"""The loaded llama.cpp model: one `Llama` (model + context) and what we read from its GGUF."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
from llama_cpp import Llama


class ModelClosedError(RuntimeError):
    """The model was unloaded (shutdown or failure)."""


@dataclass(frozen=True, slots=True)
class ModelOptions:
    path: Path
    alias: str
    n_ctx: int
    n_threads: int
    n_batch: int
    n_gpu_layers: int


class LoadedModel:
    """Owns the Llama instance. Only the engine thread decodes with it; tokenizing is
    read-only on the vocabulary and safe from any thread."""

    def __init__(self, options: ModelOptions) -> None:
        self.options = options
        # llama.cpp prints its load log on stderr even with verbose=False on some builds.
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            self.llama = Llama(
                model_path=str(options.path),
                n_ctx=options.n_ctx,
                n_threads=options.n_threads,
                n_threads_batch=options.n_threads,
                n_batch=options.n_batch,
                n_gpu_layers=options.n_gpu_layers,
                verbose=False,
            )
        self._pieces: dict[int, bytes] = {}
        self._lifecycle = threading.Lock()
        self.closed = False
        self.alias = options.alias or options.path.stem
        self.size_bytes = options.path.stat().st_size
        self.n_ctx = self.llama.n_ctx()
        self.chat_template: str | None = self.llama.metadata.get("tokenizer.chat_template")
        self.control_tokens = self._control_token_texts()
        self.bos_text = self._piece(self.llama.token_bos())
        self.eos_text = self._piece(self.llama.token_eos())

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self.llama._model.token_get_text(token))

    def _control_token_texts(self) -> tuple[str, ...]:
        model = self.llama._model
        return tuple(
            model.token_get_text(token)
            for token in range(model.n_vocab())
            if model.token_get_attr(token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        )

    def control_token_ids(self) -> frozenset[int]:
        model = self.llama._model
        return frozenset(
            token
            for token in range(model.n_vocab())
            if model.token_get_attr(token) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
        )

    def tokenize(self, text: str, *, special: bool, add_bos: bool = False) -> list[int]:
        """`special=False` for anything a user wrote: control-token text stays plain text."""
        if not text:
            return []
        with self._lifecycle:  # never tokenize with a model that close() is freeing
            if self.closed:
                raise ModelClosedError("the model is not loaded")
            return list(self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    @property
    def add_bos(self) -> bool:
        return bool(self.llama._model.add_bos_token())

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.llama._model.vocab, token))

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
            length = llama_cpp.llama_token_to_piece(
                self.llama._model.vocab, token, buffer, size, 0, False
            )
            if length >= 0:
                return buffer.raw[:length]
            size = -length

    def close(self) -> None:
        with self._lifecycle:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(Exception):
                self.llama.close()
