"""LLM: the loaded model, the engine, chat prompts and the /llm routes."""

from litestar import Router

from modules.llm.chat import ChatPromptBuilder
from modules.llm.controller import LLMController
from modules.llm.engine import LLMEngine
from modules.llm.model import LoadedModel, ModelOptions
from modules.llm.service import GenerationService


def create_router() -> Router:
    return Router(path="/", route_handlers=[LLMController])


__all__ = [
    "ChatPromptBuilder",
    "GenerationService",
    "LLMEngine",
    "LoadedModel",
    "ModelOptions",
    "create_router",
]
