"""The end-to-end tier: the bundled SmolLM2 model, loaded once, behind the real app on
PostgreSQL. Every test here is marked `model` (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app import create_app
from app.migrations import upgrade_to_head
from modules.llm.inference.llamacpp import LlamaCppBackend
from tests.support import Api, RunningServer, make_settings


class ModelApi(Api):
    @property
    def backend(self) -> LlamaCppBackend:
        backend = self.registry.default
        assert isinstance(backend, LlamaCppBackend)
        return backend


@pytest.fixture(scope="session")
def api(
    postgres_url: str, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelApi]:
    tmp_path = tmp_path_factory.mktemp("model")
    upgrade_to_head(postgres_url)
    app = create_app(make_settings(postgres_url, tmp_path))
    with RunningServer(app) as server:
        yield ModelApi(base_url=server.base_url, app=app, database_url=postgres_url)
