"""Assembles the model, engine, sanitizer and prompt builder; called once per app."""

from __future__ import annotations

from pathlib import Path

from modules.config import Settings
from modules.llm.chat import ChatPromptBuilder
from modules.llm.engine import LLMEngine
from modules.llm.model import LoadedModel, ModelOptions
from modules.llm.service import GenerationService
from modules.sanitizer import Sanitizer


def load_model(settings: Settings, path: Path | None = None, alias: str = "") -> LoadedModel:
    """Blocking: reads the GGUF (run it in a thread)."""
    path = path or settings.resolve_model_path()
    return LoadedModel(
        ModelOptions(
            path=path,
            alias=alias or settings.llm_model_alias,
            n_ctx=settings.llm_context_size,
            n_threads=settings.effective_threads,
            n_batch=settings.llm_batch_size,
            n_gpu_layers=settings.llm_gpu_layers,
            parallel=settings.llm_parallel,
        )
    )


def prompt_builder_for(model: LoadedModel) -> ChatPromptBuilder:
    return ChatPromptBuilder(
        model.chat_template,
        bos_token=model.bos_text,
        eos_token=model.eos_text,
        tokenize=lambda text, special: model.tokenize(text, special=special),
        bos_id=model.bos_id if model.add_bos else None,
    )


def start_generation_service(
    settings: Settings, path: Path | None = None, alias: str = ""
) -> GenerationService:
    """Blocking: loads the model and starts the engine thread."""
    model = load_model(settings, path, alias)
    engine = LLMEngine(
        model,
        queue_size=settings.llm_queue_size,
        prefill_chunk=settings.llm_prefill_chunk,
        state_cache_bytes=settings.llm_state_cache_mb * 1024 * 1024,
    )
    engine.start()
    sanitizer = Sanitizer(
        max_chars=settings.sanitizer_max_chars, control_tokens=model.control_tokens
    )
    return GenerationService(settings, engine, sanitizer, prompt_builder_for(model))
