"""`llm-service serve` on the embedded defaults in a temporary directory, for the benchmarks
that measure through HTTP: start it, wait for /health, log a user in."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Service:
    base_url: str
    token: str
    # What `llm-service` commands need to reach the same database (create-admin).
    env: dict[str, str]
    workdir: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def login(self, email: str, password: str, *, admin: bool = False) -> dict[str, str]:
        """Headers for another user, registered here (or made an admin by the CLI)."""
        if admin:
            subprocess.run(
                [str(BIN / "llm-service"), "create-admin", "--email", email, "--password-stdin"],
                env=self.env,
                cwd=self.workdir,
                input=password + "\n",
                text=True,
                check=True,
                capture_output=True,
            )
        token = access_token(self.base_url, email, password, register=not admin)
        return {"Authorization": f"Bearer {token}"}


def access_token(base_url: str, email: str, password: str, *, register: bool) -> str:
    """A user's access token, registering them first when asked."""
    credentials = {"email": email, "password": password}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        if register:
            client.post("/auth/register", json=credentials)
        token: str = client.post("/auth/login", json=credentials).json()["access_token"]
    return token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_service(**settings: str) -> Iterator[Service]:
    """The service with these settings (environment names) on top of the defaults."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as workdir:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LLM_", "JWT_", "DATABASE_", "CACHE_", "REDIS_", "RATE_"))
        }
        env |= {
            "DATA_DIR": workdir,
            "JWT_SECRET": secrets.token_urlsafe(36),
            "PORT": str(port),
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
            **settings,
        }
        server = subprocess.Popen(
            [str(BIN / "llm-service"), "serve"],
            env=env,
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=base, timeout=120) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the service did not start")
                    time.sleep(0.2)
            token = access_token(base, "bench@example.com", "bench-password-1", register=True)
            yield Service(base, token, env, workdir)
        finally:
            server.terminate()
            server.wait(20)
