"""LLM: the loaded model, the engine, chat prompts and the /llm routes."""

from collections.abc import Callable, Mapping
from typing import Any

from litestar import Router
from litestar.plugins.problem_details import ProblemDetailsException

from modules.llm.chat import ChatPromptBuilder
from modules.llm.controller import LLMController
from modules.llm.engine import LLMEngine
from modules.llm.model import LoadedModel, ModelOptions
from modules.llm.models_controller import ModelsController
from modules.llm.openai_api import OpenAIController, openai_exception_handlers
from modules.llm.service import GenerationService


def create_router() -> Router:
    return Router(path="/", route_handlers=[LLMController, ModelsController])


def create_openai_router(
    to_problem: Mapping[type[Exception], Callable[[Any], ProblemDetailsException]],
) -> Router:
    """/v1, answering errors in OpenAI's shape (from the app's own error mapping)."""
    return Router(
        path="/",
        route_handlers=[OpenAIController],
        exception_handlers=openai_exception_handlers(to_problem),  # type: ignore[arg-type]
    )


__all__ = [
    "ChatPromptBuilder",
    "GenerationService",
    "LLMEngine",
    "LoadedModel",
    "ModelOptions",
    "create_openai_router",
    "create_router",
]
