"""llama.cpp in this process: the model, the continuous-batching engine, the backend."""

from modules.llm.inference.llamacpp.backend import LlamaCppBackend, LocalOptions
from modules.llm.inference.llamacpp.embeddings import Embedder, EmbedderOptions
from modules.llm.inference.llamacpp.model import (
    GpuUnavailableError,
    ModelOptions,
    gpu_offload_supported,
)

__all__ = [
    "Embedder",
    "EmbedderOptions",
    "GpuUnavailableError",
    "LlamaCppBackend",
    "LocalOptions",
    "ModelOptions",
    "gpu_offload_supported",
]
