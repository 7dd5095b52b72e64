"""The model registry: the one source of truth for what serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.llm.inference import (
    Backend,
    BackendUnavailableError,
    ModelNotFoundError,
    ModelRegistry,
    ModelSpec,
)
from tests.fakes import FakeBackend


def factory(spec: ModelSpec) -> Backend:
    if spec.alias == "broken":
        raise ValueError("not a gguf file")
    return FakeBackend(spec.alias)


def specs(*aliases: str) -> list[ModelSpec]:
    return [ModelSpec(alias, Path(f"/models/{alias}.gguf")) for alias in aliases]


async def test_a_broken_model_leaves_the_others_serving() -> None:
    changed: list[str] = []
    registry = ModelRegistry(specs("a", "broken", "b"), factory, on_change=changed.append)
    await registry.load_all()
    assert registry.default_alias == "a"
    assert registry.get().alias == "a"
    assert registry.get("b").alias == "b"
    assert registry.entry("broken").state == "failed"
    assert "not a gguf file" in (registry.entry("broken").error or "")
    with pytest.raises(BackendUnavailableError, match="failed"):
        registry.get("broken")
    assert [e.alias for e in registry.loaded] == ["a", "b"]
    # Start-up announces nothing (other replicas keep their cached answers); an operator's
    # load or unload does.
    assert changed == []
    await registry.unload("b")
    await registry.load("b")
    assert changed == ["b", "b"]
    # Cached answers are keyed by the weights: the path, here, as the file does not exist.
    assert registry.entry("b").fingerprint.endswith("b.gguf")


async def test_unknown_names_list_what_exists() -> None:
    registry = ModelRegistry(specs("a"), factory)
    with pytest.raises(ModelNotFoundError) as raised:
        registry.get("gpt-9")
    assert raised.value.available == ["a"]


async def test_unload_closes_and_refuses_then_load_serves_again() -> None:
    registry = ModelRegistry(specs("a", "b"), factory)
    await registry.load_all()
    backend = registry.get("b")
    await registry.unload("b")
    assert isinstance(backend, FakeBackend)
    assert backend.closed
    with pytest.raises(BackendUnavailableError, match="unloaded"):
        registry.get("b")
    await registry.load("b")
    assert registry.get("b") is not backend


async def test_start_up_fails_when_no_model_loads() -> None:
    registry = ModelRegistry(specs("broken"), factory)
    with pytest.raises(RuntimeError, match="no model could be loaded"):
        await registry.load_all()
