"""Models added at run time (POST /llm/models), on two replicas sharing one PostgreSQL
database and one MODELS_DIR, with the fast tier's fake backend (the real model's load is
in tests/model/test_model_catalog.py): a download from a loopback server with progress
events, the GGUF checked before loading, refusals (a URL outside the prefixes, a wrong
sha256, a file that is not a GGUF, a path outside MODELS_DIR, a settings model's delete),
and both replicas in step within 5 s."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.migrations import upgrade_to_head
from modules.config import default_model_path
from tests.conftest import admin_execute
from tests.support import (
    Api,
    FileServer,
    RunningServer,
    fake_app,
    make_settings,
    wait_for,
)

SYNC_WITHIN = 5.0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """A loopback server with the bundled GGUF and a file that is not one."""
    root = tmp_path_factory.mktemp("served")
    model = default_model_path()
    assert model is not None
    shutil.copy(model, root / "smol.gguf")
    (root / "page.html").write_text("<!DOCTYPE html><html></html>" * 100)
    with FileServer(root) as server:
        yield server


@pytest.fixture(scope="module")
def slow_files(files: FileServer) -> Iterator[FileServer]:
    """The same files at a megabyte every 50 ms: a download long enough to cancel."""
    with FileServer(files.root, chunk_delay=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def replicas(
    postgres_url: str,
    files: FileServer,
    slow_files: FileServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Api]]:
    """Two replicas on a database of their own and one MODELS_DIR."""
    name = f"llm_service_catalog_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    database_url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade_to_head(database_url)
    models_dir = tmp_path_factory.mktemp("models")
    (models_dir / "local.gguf").write_bytes(Path(files.root / "smol.gguf").read_bytes())
    apis = []
    servers = []
    try:
        for index in range(2):
            settings = make_settings(
                database_url,
                tmp_path_factory.mktemp(f"replica{index}"),
                models_dir=str(models_dir),
                model_download_prefixes=f"{files.base_url}/,{slow_files.base_url}/",
                model_sync_seconds=0.5,
            )
            server = RunningServer(fake_app(settings)).__enter__()
            servers.append(server)
            apis.append(Api(base_url=server.base_url, app=server.app, database_url=database_url))
        yield apis
    finally:
        for server in servers:
            server.__exit__()
        asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state_of(api: Api, token: str, alias: str) -> dict[str, Any]:
    with api.client(token) as client:
        response = client.get(f"/llm/models/{alias}")
        return dict(response.json()) if response.status_code == 200 else {"status": 404}


def settled(api: Api, token: str, alias: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        model = state_of(api, token, alias)
        if model.get("state") in ("ready", "failed"):
            return model
        time.sleep(0.05)
    raise AssertionError(f"{alias} did not settle: {state_of(api, token, alias)}")


def test_a_download_streams_its_progress_then_serves_on_both_replicas(
    replicas: list[Api], files: FileServer
) -> None:
    first, second = replicas
    token = first.admin_token()
    body = {
        "alias": "pulled",
        "url": f"{files.base_url}/smol.gguf",
        "sha256": sha256_of(files.root / "smol.gguf"),
        "context_size": 1024,
    }
    with first.client(token) as client:
        added = client.post("/llm/models", json=body)
        assert added.status_code == 202, added.text
        assert added.headers["location"] == "/llm/models/pulled"
        assert added.json()["origin"] == "catalog"
        states: list[dict[str, Any]] = []
        with client.stream("GET", "/llm/models/pulled/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            for line in events.iter_lines():
                if line.startswith("data: "):
                    states.append(json.loads(line.removeprefix("data: ")))
    seen = [state["state"] for state in states]
    assert seen[-1] == "ready", states
    assert "downloading" in seen or "loading" in seen  # at least one step on the way
    downloading = [s for s in states if s["state"] == "downloading" and s["bytes_total"]]
    for earlier, later in itertools.pairwise(downloading):
        assert earlier["bytes_done"] <= later["bytes_done"]
    # The other replica finds the file whole in the shared directory and serves it too.
    second_token = second.admin_token()
    assert wait_for(lambda: state_of(second, second_token, "pulled").get("state") == "ready", 10)
    for api, who in ((first, token), (second, second_token)):
        with api.client(who) as client:
            listed = [m["id"] for m in client.get("/v1/models").json()["data"]]
            assert "pulled" in listed
            answer = client.post("/llm/generate", json={"prompt": "Hi", "model": "pulled"})
            assert answer.status_code == 200, answer.text


def test_a_model_deleted_on_one_replica_is_gone_from_both(replicas: list[Api]) -> None:
    first, second = replicas
    token, second_token = first.admin_token(), second.admin_token()
    with first.client(token) as client:
        added = client.post("/llm/models", json={"alias": "local", "path": "local.gguf"})
        assert added.status_code == 202, added.text
    assert settled(first, token, "local")["state"] == "ready"
    started = time.monotonic()
    assert wait_for(lambda: state_of(second, second_token, "local").get("state") == "ready", 10)
    assert time.monotonic() - started < SYNC_WITHIN
    with second.client(second_token) as client:
        assert client.delete("/llm/models/local").status_code == 204
    started = time.monotonic()
    assert wait_for(lambda: state_of(first, token, "local") == {"status": 404}, 10)
    assert time.monotonic() - started < SYNC_WITHIN
    with first.client(token) as client:
        assert "local" not in [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert (
            client.post("/llm/generate", json={"prompt": "Hi", "model": "local"}).status_code == 404
        )


def test_a_deleted_download_removes_its_file(replicas: list[Api], files: FileServer) -> None:
    first, _ = replicas
    token = first.admin_token()
    with first.client(token) as client:
        body = {"alias": "gone", "url": f"{files.base_url}/smol.gguf"}
        assert client.post("/llm/models", json=body).status_code == 202
        assert settled(first, token, "gone")["state"] == "ready"
        downloads = Path(first.app.state.llm.catalog.downloads)  # type: ignore[attr-defined]
        assert [p.name for p in downloads.glob("gone-*.gguf")]
        assert client.delete("/llm/models/gone").status_code == 204
        assert not list(downloads.glob("gone-*"))


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"alias": "x", "url": "https://example.com/x.gguf"}, 400, "url"),
        ({"alias": "x", "path": "../../etc/passwd"}, 400, "path"),
        ({"alias": "x", "path": "missing.gguf"}, 400, "path"),
        ({"alias": "x"}, 400, "path"),
        ({"alias": "x", "path": "local.gguf", "remote": "http://127.0.0.1:1/v1"}, 400, "path"),
        ({"alias": "bad alias", "path": "local.gguf"}, 400, "alias"),
        ({"alias": "x", "path": "local.gguf", "pooling": "max"}, 400, "pooling"),
        ({"alias": "x", "path": "local.gguf", "flavour": "vanilla"}, 400, "flavour"),
    ],
)
def test_refused_before_anything_is_stored(
    replicas: list[Api], body: dict[str, Any], status: int, field: str
) -> None:
    first, _ = replicas
    with first.client(first.admin_token()) as client:
        response = client.post("/llm/models", json=body)
        assert response.status_code == status, response.text
        assert field in response.text
        assert client.get("/llm/models/x").status_code == 404


def test_a_wrong_sha256_and_a_non_gguf_fail_saying_why(
    replicas: list[Api], files: FileServer
) -> None:
    first, _ = replicas
    token = first.admin_token()
    with first.client(token) as client:
        wrong = {"alias": "wrong-digest", "url": f"{files.base_url}/smol.gguf", "sha256": "0" * 64}
        page = {"alias": "page", "url": f"{files.base_url}/page.html"}
        for body in (wrong, page):
            assert client.post("/llm/models", json=body).status_code == 202
    failed = settled(first, token, "wrong-digest")
    assert failed["state"] == "failed"
    assert "sha256" in failed["error"]
    failed = settled(first, token, "page")
    assert failed["state"] == "failed"
    assert "GGUF" in failed["error"]
    with first.client(token) as client:
        for alias in ("wrong-digest", "page"):
            assert client.delete(f"/llm/models/{alias}").status_code == 204


def test_settings_models_stay_and_users_cannot_add(replicas: list[Api]) -> None:
    first, _ = replicas
    default = first.registry.default_alias
    with first.client(first.admin_token()) as client:
        refused = client.delete(f"/llm/models/{default}")
        assert refused.status_code == 409
        assert client.get(f"/llm/models/{default}").json()["origin"] == "settings"
        taken = client.post("/llm/models", json={"alias": default, "path": "local.gguf"})
        assert taken.status_code == 409
    with first.client(first.user_token()) as client:
        body = {"alias": "mine", "path": "local.gguf"}
        assert client.post("/llm/models", json=body).status_code == 403
        assert client.delete(f"/llm/models/{default}").status_code == 403


def test_a_gateway_adds_remote_models_only(
    replicas: list[Api], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """MODEL_CATALOG_LOCAL=false (gateways in front of inference nodes): no files loaded."""
    first, _ = replicas
    settings = make_settings(
        first.database_url,
        tmp_path_factory.mktemp("gateway"),
        models_dir=str(Path(first.app.state.llm.catalog.models_dir)),
        model_sync_seconds=0.5,
        model_catalog_local=False,
    )
    first_token = first.admin_token()
    with RunningServer(fake_app(settings)) as server:
        gateway = Api(base_url=server.base_url, app=server.app, database_url=first.database_url)
        token = gateway.admin_token()
        with gateway.client(token) as client:
            for body in (
                {"alias": "gateway-file", "path": "local.gguf"},
                {"alias": "gateway-download", "url": "https://huggingface.co/x/y.gguf"},
            ):
                refused = client.post("/llm/models", json=body)
                assert refused.status_code == 409, refused.text
                assert "MODEL_CATALOG_LOCAL=false" in refused.json()["detail"]
            remote = {"alias": "gateway-remote", "remote": f"{first.base_url}/v1#node-model"}
            assert client.post("/llm/models", json=remote).status_code == 202
        # A file added on a replica that loads them: failed here, saying what to do.
        with first.client(first_token) as client:
            body = {"alias": "node-file", "path": "local.gguf"}
            assert client.post("/llm/models", json=body).status_code == 202
        try:
            assert wait_for(lambda: state_of(gateway, token, "node-file").get("state") == "failed")
            error = state_of(gateway, token, "node-file")["error"]
            assert "MODEL_CATALOG_LOCAL=false" in error
            assert '"remote": "NODE_URL/v1#ALIAS"' in error  # as written, not redacted
        finally:
            # Each where it was added: the other replica may not have synced it yet.
            with first.client(first_token) as client:
                assert client.delete("/llm/models/node-file").status_code == 204
            with gateway.client(token) as client:
                assert client.delete("/llm/models/gateway-remote").status_code == 204


def test_events_of_an_unknown_model_are_a_404(replicas: list[Api]) -> None:
    first, _ = replicas
    with first.client(first.admin_token()) as client:
        assert client.get("/llm/models/nope/events").status_code == 404
        assert isinstance(client.get("/llm/models").json()["models"], list)
        assert client.delete("/llm/models/nope").status_code == httpx.codes.NOT_FOUND


def test_deleting_a_model_while_it_downloads_cancels_the_download(
    replicas: list[Api], slow_files: FileServer
) -> None:
    first, second = replicas
    token, second_token = first.admin_token(), second.admin_token()
    downloads = Path(first.app.state.llm.catalog.downloads)
    with first.client(token) as client:
        body = {"alias": "cancelled", "url": f"{slow_files.base_url}/smol.gguf"}
        assert client.post("/llm/models", json=body).status_code == 202

        # Either replica may hold the shared file's lock and fetch it; the other waits.
        def downloading() -> bool:
            models = (
                state_of(first, token, "cancelled"),
                state_of(second, second_token, "cancelled"),
            )
            return any(
                m.get("state") == "downloading" and (m.get("bytes_done") or 0) > 0 for m in models
            )

        assert wait_for(downloading, 10)

        # The replica that waits shows the other's progress, read from the shared directory.
        def both_show_bytes() -> bool:
            models = (
                state_of(first, token, "cancelled"),
                state_of(second, second_token, "cancelled"),
            )
            return all(
                m.get("state") == "downloading"
                and (m.get("bytes_done") or 0) > 0
                and m.get("bytes_total")
                for m in models
            )

        assert wait_for(both_show_bytes, 10)
        assert client.delete("/llm/models/cancelled").status_code == 204
        assert client.get("/llm/models/cancelled").status_code == 404
    # Neither the file nor its .part, once the other replica's sync has cancelled its side.
    assert wait_for(lambda: not list(downloads.glob("cancelled-*")), 10)
