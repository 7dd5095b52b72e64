"""Helpers of the API tests: the real app on a real port (uvicorn) and users against it."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

import httpx
import uvicorn
from litestar import Litestar
from sqlalchemy import Executable, text
from sqlalchemy.ext.asyncio import create_async_engine

from app import create_app
from modules.auth import PasswordHasher
from modules.config import Settings
from modules.llm.inference import ModelRegistry
from modules.ratelimit.service import DAY, day_tokens_key, window_at
from tests.fakes import FakeBackends

JWT_SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct-horse-42"
# A chat tool in OpenAI's shape, as the model-tier tests offer it.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test app; generous limits, which the tests of limits override."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp_path,
        "jwt_secret": JWT_SECRET,
        "llm_context_size": 2048,
        "llm_queue_size": 4,
        "llm_parallel": 8,
        "llm_request_timeout_seconds": 60,
        "llm_max_tokens": 512,
        "llm_default_max_tokens": 32,
        # The suite sends far more than a person would; test_ratelimit.py turns limits on.
        "rate_limit_requests_per_minute": 0,
        "rate_limit_tokens_per_minute": 0,
        "rate_limit_tokens_per_day": 0,
        "rate_limit_role_overrides": {},
        "login_attempts_per_minute_per_ip": 0,
        "registrations_per_hour_per_ip": 0,
        "llm_max_in_flight_per_user": 0,
    }
    values.update(overrides)
    return Settings(**values)


class RunningServer:
    """uvicorn serving an app in a thread; start-up errors are raised, never swallowed."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the app failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the app did not start within 60 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> str:
    """Run `llm-service ...` to completion; its standard output."""
    command = [str(Path(sys.executable).with_name("llm-service")), *args]
    done = subprocess.run(
        command, env={**os.environ, **env}, input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def start_server(
    env: dict[str, str], output: IO[bytes] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`llm-service serve` in its own process, as an operator runs it, once it answers
    /health: the process and its URL."""
    port = free_port()
    full_env = {
        **os.environ,
        "PORT": str(port),
        "JWT_SECRET": JWT_SECRET,
        "LLM_PARALLEL": "1",
        "LLM_CONTEXT_SIZE": "512",
        **env,
    }
    command = [str(Path(sys.executable).with_name("llm-service")), "serve"]
    sink = output if output is not None else subprocess.DEVNULL
    process = subprocess.Popen(command, env=full_env, stdout=sink, stderr=sink)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError("the server exited")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise AssertionError("the server did not start")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def cli_server(env: dict[str, str], output: IO[bytes] | None = None) -> Iterator[str]:
    """`llm-service serve` in its own process, as an operator runs it; yields its URL."""
    process, base_url = start_server(env, output)
    try:
        yield base_url
    finally:
        stop(process)


NO_LIMITS = {
    "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
    "RATE_LIMIT_TOKENS_PER_MINUTE": "0",
    "RATE_LIMIT_TOKENS_PER_DAY": "0",
    "CACHE_ENABLED": "false",
}


@contextmanager
def node_and_gateways(
    tmp_path: Path, *, database_url: str = "", gateways: int = 1
) -> Iterator[list[str]]:
    """An `llm-service serve` node with the bundled model as `smol` (on its own SQLite), and
    `gateways` replicas with no model file (on `database_url`, SQLite when empty) whose
    `smol` is that node, reached with an API key made by `create-api-key`: their URLs."""
    node_env = {
        "DATA_DIR": str(tmp_path / "node"),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "LLM_MODEL_ALIAS": "smol",
        "LLM_PARALLEL": "2",
        "LLM_CONTEXT_SIZE": "2048",
        **NO_LIMITS,
    }
    ops = ("--email", "ops@example.com")
    cli("create-admin", *ops, "--password-stdin", env=node_env, stdin=PASSWORD)
    key = cli("create-api-key", *ops, "--name", "gateways", env=node_env).strip()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        node, node_url = start_server(node_env)
        processes.append(node)
        gateway_env = {
            "DATA_DIR": str(tmp_path / "gateway"),
            "DATABASE_URL": database_url,
            "REDIS_URL": "",
            "LLM_MODEL_PATH": str(tmp_path / "no-such-model.gguf"),
            "LLM_MODELS": f"smol={node_url}/v1#smol",
            "LLM_REMOTE_API_KEYS": f"smol={key}",
            **NO_LIMITS,
        }
        urls = []
        for _ in range(gateways):
            server, url = start_server(gateway_env)
            processes.append(server)
            urls.append(url)
        yield urls
    finally:
        for process in processes:
            stop(process)


def token_on(base: str) -> str:
    """A new user's access token on the server at `base`."""
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    with httpx.Client(base_url=base, timeout=60) as client:
        registered = client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
        token: str = login.json()["access_token"]
        return token


@dataclass
class Api:
    """A running server plus helpers to act as users against it."""

    base_url: str
    app: Litestar
    database_url: str

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=120, **kwargs)

    @property
    def registry(self) -> ModelRegistry:
        registry = self.app.state.llm.registry
        assert registry is not None
        return registry

    def register(self, email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        with self.client() as client:
            response = client.post("/auth/register", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        return {"email": email, "password": password, **response.json()}

    def login(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        with self.client() as client:
            response = client.post("/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens

    def user_token(self) -> str:
        user = self.register()
        token: str = self.login(user["email"])["access_token"]
        return token

    def make_admin(self, email: str) -> None:
        promote(self.database_url, email)

    def admin_token(self) -> str:
        user = self.register()
        self.make_admin(user["email"])
        token: str = self.login(user["email"])["access_token"]
        return token

    def sql(self, statement: str | Executable, **params: Any) -> list[Any]:
        """Run SQL (text, or a SQLAlchemy statement whose column types convert values for
        either dialect) on the test database, from the test's thread and event loop."""
        executable = text(statement) if isinstance(statement, str) else statement

        async def run() -> list[Any]:
            engine = create_async_engine(self.database_url)
            try:
                async with engine.begin() as connection:
                    result = await connection.execute(executable, params)
                    return list(result.fetchall()) if result.returns_rows else []
            finally:
                await engine.dispose()

        return asyncio.run(run())


def generate(via: Api | httpx.Client, token: str | None = None, /, **body: Any) -> httpx.Response:
    """POST /llm/generate with `body` as its JSON: through a client of its own on an `Api`,
    or through `via` when it is a client already (its own headers and base URL), with
    `token` as the bearer when one is given. The response cache is off unless the body
    turns it on (`use_cache=True`): most tests are about the model, and a hit would hide it."""
    body.setdefault("use_cache", False)
    if isinstance(via, httpx.Client):
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return via.post("/llm/generate", json=body, headers=headers)
    with via.client(token) as client:
        return client.post("/llm/generate", json=body)


def ok(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 200 response; any other status fails the test, showing the body."""
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def promote(database_url: str, email: str) -> None:
    """Make a user an admin, straight in the database (as `create-admin` would)."""

    async def run() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE users SET role = 'admin' WHERE email = :email"), {"email": email}
                )
        finally:
            await engine.dispose()

    asyncio.run(run())


# The fast tier's argon2 parameters: hashing is not what its tests are about, and at the
# OWASP parameters a user's register and login cost ~45 ms. tests/unit/test_auth_service.py
# checks the real parameters, the timing of unknown emails included.
CHEAP_HASHER = PasswordHasher(memory_kib=1024, rounds=1)


def fake_app(
    settings: Settings, backends: FakeBackends | None = None, **fake_options: Any
) -> Litestar:
    """The real app on a fake inference backend and a cheap password hasher (fast tier)."""
    return create_app(
        settings,
        backend_factory=backends or FakeBackends(**fake_options),
        password_hasher=CHEAP_HASHER,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 20) -> bool:
    """Poll until `predicate()` holds; False (never a hang) when `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def fresh_minute(margin: float = 15) -> None:
    """Fixed windows: start early in a minute (`margin` seconds or more before its end) so
    the requests that follow do not straddle two."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.5)


def charged_today(app: Litestar, user_id: str) -> int:
    """Completion tokens charged to a user today (the in-memory rate limiter's counter)."""
    limiter = app.state.llm.limiter
    day, _ = window_at(limiter.clock(), DAY)

    async def read() -> int:
        value: int = await limiter.counters.get(day_tokens_key(user_id, day))
        return value

    return asyncio.run(read())


@dataclass
class RecordedStream:
    """One streamed answer as its client saw it: (event name, data) pairs, with the time
    each arrived, and how the body ended."""

    events: list[tuple[str | None, str, float]] = field(default_factory=list)
    ended_cleanly: bool = False
    error: str | None = None

    def read(self, client: httpx.Client, path: str, body: dict[str, Any]) -> None:
        try:
            with client.stream("POST", path, json=body) as response:
                if response.status_code != 200:
                    self.error = f"{response.status_code}: {response.read()!r}"
                    return
                name: str | None = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, line[6:], time.monotonic()))
                        name = None
            self.ended_cleanly = True  # the chunked body's end arrived: no protocol error
        except httpx.HTTPError as exc:
            self.error = repr(exc)


class FileServer:
    """A loopback HTTP/1.1 server of the files under `root`, with `Range` support (206, 416),
    as a model hub serves a download, that misbehaves when told to: a connection cut or
    stalled mid-body, a Range ignored, a redirect, an error status, a slow link. It notes
    each request's path and Range header."""

    def __init__(self, root: Path, *, chunk_delay: float = 0.0) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        # Set: the next request without a Range gets these bytes, then its connection is cut.
        self.cut_at: int | None = None
        # Set: the next request gets these bytes, then waits for `release` before the rest.
        self.stall_at: int | None = None
        self.release = threading.Event()
        # Set: requests with a Range (resumes) wait for it before they are answered.
        self.resume_gate: threading.Event | None = None
        self.ignore_range = False  # every answer is the whole file, 200
        self.redirects: dict[str, str] = {}  # path -> Location, answered 302
        self.statuses: dict[str, int] = {}  # path -> an error status
        # A slow link when set: a megabyte every `chunk_delay` seconds.
        self.chunk_delay = chunk_delay
        self.httpd = _FileHTTPServer(("127.0.0.1", 0), _FileHandler)
        self.httpd.files = self
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str = "/model.gguf") -> str:
        return self.base_url + path

    def ranges(self) -> list[str | None]:
        return [range_ for _, range_ in self.requests]

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        if self.resume_gate is not None:
            self.resume_gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


class _FileHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    files: FileServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that goes away mid-body is part of the tests


class _FileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:
        pass

    def do_GET(self) -> None:
        files = cast(_FileHTTPServer, self.server).files
        path = urlsplit(self.path).path
        wanted = self.headers.get("Range")
        files.requests.append((path, wanted))
        file = files.root / path.lstrip("/")
        if path in files.statuses:
            self.send_error(files.statuses[path])
        elif path in files.redirects:
            self.send_response(302)
            self.send_header("Location", files.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif not file.is_file():
            self.send_error(404)
        else:
            if wanted and files.resume_gate is not None:
                files.resume_gate.wait(60)
            self._send_file(files, file.read_bytes(), None if files.ignore_range else wanted)

    def _send_file(self, files: FileServer, data: bytes, wanted: str | None) -> None:
        start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
        if start and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        cut, stall = None, files.stall_at
        if not wanted and files.cut_at is not None:
            cut, files.cut_at = files.cut_at, None
        files.stall_at = None
        if cut is not None:
            self.wfile.write(body[:cut])
            self.connection.shutdown(socket.SHUT_RDWR)  # the rest never comes
            self.close_connection = True
            return
        if stall is not None:
            self.wfile.write(body[:stall])
            files.release.wait(30)
            body = body[stall:]
        for offset in range(0, len(body), 1 << 20):
            self.wfile.write(body[offset : offset + (1 << 20)])
            time.sleep(files.chunk_delay)
