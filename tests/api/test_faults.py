"""PostgreSQL restarts under load: 503 with Retry-After while it is down (never 500),
answers again within seconds after, no answered turn lost, and a stream in flight ends with
`done` or `error`. On a throwaway cluster of its own (initdb in a temporary directory, its
own port), so the shared server is never touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from advanced_alchemy.exceptions import RepositoryError
from litestar import Litestar, get
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.testing import TestClient
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import problem_details_config
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

    def ctl(self, *args: str, options: str = "") -> None:
        subprocess.run(
            as_postgres(
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-l",
                str(self.directory / "log"),
                "-o",
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 {options}",
                "-w",
                *args,
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )

    @contextmanager
    def not_accepting_connections(self) -> Iterator[None]:
        """Up but refusing every connection with 57P03 `cannot connect now`, as PostgreSQL
        does while it starts up, for as long as the block runs (a real start-up window
        lasts a second or less): a standby with hot standby off answers that way."""
        signal = self.directory / "data" / "standby.signal"
        self.ctl("-m", "fast", "stop")
        signal.touch()
        try:
            self.ctl("start", options="-c hot_standby=off")
            yield
        finally:
            self.ctl("-m", "fast", "stop")
            signal.unlink()
            self.ctl("start")


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


@dataclass(frozen=True)
class Outcome:
    route: str
    status: int
    retry_after: str | None
    at: float


def test_every_request_answers_or_503s_through_a_whole_postgres_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Four users (three with tokens, one with an API key) keep sending authenticated
    requests, generation included, while PostgreSQL restarts, then refuses connections
    while it "starts up", then comes back: every answer is a success or a 503 with
    Retry-After, never a 500."""
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{cluster.port}/postgres"
    upgrade_to_head(url)
    app = fake_app(make_settings(url, tmp_path), token_delay=0.001, answer_tokens=4)
    outcomes: list[Outcome] = []
    with RunningServer(app) as server:
        credentials = []
        with httpx.Client(base_url=server.base_url, timeout=30) as c:
            for n in range(4):
                email = f"load{n}@example.com"
                c.post("/auth/register", json={"email": email, "password": PASSWORD})
                login = c.post("/auth/login", json={"email": email, "password": PASSWORD})
                token = login.json()["access_token"]
                if n == 3:
                    key = c.post(
                        "/auth/api-keys",
                        json={"name": "load"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert key.status_code == 201, key.text
                    token = key.json()["key"]
                credentials.append({"Authorization": f"Bearer {token}"})
        generate = {"prompt": "Hi.", "use_cache": False, "settings": {"max_tokens": 2}}
        requests = [
            ("GET", "/users/me", None),
            ("POST", "/llm/generate", generate),
            ("GET", "/conversations", None),
            (
                "POST",
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 2},
            ),
        ]
        stop = threading.Event()

        def load(headers: dict[str, str]) -> None:
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as client:
                while not stop.is_set():
                    for method, route, body in requests:
                        response = client.request(method, route, json=body)
                        outcomes.append(
                            Outcome(
                                route,
                                response.status_code,
                                response.headers.get("retry-after"),
                                time.monotonic(),
                            )
                        )

        users = [threading.Thread(target=load, args=(headers,)) for headers in credentials]
        for user in users:
            user.start()
        try:
            time.sleep(0.5)
            cluster.ctl("-m", "fast", "restart")  # the real thing, start-up window included
            time.sleep(0.5)
            with cluster.not_accepting_connections():
                with pytest.raises(asyncpg.CannotConnectNowError):
                    asyncio.run(_connect(cluster.port))
                window = (time.monotonic(), time.monotonic() + 2)
                time.sleep(2)
            recovered = time.monotonic()
            while not all(
                httpx.get(f"{server.base_url}/users/me", headers=h).status_code == 200
                for h in credentials
            ):
                assert time.monotonic() - recovered < 15, "still failing 15 s after the restart"
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stop.set()
            for user in users:
                user.join(30)

    wrong = [
        o for o in outcomes if o.status not in (200, 503) or (o.status == 503 and not o.retry_after)
    ]
    assert not wrong, wrong[:20]
    refused = [o for o in outcomes if window[0] <= o.at <= window[1]]
    assert refused
    assert all(o.status == 503 for o in refused), refused[:20]
    assert {o.route for o in refused} == {route for _, route, _ in requests}
    assert all(o.status == 200 for o in outcomes[-8:])


async def _connect(port: int) -> None:
    connection = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    await connection.close()


def as_sqlalchemy(error: Exception, *, invalidated: bool = False) -> DBAPIError:
    """What SQLAlchemy's asyncpg dialect raises for `error` on a connection: asyncpg's error
    translated to the dialect's DB-API class (SQLSTATE kept), wrapped in SQLAlchemy's."""
    dbapi = PGDialect_asyncpg.import_dbapi()
    # The dialect's translation, as SQLAlchemy 2 writes it (its table is private).
    table = {
        asyncpg.IntegrityConstraintViolationError: dbapi.IntegrityError,
        asyncpg.SyntaxOrAccessError: dbapi.ProgrammingError,
        asyncpg.PostgresError: dbapi.Error,
        asyncpg.InterfaceError: dbapi.InterfaceError,
        asyncpg.exceptions.InternalClientError: dbapi.InternalError,
    }
    adapted = next((table[cls] for cls in type(error).__mro__ if cls in table), dbapi.Error)(
        f"{type(error)}: {error}"
    )
    adapted.sqlstate = getattr(error, "sqlstate", None)
    adapted.__cause__ = error
    return DBAPIError.instance(
        "SELECT 1", {}, adapted, dbapi.Error, connection_invalidated=invalidated
    )


def in_repository(error: Exception) -> RepositoryError:
    """advanced-alchemy's wrapper around what its repositories' queries raised."""
    wrapped = RepositoryError(f"An exception occurred: {error}")
    wrapped.__cause__ = error
    return wrapped


UNAVAILABLE: dict[str, Callable[[], Exception]] = {
    "starting up": lambda: asyncpg.CannotConnectNowError("the database system is starting up"),
    "shutting down": lambda: asyncpg.CannotConnectNowError("the database system is shutting down"),
    "too many connections": lambda: asyncpg.TooManyConnectionsError(
        "sorry, too many clients already"
    ),
    "admin shutdown": lambda: asyncpg.AdminShutdownError(
        "terminating connection due to administrator command"
    ),
    "crash shutdown": lambda: asyncpg.CrashShutdownError("terminating connection"),
    "lost mid-operation": lambda: asyncpg.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    ),
    "connection failure": lambda: asyncpg.exceptions.ConnectionFailureError("broken"),
    "closed connection": lambda: asyncpg.InterfaceError(
        "cannot perform operation: connection is closed"
    ),
    "stuck reply": lambda: asyncpg.exceptions.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    ),
    "refused": lambda: ConnectionRefusedError(111, "Connect call failed"),
    "refused on every address": lambda: OSError("Multiple exceptions: [Errno 111] ..."),
}
NOT_UNAVAILABLE: dict[str, Callable[[], Exception]] = {
    "unique violation": lambda: asyncpg.UniqueViolationError("duplicate key"),
    "undefined table": lambda: asyncpg.UndefinedTableError('relation "x" does not exist'),
    "bad argument": lambda: asyncpg.DataError("invalid input for $1"),
    "concurrent use": lambda: asyncpg.InterfaceError(
        "cannot perform operation: another operation is in progress"
    ),
    "bug": lambda: ValueError("a bug of ours"),
}


