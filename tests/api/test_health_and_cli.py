"""Health when the database or the model is down, and the command line."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.conftest import admin_execute
from tests.support import Api, RunningServer, fake_app, free_port, make_settings

CLI = shutil.which("llm-service") or str(Path(sys.executable).with_name("llm-service"))


def test_health_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    app = fake_app(make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none", tmp_path))
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["database"]["status"] == "unavailable"
        assert health.json()["model"]["status"] == "ok"
        # Requests that need the database get a 503 too, not a 500.
        login = client.post("/auth/login", json={"email": "a@b.co", "password": "whatever-1"})
        assert login.status_code == 503, login.text
        # Alive all the same: a restart would not bring the database back.
        live = client.get("/health/live")
        assert live.status_code == 200
        assert live.json() == {"status": "ok"}


def test_health_is_503_when_the_model_is_down(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path))
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url) as client:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        client.post("/auth/register", json={"email": email, "password": "correct-horse-1"})
        token = client.post(
            "/auth/login", json={"email": email, "password": "correct-horse-1"}
        ).json()["access_token"]
        app.state.llm.registry.default.close()
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["model"]["status"] == "unavailable"
        assert client.get("/health/live").status_code == 200
        response = client.post(
            "/llm/generate", json={"prompt": "hi"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 503
        assert response.headers["retry-after"]


def run_cli(
    *args: str, database_url: str, stdin: str = "", **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "JWT_SECRET": "c" * 40, **settings}
    return subprocess.run(
        [CLI, *args], input=stdin, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_migrate_and_create_admin_on_sqlite(tmp_path: Path) -> None:
    database = tmp_path / "cli.db"
    url = f"sqlite+aiosqlite:///{database}"
    migrated = run_cli("migrate", database_url=url)
    assert migrated.returncode == 0, migrated.stderr
    weak = run_cli(
        "create-admin", "--email", "a@b.co", "--password-stdin", database_url=url, stdin="x\n"
    )
    assert weak.returncode != 0
    assert "password" in weak.stderr
    # The email is checked as registration checks it.
    spoofed = run_cli(
        "create-admin",
        "--email",
        "bo\u200bss@example.com",
        "--password-stdin",
        database_url=url,
        stdin="boss-password-1\n",
    )
    assert spoofed.returncode != 0
    assert "U+200B" in spoofed.stderr
    created = run_cli(
        "create-admin",
        "--email",
        "Boss@Example.com",
        "--password-stdin",
        database_url=url,
        stdin="boss-password-1\n",
    )
    assert created.returncode == 0, created.stderr
    assert str(database) in created.stdout  # it says which database it wrote to
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT email, role FROM users").fetchall()
    assert rows == [("boss@example.com", "admin")]


def test_cli_create_admin_then_admin_api(api: Api) -> None:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    created = run_cli(
        "create-admin",
        "--email",
        email,
        "--password-stdin",
        database_url=api.database_url,
        stdin="admin-password-1\n",
    )
    assert created.returncode == 0, created.stderr
    token = api.login(email, "admin-password-1")["access_token"]
    with api.client(token) as client:
        assert client.get("/users").status_code == 200


def test_serve_refuses_an_unmigrated_database_saying_what_to_do(postgres_url: str) -> None:
    # A database of its own, never migrated (the embedded SQLite default migrates itself).
    name = f"llm_service_unmigrated_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    try:
        url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
        result = run_cli("serve", database_url=url, PORT=str(free_port()))
    finally:
        asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    refused_in_one_line(result, "not migrated")
    assert "run `llm-service migrate`" in result.stderr


def serve_embedded(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """`llm-service serve` on the embedded database, with these settings."""
    return run_cli("serve", database_url="", DATA_DIR=str(tmp_path), **settings)


def refused_in_one_line(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode != 0
    assert reason in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_missing_model_files_without_a_traceback(tmp_path: Path) -> None:
    result = serve_embedded(
        tmp_path,
        LLM_MODELS=f"a={tmp_path / 'a.gguf'},b={tmp_path / 'b.gguf'}",
        LLM_MODEL_PATH=str(tmp_path / "not-checked-when-LLM_MODELS-is-set.gguf"),
    )
    refused_in_one_line(result, "no model file found")
    assert "a.gguf" in result.stderr


def test_serve_refuses_gpu_offload_a_cpu_build_cannot_do(tmp_path: Path) -> None:
    from modules.llm.inference.llamacpp import gpu_offload_supported

    if gpu_offload_supported():
        pytest.skip("this llama-cpp-python build can offload to a GPU")
    refused_in_one_line(serve_embedded(tmp_path, LLM_GPU_LAYERS="-1"), "CPU-only")


def test_serve_refuses_conflicting_model_settings_in_one_line(tmp_path: Path) -> None:
    result = serve_embedded(tmp_path, LLM_MODELS=f"a={tmp_path / 'a.gguf'}", LLM_DEFAULT_MODEL="b")
    refused_in_one_line(result, "LLM_DEFAULT_MODEL='b' is not in LLM_MODELS")
