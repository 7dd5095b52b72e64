"""LLM: owns the models, in three layers.

inference/  models, backends (llama.cpp in process), the registry; no web or database code
turns/      the turn service: the one place a chat turn happens
api/        thin front ends: /llm/generate, /llm/models, /v1 (OpenAI shapes)
"""

from modules.llm.module import LLMModule, local_backend_factory, rate_limit_headers

__all__ = ["LLMModule", "local_backend_factory", "rate_limit_headers"]