@pytest.fixture(scope="module")
def answer_to() -> Iterator[Callable[[Exception], httpx.Response]]:
    """The app's error mapping's answer to a handler that raised a given error."""
    raising: list[Exception] = []

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise raising[-1]

    app = Litestar([boom], plugins=[ProblemDetailsPlugin(problem_details_config())])
    with TestClient(app) as client:

        def answer(error: Exception) -> httpx.Response:
            raising.append(error)
            return client.get("/boom")

        yield answer


@pytest.mark.parametrize("make", UNAVAILABLE.values(), ids=UNAVAILABLE.keys())
@pytest.mark.parametrize("wrap", ["raw", "sqlalchemy", "invalidated", "repository"])
def test_every_database_unavailable_error_is_a_503_with_retry_after(
    answer_to: Callable[[Exception], httpx.Response], make: Callable[[], Exception], wrap: str
) -> None:
    error = make()
    if not isinstance(error, OSError):  # OSError: before any driver, never wrapped
        if wrap in ("sqlalchemy", "repository"):
            error = as_sqlalchemy(error)
        elif wrap == "invalidated":
            error = as_sqlalchemy(error, invalidated=True)
    if wrap == "repository":
        error = in_repository(error)
    response = answer_to(error)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["detail"] == "the database is unavailable"


@pytest.mark.parametrize("make", NOT_UNAVAILABLE.values(), ids=NOT_UNAVAILABLE.keys())
@pytest.mark.parametrize("wrap", ["raw", "sqlalchemy", "repository"])
def test_a_database_error_that_is_no_outage_stays_a_500(
    answer_to: Callable[[Exception], httpx.Response], make: Callable[[], Exception], wrap: str
) -> None:
    error = make()
    if wrap != "raw" and not isinstance(error, ValueError):
        error = as_sqlalchemy(error)
    if wrap == "repository":
        error = in_repository(error)
    assert answer_to(error).status_code == 500


def test_a_lost_connection_is_unavailable_whatever_its_error(
    answer_to: Callable[[Exception], httpx.Response],
) -> None:
    """SQLAlchemy flags an error on a connection it found closed: whatever asyncpg said."""
    error = as_sqlalchemy(asyncpg.UndefinedTableError("x"), invalidated=True)
    assert answer_to(error).status_code == 503


def test_a_pool_without_free_connections_is_busy(
    answer_to: Callable[[Exception], httpx.Response],
) -> None:
    for error in (PoolTimeoutError("QueuePool limit"), in_repository(PoolTimeoutError("limit"))):
        response = answer_to(error)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
