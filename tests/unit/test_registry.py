"""The model registry: the one source of truth for what serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from modules.llm.inference import (
    Backend,
    BackendUnavailableError,
    Capabilities,
    ModelNotFoundError,
    ModelRegistry,
    ModelSpec,
    RemoteBackend,
)
from modules.llm.inference import registry as registry_module
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


async def test_descriptions_come_from_one_place_default_first() -> None:
    registry = ModelRegistry(specs("a", "broken", "b"), factory)
    await registry.load_all()
    models = registry.describe_all()
    assert [(m.alias, m.state, m.default) for m in models] == [
        ("a", "loaded", True),
        ("broken", "failed", False),
        ("b", "loaded", False),
    ]
    a, broken, _ = models
    assert a.description is not None
    assert a.load is not None
    assert a.description.capabilities == FakeBackend.capabilities
    assert a.description.slots == a.load.slots == 4
    assert a.source == "a.gguf"  # the file's name, not its path
    assert (broken.description, broken.load, broken.stats) == (None, None, None)
    assert "not a gguf file" in (broken.error or "")
    assert registry.describe("b") == models[2]


def test_capabilities_name_what_is_missing() -> None:
    local = Capabilities(grammar=True, logprobs=True)
    assert local.missing("chat", "tools", "grammar", "n") == ("tools", "n")
    assert local.missing("chat", "completion") == ()
    assert local.names() == ("chat", "completion", "grammar", "logprobs")


async def test_a_remote_model_is_described_without_credentials() -> None:
    url = "https://user:s3cret@gpu.example:8443/v1#qwen|http://10.0.0.2:8080/v1#qwen"
    spec = ModelSpec("pool", url=url, api_key="sk-never-shown")

    def connect(spec: ModelSpec) -> Backend:
        return RemoteBackend.connect(
            spec.alias,
            spec.url or "",
            spec.api_key,
            context_size=4096,
            connect_timeout=1,
            read_timeout=1,
        )

    registry = ModelRegistry([spec], connect)
    await registry.load_all()
    (model,) = registry.describe_all()
    described = model.description
    assert described is not None
    assert described.kind == "remote"
    assert (described.local, described.path) == (None, None)  # no file, nothing private
    assert [node.url for node in described.nodes] == [
        "https://gpu.example:8443/v1",
        "http://10.0.0.2:8080/v1",
    ]
    assert [node.model for node in described.nodes] == ["qwen", "qwen"]
    assert model.source == described.source == "https://gpu.example:8443/v1|http://10.0.0.2:8080/v1"
    for secret in ("s3cret", "sk-never-shown"):
        assert secret not in repr(model)
    assert described.capabilities.missing("embeddings", "grammar", "tools", "logprobs", "n") == ()
    assert described.any_node_up
    assert described.latency_seconds is None
    await registry.stop_all()


class LogLines:
    """Stands in for the registry's logger: what it was asked to write."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, object]]] = []

    def error(self, event: str, **fields: object) -> None:
        self.lines.append((event, fields))


async def test_load_errors_are_kept_and_logged_without_directories_or_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = LogLines()
    monkeypatch.setattr(registry_module, "logger", log)
    local = ModelSpec("local", Path("/srv/private models/q.gguf"))
    remote = ModelSpec("remote", url="http://user:s3cret@gpu:8080/v1")

    def failing(spec: ModelSpec) -> Backend:
        if spec.path is not None:  # as llama-cpp-python says it
            raise ValueError(f"Failed to load model from file: {spec.path}")
        raise OSError(f"Client error '401 Unauthorized' for url '{spec.url}/models'")

    registry = ModelRegistry([local, remote], failing)
    with pytest.raises(RuntimeError) as nothing_loaded:
        await registry.load_all()
    errors = {alias: registry.entry(alias).error for alias in ("local", "remote")}
    assert errors == {
        "local": "Failed to load model from file: q.gguf",
        "remote": "Client error '401 Unauthorized' for url 'http://gpu:8080/v1/models'",
    }
    assert [fields["error"] for _, fields in log.lines] == list(errors.values())
    shown = " ".join([str(nothing_loaded.value), *map(str, log.lines), *map(repr, (local, remote))])
    for secret in ("private", "s3cret", "user:"):
        assert secret not in shown
    assert repr(local) == "ModelSpec(alias='local', local='q.gguf')"
    assert repr(remote) == "ModelSpec(alias='remote', remote='http://gpu:8080/v1')"
