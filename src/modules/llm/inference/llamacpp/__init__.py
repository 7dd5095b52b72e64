"""llama.cpp in this process: the model, the continuous-batching engine, the backend."""

from modules.llm.inference.llamacpp.backend import LlamaCppBackend, LocalOptions

__all__ = ["LlamaCppBackend", "LocalOptions"]
