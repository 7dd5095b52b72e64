"""The OpenAI-compatible front end (/v1)."""

from modules.llm.api.openai.controller import OpenAIController
from modules.llm.api.openai.embeddings import EmbeddingsController
from modules.llm.api.openai.errors import OpenAIError, openai_exception_handlers
from modules.llm.api.openai.responses import ResponsesController

__all__ = [
    "EmbeddingsController",
    "OpenAIController",
    "OpenAIError",
    "ResponsesController",
    "openai_exception_handlers",
]
