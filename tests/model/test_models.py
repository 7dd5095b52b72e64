"""Several models: per-request choice, load/unload, a broken file, validation.

The second model is a Q8_0 re-quantization of the bundled SmolLM2, made here with
llama.cpp's quantize API (nothing is downloaded)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import pytest

from app import create_app
from app.migrations import upgrade_to_head
from tests.support import PASSWORD, RunningServer, make_settings, promote

TINY = {"prompt": "Say hi.", "settings": {"max_tokens": 4, "temperature": 0}, "use_cache": False}


@pytest.fixture(scope="module")
def second_model(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("models") / "smollm2-q8_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    assert (
        llama_cpp.llama_model_quantize(str(model_path).encode(), str(target).encode(), params) == 0
    )
    return target


@pytest.fixture(scope="module")
def multi(
    model_path: Path, second_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("multi")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    settings = make_settings(
        database_url,
        tmp_path,
        llm_models=f"smol={model_path},smol-q8={second_model},broken={broken}",
        llm_parallel=2,
        llm_context_size=1024,
    )
    app = create_app(settings)
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url, timeout=120) as c:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        for address in (email, admin_email):
            c.post("/auth/register", json={"email": address, "password": PASSWORD})
        promote(database_url, admin_email)

        def login(address: str) -> dict[str, str]:
            token = c.post("/auth/login", json={"email": address, "password": PASSWORD}).json()
            return {"Authorization": f"Bearer {token['access_token']}"}

        yield {"client": c, "user": login(email), "admin": login(admin_email)}


def test_models_are_listed_with_state_and_size(multi: dict[str, Any]) -> None:
    listing = multi["client"].get("/llm/models", headers=multi["user"]).json()
    models = {m["alias"]: m for m in listing["models"]}
    assert listing["default"] == "smol"
    assert models["smol"]["state"] == models["smol-q8"]["state"] == "ready"
    assert models["smol-q8"]["size_bytes"] > models["smol"]["size_bytes"]
    # A file that fails to load leaves the others serving.
    assert models["broken"]["state"] == "failed"
    assert models["broken"]["error"]


def test_each_request_names_its_model(multi: dict[str, Any]) -> None:
    client, user = multi["client"], multi["user"]
    default = client.post("/llm/generate", json=TINY, headers=user).json()
    assert default["model"] == "smol"
    chosen = client.post("/llm/generate", json={**TINY, "model": "smol-q8"}, headers=user).json()
    assert chosen["model"] == "smol-q8"
    unknown = client.post("/llm/generate", json={**TINY, "model": "gpt-9"}, headers=user)
    assert unknown.status_code == 404
    assert unknown.json()["available"] == ["smol", "smol-q8", "broken"]
    openai = client.post(
        "/v1/chat/completions",
        json={"model": "smol-q8", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers=user,
    )
    assert openai.status_code == 200
    assert openai.json()["model"] == "smol-q8"
    models = client.get("/v1/models", headers=user).json()
    assert [m["id"] for m in models["data"]] == ["smol", "smol-q8"]


def test_admin_unloads_and_loads_a_model(multi: dict[str, Any]) -> None:
    client, user, admin = multi["client"], multi["user"], multi["admin"]
    assert client.post("/llm/models/smol-q8/unload", headers=user).status_code == 403
    unloaded = client.post("/llm/models/smol-q8/unload", headers=admin)
    assert unloaded.json()["state"] == "unloaded"
    refused = client.post("/llm/generate", json={**TINY, "model": "smol-q8"}, headers=user)
    assert refused.status_code == 503
    assert client.post("/llm/generate", json=TINY, headers=user).status_code == 200
    loaded = client.post("/llm/models/smol-q8/load", headers=admin)
    assert loaded.json()["state"] == "ready"
    again = client.post("/llm/generate", json={**TINY, "model": "smol-q8"}, headers=user)
    assert again.status_code == 200
    assert client.post("/llm/models/nope/load", headers=admin).status_code == 404


def test_validate_model(multi: dict[str, Any]) -> None:
    client, user, admin = multi["client"], multi["user"], multi["admin"]
    assert client.post("/llm/validate-model", json={}, headers=user).status_code == 403
    report = client.post(
        "/llm/validate-model", json={"model": "smol-q8", "max_tokens": 8}, headers=admin
    ).json()
    assert report["available"] is True
    assert report["size_bytes"] > 0
    assert report["context_size"] == 1024
    assert report["tokens_per_second"] > 0
    broken = client.post("/llm/validate-model", json={"model": "broken"}, headers=admin).json()
    assert broken["available"] is False
    assert broken["state"] == "failed"
