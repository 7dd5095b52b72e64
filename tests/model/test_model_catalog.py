"""A model added at run time on a real server: pulled from a loopback server, its load's
progress reported by llama.cpp, then an answer from it through the openai SDK."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.support import NO_LIMITS, PASSWORD, FileServer, cli, cli_server


@contextmanager
def admin_client(url: str) -> Iterator[httpx.Client]:
    """A client logged in as the admin that `create-admin` made."""
    with httpx.Client(base_url=url, timeout=120) as client:
        login = client.post("/auth/login", json={"email": "ops@example.com", "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        yield client


def test_pull_with_progress_then_an_answer(model_path: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(model_path, served / "smol.gguf")
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "MODELS_DIR": str(tmp_path / "models"),
        **NO_LIMITS,
    }
    cli("create-admin", "--email", "ops@example.com", "--password-stdin", env=env, stdin=PASSWORD)
    with FileServer(served) as files:
        env["MODEL_DOWNLOAD_PREFIXES"] = f"{files.base_url}/"
        with cli_server(env) as url, httpx.Client(base_url=url, timeout=120) as client:
            login = client.post(
                "/auth/login", json={"email": "ops@example.com", "password": PASSWORD}
            )
            token = login.json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            body = {"alias": "pulled", "url": f"{files.base_url}/smol.gguf", "slots": 1}
            assert client.post("/llm/models", json=body).status_code == 202
            states: list[dict[str, Any]] = []
            with client.stream("GET", "/llm/models/pulled/events") as events:
                for line in events.iter_lines():
                    if line.startswith("data: "):
                        states.append(json.loads(line.removeprefix("data: ")))
            assert states[-1]["state"] == "ready", states[-1]
            loading = [s["progress"] for s in states if s["state"] == "loading"]
            assert any(p is not None and 0 < p <= 1 for p in loading), states
            assert states[-1]["slots"] == 1  # the load option, over LLM_PARALLEL
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0)
            answer = sdk.chat.completions.create(
                model="pulled", messages=[{"role": "user", "content": "Hello"}], max_tokens=8
            )
            assert answer.model == "pulled"
            assert answer.choices[0].message.content


def test_a_file_that_is_not_a_gguf_fails_without_a_crash(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "page.gguf").write_text("<!DOCTYPE html>" * 64)
    env = {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "MODELS_DIR": str(models),
        **NO_LIMITS,
    }
    cli("create-admin", "--email", "ops@example.com", "--password-stdin", env=env, stdin=PASSWORD)
    with cli_server(env) as url, admin_client(url) as client:
        body = {"alias": "bad", "path": "page.gguf"}
        assert client.post("/llm/models", json=body).status_code == 202
        with client.stream("GET", "/llm/models/bad/events") as events:
            last = [json.loads(x[6:]) for x in events.iter_lines() if x.startswith("data: ")][-1]
        assert last["state"] == "failed"
        assert "not a GGUF" in last["error"]
        assert client.get("/health").status_code == 200  # the default model serves on
