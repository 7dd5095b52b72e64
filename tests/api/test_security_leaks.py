"""Credentials and local paths never reach an answer or a log line (issue 21, finding 2).

The service is configured the way an operator leaks them: remote servers written with their
credentials in the URL (one that refuses them at start-up, so its load error carries the URL
as configured; one named `#model`, so it loads without contact), and local files in a
directory whose name must stay private (one not a GGUF, one missing, both failing in the
real llama.cpp loader with the path in the message). Every answer a user, an admin or a
scraper can get, and everything the process prints, is searched for the secrets."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from app import create_app
from app.migrations import upgrade_to_head
from modules.llm import local_backend_factory
from modules.llm.api.models import LOAD_FAILED
from modules.llm.inference import Backend, ModelSpec
from tests.fakes import FakeBackends
from tests.support import (
    CHEAP_HASHER,
    PASSWORD,
    Api,
    RunningServer,
    cli_server,
    make_settings,
    promote,
)

REMOTE_USER = "leaky-user-q7"
REMOTE_PASSWORD = "hunter2-pass-q7"
DIRECTORY = "secret-models-dir-q7"
SECRETS = (REMOTE_USER, REMOTE_PASSWORD, DIRECTORY)


class Refusing(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that refuses the credentials it is given."""

    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "bad credentials"}}')

    do_POST = do_GET

    def log_message(self, *_: object) -> None:  # quiet
        return


@pytest.fixture
def refusing_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{REMOTE_USER}:{REMOTE_PASSWORD}@127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Leaky:
    api: Api
    user: str  # tokens
    admin: str


@pytest.fixture
def leaky(tmp_path: Path, refusing_server: str) -> Iterator[Leaky]:
    models = tmp_path / DIRECTORY
    models.mkdir()
    (models / "broken.gguf").write_bytes(b"not a gguf file")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    settings = make_settings(
        database_url,
        tmp_path,
        llm_models=",".join(
            (
                f"main={models / 'main.gguf'}",  # the fake serves it
                f"broken={models / 'broken.gguf'}",
                f"missing={models / 'missing.gguf'}",
                f"far={refusing_server}",  # asks for its models at start-up: refused
                f"named={refusing_server}#some-model",  # loads without contact
            )
        ),
        llm_context_size=512,
        llm_parallel=1,
    )
    real, fakes = local_backend_factory(settings), FakeBackends()

    def factory(spec: ModelSpec) -> Backend:
        return fakes(spec) if spec.alias == "main" else real(spec)

    app = create_app(settings, backend_factory=factory, password_hasher=CHEAP_HASHER)
    with RunningServer(app) as server:
        api = Api(base_url=server.base_url, app=app, database_url=database_url)
        yield Leaky(api, user=api.user_token(), admin=api.admin_token())


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{where} shows {secret!r}: {text[:2000]}"


def test_credentials_and_paths_appear_in_no_answer_and_no_log_line(
    tmp_path: Path, refusing_server: str
) -> None:
    # `llm-service serve` as an operator runs it, its output (every log line) in a file.
    # (No missing file here: `serve`'s start-up warning still prints its full path, cli.py.)
    models = tmp_path / DIRECTORY
    models.mkdir()
    (models / "broken.gguf").write_bytes(b"not a gguf file")
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    env = {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "LOG_LEVEL": "INFO",
        "LLM_MODELS": f"named={refusing_server}#some-model,far={refusing_server},"
        f"broken={models / 'broken.gguf'}",
    }
    answers: dict[str, str] = {}
    log = tmp_path / "server.log"
    with log.open("wb") as output, cli_server(env, output) as base_url:
        tokens = {}
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for who in ("user", "admin"):
                email = f"{who}-{uuid.uuid4().hex[:8]}@example.com"
                registered = client.post(
                    "/auth/register", json={"email": email, "password": PASSWORD}
                )
                assert registered.status_code == 201, registered.text
                if who == "admin":
                    promote(database_url, email)
                login = {"email": email, "password": PASSWORD}
                tokens[who] = client.post("/auth/login", json=login).json()["access_token"]
            answers["/health"] = client.get("/health").text
            answers["/metrics"] = client.get("/metrics").text
            for who, token in tokens.items():
                headers = {"Authorization": f"Bearer {token}"}
                for path in ("/llm/models", "/v1/models", "/health/details"):
                    answers[f"{path} ({who})"] = client.get(path, headers=headers).text
                for model in ("named", "far", "broken"):
                    body = {"prompt": "hi", "model": model, "use_cache": False}
                    generated = client.post("/llm/generate", json=body, headers=headers)
                    answers[f"generate {model} ({who})"] = generated.text
            admin = {"Authorization": f"Bearer {tokens['admin']}"}
            for model in ("broken", "far"):
                loaded = client.post(f"/llm/models/{model}/load", headers=admin)
                answers[f"load {model}"] = loaded.text
    assert '"state":"failed"' in answers["load far"]  # the errors were there to leak
    for where, text in answers.items():
        assert_no_secret(where, text)
    logged = log.read_text()
    assert "model failed to load" in logged  # the log was captured
    assert_no_secret("the log", logged)


