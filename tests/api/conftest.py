"""The fast tier: the real app on a real port, on PostgreSQL and on SQLite, with a fake
inference backend (deterministic tokens, real queueing and cancellation)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.migrations import upgrade_to_head
from tests.fakes import FakeBackend, FakeBackends
from tests.support import Api, RunningServer, fake_app, make_settings


class FakeApi(Api):
    backends: FakeBackends

    @property
    def backend(self) -> FakeBackend:
        return self.backends.made[self.registry.default_alias]


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def api(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeApi]:
    tmp_path = tmp_path_factory.mktemp(request.param)
    database_url = (
        postgres_url
        if request.param == "postgresql"
        else f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    )
    upgrade_to_head(database_url)
    backends = FakeBackends(parallel=8, queue_size=4)
    app = fake_app(make_settings(database_url, tmp_path), backends)
    with RunningServer(app) as server:
        fake_api = FakeApi(base_url=server.base_url, app=app, database_url=database_url)
        fake_api.backends = backends
        yield fake_api
