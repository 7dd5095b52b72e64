"""PostgreSQL restarts under load: 503 with Retry-After while it is down (never 500),
answers again within seconds after, no answered turn lost, and a stream in flight ends with
`done` or `error`. On a throwaway cluster of its own (initdb in a temporary directory, its
own port), so the shared server is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.support import PASSWORD, RunningServer, fake_app, free_port, make_settings

PG_BIN = (
    Path("/usr/lib/postgresql")
    / (
        sorted(os.listdir("/usr/lib/postgresql"))[-1]
        if Path("/usr/lib/postgresql").is_dir()
        else ""
    )
    / "bin"
)


def as_postgres(*command: str) -> list[str]:
    """PostgreSQL refuses to run as root: CI runs as root, so the cluster is postgres's."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


class Cluster:
    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    def ctl(self, *args: str) -> None:
        subprocess.run(
            as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-l",
                str(self.directory / "log"),
                "-o",
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
                "-w",
                *args,
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL's server binaries are not at {PG_BIN}: this test needs them")
    # Not under pytest's temporary directory: the postgres user must be able to reach it.
    directory = Path(tempfile.mkdtemp(prefix="llm-service-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    try:
        subprocess.run(
            as_postgres(
                str(PG_BIN / "initdb"),
                *("-D", str(directory / "data"), "-A", "trust", "-U", "postgres"),
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster = Cluster(directory, free_port())
        cluster.ctl("start")
        yield cluster
    finally:
        subprocess.run(
            as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(directory / "data"), "-m", "immediate", "stop"
            ),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(directory, ignore_errors=True)


def test_a_postgres_restart_costs_503s_for_seconds_and_loses_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{cluster.port}/postgres"
    upgrade_to_head(url)
    app = fake_app(make_settings(url, tmp_path), token_delay=0.02, answer_tokens=100)
    with RunningServer(app) as server, httpx.Client(base_url=server.base_url, timeout=30) as c:
        c.post("/auth/register", json={"email": "f@example.com", "password": PASSWORD})
        token = c.post("/auth/login", json={"email": "f@example.com", "password": PASSWORD}).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {token}"}
        quick = {"prompt": "Hi.", "use_cache": False, "settings": {"max_tokens": 2}}
        answered = c.post("/llm/generate", json=quick, headers=auth).json()
        conversation = answered["conversation_id"]

        # A stream is in flight (two seconds of tokens) when the database goes away.
        events: list[str] = []

        def stream() -> None:
            body = {"prompt": "Go on.", "stream": True, "use_cache": False}
            with c.stream("POST", "/llm/generate", json=body, headers=auth) as response:
                events.extend(
                    line[7:] for line in response.iter_lines() if line.startswith("event: ")
                )

        streaming = threading.Thread(target=stream)
        streaming.start()
        time.sleep(0.3)
        cluster.ctl("-m", "fast", "stop")
        statuses = {
            "health": c.get("/health").status_code,
            "login": c.post(
                "/auth/login", json={"email": "f@example.com", "password": PASSWORD}
            ).status_code,
            "generate": c.post("/llm/generate", json=quick, headers=auth).status_code,
        }
        refused = c.get("/users/me", headers=auth)
        assert set(statuses.values()) == {503}, statuses
        assert refused.status_code == 503
        assert refused.headers["retry-after"]
        streaming.join(30)
        assert events[0] == "start"
        assert events[-1] in ("done", "error")

        cluster.ctl("start")
        started = time.monotonic()
        while c.get("/health").status_code != 200:
            assert time.monotonic() - started < 15, "still down 15 s after PostgreSQL came back"
            time.sleep(0.2)
        recovered = c.post(
            "/llm/generate", json={**quick, "conversation_id": conversation}, headers=auth
        )
        assert recovered.status_code == 200, recovered.text
        detail = c.get(f"/conversations/{conversation}", headers=auth).json()
        # The turn answered before the outage is there, and so is the one after it.
        assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
        assert [m["content"] for m in detail["messages"] if m["role"] == "user"] == ["Hi."] * 2