def test_public_health_gives_status_words_only(leaky: Leaky) -> None:
    with leaky.api.client() as anonymous:
        response = anonymous.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "process", "database", "model", "models", "cache", "limits"}
    for component in ("process", "database", "cache", "limits"):
        assert body[component] == {"status": "ok"}, component
    assert body["model"] == {"name": "main", "status": "ok", "state": "loaded"}
    assert [(m["name"], m["status"], m["state"]) for m in body["models"]] == [
        ("main", "ok", "loaded"),
        ("broken", "unavailable", "failed"),
        ("missing", "unavailable", "failed"),
        ("far", "unavailable", "failed"),
        ("named", "ok", "loaded"),
    ]
    assert all(set(m) == {"name", "status", "state"} for m in body["models"])
    # No counters, slots, versions or process ids for anyone who asks.
    for word in ("busy", "slots", "completed", "queue", "pid", "version", "uptime", "error"):
        assert word not in response.text


def test_health_details_are_for_admins_with_errors_redacted(leaky: Leaky) -> None:
    api = leaky.api
    with api.client() as anonymous:
        assert anonymous.get("/health/details").status_code == 401
    with api.client(leaky.user) as user:
        assert user.get("/health/details").status_code == 403
    with api.client(leaky.admin) as admin:
        response = admin.get("/health/details")
    assert response.status_code == 200
    details = response.json()
    models = {m["name"]: m for m in details["models"]}
    assert models["main"]["busy_slots"] == 0
    assert models["main"]["completed"] >= 0
    assert details["process"]["pid"] > 0
    # What failed, and why, without the directory or the credentials.
    assert models["missing"]["error"].endswith("missing.gguf")
    assert "broken.gguf" in models["broken"]["error"]
    port = api.registry.entry("far").spec.url.rsplit(":", 1)[1].split("/")[0]  # type: ignore[union-attr]
    assert models["far"]["error"] == f"http://127.0.0.1:{port}/v1/models answered 401"
    assert [node["url"] for node in models["named"]["nodes"]] == [f"http://127.0.0.1:{port}/v1"]


def test_model_listing_shows_users_no_servers_and_no_error_text(leaky: Leaky) -> None:
    api = leaky.api
    with api.client(leaky.user) as user:
        listed = {m["alias"]: m for m in user.get("/llm/models").json()["models"]}
    assert listed["main"]["file"] == "main.gguf"  # a file's name is not a path
    assert listed["broken"]["file"] == "broken.gguf"
    assert listed["named"]["file"] is None  # servers: for admins
    assert listed["far"]["file"] is None
    for alias in ("broken", "missing", "far"):
        assert listed[alias]["error"] == LOAD_FAILED
    assert listed["main"]["error"] is None
    with api.client(leaky.admin) as admin:
        seen = {m["alias"]: m for m in admin.get("/llm/models").json()["models"]}
    assert seen["named"]["file"].startswith("http://127.0.0.1:")
    assert seen["missing"]["error"] == "Model path does not exist: missing.gguf"
    assert seen["broken"]["error"] == "Failed to load model from file: broken.gguf"
    assert json.dumps(seen).count("127.0.0.1") == 3  # the servers of named and far, far's error
