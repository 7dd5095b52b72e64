"""llama.cpp in this process: the model, the continuous-batching engine, the backend."""

from modules.llm.inference.llamacpp.backend import LlamaCppBackend, LocalOptions
from modules.llm.inference.llamacpp.model import ModelOptions

__all__ = ["LlamaCppBackend", "LocalOptions", "ModelOptions"]
