"""Embeddings across the backend protocol: what a backend is asked to embed, what it
answers. Vectors are float32 arrays: the API encodes them as the client asked (a JSON list
of floats, or base64 of their little-endian bytes)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

# A text (already sanitized) or token ids, as the client sent them.
EmbeddingInput = str | tuple[int, ...]
EncodingFormat = Literal["float", "base64"]
Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class EmbeddingOptions:
    """OpenAI's other fields, passed through to a remote server; a local model refuses a
    `dimensions` it cannot give. `encoding_format` is what a remote server is asked for:
    its answer is read in either format."""

    dimensions: int | None = None
    user: str | None = None
    encoding_format: EncodingFormat = "float"


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Inputs a backend has checked and can embed (`Backend.embedding_request`).

    `tokens` holds each input's tokens where the backend reads tokens (a local model);
    `counts` each input's length in tokens (an estimate where the tokens are not known
    here: a remote server's text)."""

    inputs: tuple[EmbeddingInput, ...]
    counts: tuple[int, ...]
    tokens: tuple[tuple[int, ...], ...] = ()
    options: EmbeddingOptions = field(default_factory=EmbeddingOptions)

    @property
    def total_tokens(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Embeddings:
    """One vector per input, in order, and the tokens the model read."""

    vectors: tuple[Vector, ...]
    prompt_tokens: int


def normalized(vector: Sequence[float] | Vector) -> Vector:
    """The vector scaled to length 1 (L2), as OpenAI's embeddings are; a zero vector stays."""
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array


def to_base64(vector: Vector) -> str:
    """Little-endian float32 bytes, base64: what the openai SDK decodes
    (`np.frombuffer(base64.b64decode(data), dtype="float32")`)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def from_base64(data: str) -> Vector:
    return np.frombuffer(base64.b64decode(data), dtype="<f4").astype(np.float32)


def estimate_tokens(item: EmbeddingInput) -> int:
    """About 4 characters a token (at least one), or the tokens themselves."""
    if isinstance(item, str):
        return max(1, len(item) // 4)
    return len(item)
