"""Scaled out on loopback, for real: two inference nodes (`llm-service serve` with the
bundled model, reached through their /v1 with API keys made by `create-api-key`), two
gateway replicas with no model file of their own sharing PostgreSQL and Redis, and
Debian's nginx in front of them with the repository's own config
(deploy/nginx/llm-service.conf). `scripts/ensure-nginx.sh` installs nginx (`make test`
runs it).

The gateways serve three models: `smol`, a pool of both nodes; `solo`, node B alone, which
falls back to `backup`, node A. The last test kills node B."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from bench.local_nginx import nginx_binary, running_nginx

from modules.llm.inference import ChatMessage
from modules.llm.inference.remote import RemoteNode, affinity_key, home
from tests.support import PASSWORD, cli, fresh_minute, generate, promote, start_server, stop

REDIS_DB = 3  # this file's own: flushed at the start, so earlier runs' counters are gone
REQUESTS_PER_MINUTE = 12
LOGINS_PER_MINUTE_PER_ADDRESS = 20
TINY = {"max_tokens": 2, "temperature": 0}


@dataclass
class Cluster:
    nodes: dict[str, str]  # "a"/"b": base URL
    gateways: list[str]
    edge: str  # nginx
    gateway_env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    admin_token: str = ""

    def client(
        self,
        base: str,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        transport: httpx.HTTPTransport | None = None,
    ) -> httpx.Client:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.Client(base_url=base, headers=headers, timeout=120, transport=transport)

    def register(self, base: str | None = None, email: str | None = None) -> tuple[str, str]:
        """A new user, registered and logged in (through nginx unless `base`): its email
        and access token."""
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        with self.client(base or self.edge) as client:
            created = client.post("/auth/register", json={"email": email, "password": PASSWORD})
            assert created.status_code == 201, created.text
            login = client.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            return email, login.json()["access_token"]


def require_nginx() -> None:
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: scripts/ensure-nginx.sh installs it (make test does)")


def inference_node(tmp_path: Path, name: str) -> tuple[dict[str, str], str]:
    """A node's environment and an API key for the gateways' service account."""
    env = {
        "DATA_DIR": str(tmp_path / f"node-{name}"),
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "LLM_MODEL_ALIAS": "smol",
        "LLM_PARALLEL": "2",
        "LLM_CONTEXT_SIZE": "1024",
        "LLM_THREADS": "1",
        "ALLOW_REGISTRATION": "false",
        "RATE_LIMIT_REQUESTS_PER_MINUTE": "0",
        "RATE_LIMIT_TOKENS_PER_MINUTE": "0",
        "RATE_LIMIT_TOKENS_PER_DAY": "0",
        "LLM_MAX_IN_FLIGHT_PER_USER": "0",
        "CACHE_ENABLED": "false",
    }
    cli("create-admin", "--email", "ops@example.com", "--password-stdin", env=env, stdin=PASSWORD)
    key = cli("create-api-key", "--email", "ops@example.com", "--name", "gateways", env=env).strip()
    return env, key


@pytest.fixture(scope="module")
def cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_nginx()  # fail first, and say why, when nginx is missing
    from app.migrations import upgrade_to_head

    tmp_path = tmp_path_factory.mktemp("scale")
    upgrade_to_head(postgres_url)
    redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").flushdb()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    stack = ExitStack()
    try:
        nodes: dict[str, str] = {}
        keys: dict[str, str] = {}
        for name in ("a", "b"):
            env, keys[name] = inference_node(tmp_path, name)
            processes[f"node-{name}"], nodes[name] = start_server(env)
        admin = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        a, b = (f"{nodes[n]}/v1#smol" for n in ("a", "b"))
        gateway_env = {
            "DATA_DIR": str(tmp_path / "gateway"),
            "DATABASE_URL": postgres_url,
            "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
            # No model file here: the models are the nodes'.
            "LLM_MODEL_PATH": str(tmp_path / "no-such-model.gguf"),
            "LLM_MODELS": f"smol={a}|{b},solo={b},backup={a}",
            "LLM_REMOTE_API_KEYS": (
                f"smol={keys['a']}|{keys['b']},solo={keys['b']},backup={keys['a']}"
            ),
            "LLM_FALLBACKS": "solo=backup",
            "TRUSTED_PROXIES": "127.0.0.1",
            "BOOTSTRAP_ADMIN_EMAIL": admin,
            "RATE_LIMIT_REQUESTS_PER_MINUTE": str(REQUESTS_PER_MINUTE),
            "RATE_LIMIT_ROLE_OVERRIDES": "{}",
            "LOGIN_ATTEMPTS_PER_MINUTE_PER_IP": str(LOGINS_PER_MINUTE_PER_ADDRESS),
            "REGISTRATIONS_PER_HOUR_PER_IP": "0",
            "LLM_MAX_IN_FLIGHT_PER_USER": "0",
            "SHUTDOWN_GRACE_SECONDS": "30",
        }
        gateways = []
        for number in (1, 2):
            processes[f"gateway-{number}"], url = start_server(gateway_env)
            gateways.append(url)
        edge = stack.enter_context(running_nginx(gateways, tmp_path))
        found = Cluster(nodes, gateways, edge, gateway_env, processes)
        found.register(gateways[0], admin)  # BOOTSTRAP_ADMIN_EMAIL, while no admin exists
        # The tier's other tests share this database and may have made an admin already.
        promote(postgres_url, admin)
        with found.client(gateways[0]) as client:
            login = client.post("/auth/login", json={"email": admin, "password": PASSWORD})
            found.admin_token = login.json()["access_token"]
        yield found
    finally:
        stack.close()
        for process in processes.values():
            stop(process)


def tokens_of(stream: httpx.Response) -> tuple[list[float], dict[str, object], float]:
    """Arrival times of the token events, the done event's data, and when the stream began."""
    began = time.monotonic()
    arrivals: list[float] = []
    done: dict[str, object] = {}
    event = ""
    for line in stream.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "token":
            arrivals.append(time.monotonic())
        elif line.startswith("data: ") and event == "done":
            done = json.loads(line[6:])
    return arrivals, done, began


def test_a_gateway_starts_with_no_model_file_and_answers_health(cluster: Cluster) -> None:
    with cluster.client(cluster.gateways[0], cluster.admin_token) as client:
        health = client.get("/health/details").json()
    assert {m["name"]: m["backend"] for m in health["models"]} == {
        "smol": "remote",
        "solo": "remote",
        "backup": "remote",
    }
    assert [len(m["nodes"]) for m in health["models"]] == [2, 1, 1]
    assert not Path(cluster.gateway_env["LLM_MODEL_PATH"]).exists()


def test_streams_pass_through_nginx_unbuffered(cluster: Cluster) -> None:
    _, token = cluster.register()
    body = {"prompt": "Count from one to twenty.", "stream": True, "use_cache": False,
            "settings": {"max_tokens": 48, "temperature": 0}}  # fmt: skip
    with (
        cluster.client(cluster.edge, token) as client,
        client.stream("POST", "/llm/generate", json=body) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        arrivals, done, began = tokens_of(stream)
        ended = time.monotonic()
    usage = done["usage"]
    assert isinstance(usage, dict)
    # Many events, not one at the end: the engine hands streamed text over at most every
    # LLM_STREAM_INTERVAL_MS, so an event may carry two or three tokens.
    assert usage["completion_tokens"] > 10
    assert len(arrivals) > usage["completion_tokens"] // 4
    # Unbuffered: the first token arrived long before the stream ended (buffered, every
    # event would arrive together at the end).
    assert arrivals[0] - began < 0.6 * (ended - began)


def test_a_login_anywhere_works_everywhere_and_so_do_logout_revocation_deactivation(
    cluster: Cluster,
) -> None:
    one, two = cluster.gateways
    email, access = cluster.register(one)
    with cluster.client(two, access) as other:
        assert other.get("/users/me").json()["email"] == email
    # Logout on one replica: the session's token stops working on the other at once.
    with cluster.client(one) as client:
        login = client.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    with cluster.client(two, login["access_token"]) as client:
        assert (
            client.post("/auth/logout", json={"refresh_token": login["refresh_token"]}).status_code
            == 204
        )
    with cluster.client(one, login["access_token"]) as client:
        assert client.get("/users/me").status_code == 401
    # An API key made on one, revoked on the other.
    with cluster.client(one, access) as client:
        key = client.post("/auth/api-keys", json={"name": "script"}).json()
    with cluster.client(two, key["key"]) as client:
        assert client.get("/users/me").status_code == 200
    with cluster.client(two, access) as client:
        assert client.delete(f"/auth/api-keys/{key['id']}").status_code == 204
    with cluster.client(one, key["key"]) as client:
        assert client.get("/users/me").status_code == 401
    # Deactivated by an admin on one replica: refused on the other.
    with cluster.client(two, access) as client:
        user_id = client.get("/users/me").json()["id"]
    with cluster.client(one, cluster.admin_token) as client:
        assert client.patch(f"/users/{user_id}", json={"is_active": False}).status_code == 200
    with cluster.client(two, access) as client:
        assert client.get("/users/me").status_code == 401


def test_limits_are_shared_and_count_the_clients_address_behind_nginx(cluster: Cluster) -> None:
    fresh_minute()
    _, token = cluster.register()
    statuses = []
    for number in range(REQUESTS_PER_MINUTE + 1):  # alternating replicas
        with cluster.client(cluster.gateways[number % 2], token) as client:
            statuses.append(generate(client, prompt=f"Say {number}.", settings=TINY).status_code)
    assert statuses == [200] * REQUESTS_PER_MINUTE + [429]

    # Per-address login limits see the client's address (nginx sets X-Forwarded-For, the
    # gateways trust only nginx), not nginx's: one address locked out, another not.
    def login_from(address: str, headers: dict[str, str] | None = None) -> int:
        transport = httpx.HTTPTransport(local_address=address)
        with cluster.client(cluster.edge, transport=transport, headers=headers or {}) as client:
            email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
            return client.post(
                "/auth/login", json={"email": email, "password": "wrong-pass-1"}
            ).status_code

    fresh_minute()  # the attempts below must fall in one window
    attempts = [login_from("127.0.0.2") for _ in range(LOGINS_PER_MINUTE_PER_ADDRESS)]
    assert set(attempts) == {401}
    assert login_from("127.0.0.2") == 429
    # A forged X-Forwarded-For does not get the locked-out address a fresh count...
    assert login_from("127.0.0.2", {"X-Forwarded-For": "203.0.113.9"}) == 429
    # ...while another client behind the same nginx is not locked out.
    assert login_from("127.0.0.3") == 401


def test_a_conversation_continues_on_any_replica(cluster: Cluster) -> None:
    _, token = cluster.register()
    one, two = cluster.gateways
    with cluster.client(one, token) as first:
        started = generate(first, prompt="My name is Ada. Say hello.", settings=TINY)
    assert started.status_code == 200, started.text
    conversation = started.json()["conversation_id"]
    with cluster.client(two, token) as second:
        again = generate(
            second, prompt="What is my name?", settings=TINY, conversation_id=conversation
        )
        assert again.status_code == 200, again.text
        messages = second.get(f"/conversations/{conversation}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "My name is Ada. Say hello."


def completed_on(node: str, model: str = "smol") -> float:
    """Generations a node finished (its own /metrics)."""
    text = httpx.get(f"{node}/metrics", timeout=10).text
    found = re.search(
        rf'^llm_requests_total{{model="{model}",outcome="completed"}} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


def openings(cluster: Cluster, per_node: int = 2) -> dict[str, list[str]]:
    """Opening prompts of conversations that live on each node, by the pool's own hashing."""
    nodes = {
        name: RemoteNode(f"{url}/v1", "smol", None, httpx.Timeout(1))
        for name, url in cluster.nodes.items()
    }
    plan: dict[str, list[str]] = {name: [] for name in nodes}
    for n in range(200):
        prompt = f"Write one line about the number {n}."
        where = home(affinity_key([ChatMessage("user", prompt)]), list(nodes.values()))
        owner = next(name for name, node in nodes.items() if node is where)
        if len(plan[owner]) < per_node:
            plan[owner].append(prompt)
    return plan


def test_turns_spread_over_the_nodes_and_each_conversation_stays_on_its_own(
    cluster: Cluster,
) -> None:
    _, token = cluster.register()
    with cluster.client(cluster.edge, token) as client:
        for owner, prompts in openings(cluster).items():
            other = next(name for name in cluster.nodes if name != owner)
            for prompt in prompts:
                before = {name: completed_on(url) for name, url in cluster.nodes.items()}
                first = generate(client, prompt=prompt, settings=TINY)
                assert first.status_code == 200, first.text
                again = generate(
                    client,
                    prompt="More.",
                    settings=TINY,
                    conversation_id=first.json()["conversation_id"],
                )
                assert again.status_code == 200, again.text
                # Both turns on the conversation's node, whichever gateway nginx chose.
                assert completed_on(cluster.nodes[owner]) == before[owner] + 2
                assert completed_on(cluster.nodes[other]) == before[other]
    admin = {"Authorization": f"Bearer {cluster.admin_token}"}
    shares = [
        {
            node["url"]: node["turns"]
            for node in httpx.get(f"{g}/health/details", headers=admin).json()["models"][0]["nodes"]
        }
        for g in cluster.gateways
    ]
    for url in cluster.nodes.values():
        assert sum(share[f"{url}/v1"] for share in shares) >= 4


def test_sigterm_drains_a_replicas_streams_and_replicas_leave_the_shared_cache_alone(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, token = cluster.register()
    cached = {
        "prompt": "Name a colour.",
        "use_cache": True,
        "settings": {"max_tokens": 4, "temperature": 0},
    }
    with cluster.client(cluster.gateways[0], token) as client:
        assert generate(client, **cached).json()["cache_hit"] is False
    # A third replica starts (no model file: it answers /health at once), streams, drains.
    started = time.monotonic()
    process, third = start_server(cluster.gateway_env)
    print(f"a gateway replica answered /health {time.monotonic() - started:.2f} s after start")
    try:
        body = {"prompt": "Tell me a long story.", "stream": True, "use_cache": False,
                "settings": {"max_tokens": 64, "temperature": 0}}  # fmt: skip
        with (
            cluster.client(third, token) as client,
            client.stream("POST", "/llm/generate", json=body) as stream,
        ):
            lines = stream.iter_lines()
            assert next(line for line in lines if line == "event: token")
            process.send_signal(signal.SIGTERM)  # mid-stream
            rest = list(lines)
        assert "event: done" in rest  # the stream finished, not cut
        # A clean exit: uvicorn, done draining, re-raises the signal it caught.
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        stop(process)
    # Its start and its stop left the shared cache as it was.
    with cluster.client(cluster.gateways[1], token) as client:
        assert generate(client, **cached).json()["cache_hit"] is True


def test_a_killed_node_hands_its_turns_to_the_fallback_and_the_pool(cluster: Cluster) -> None:
    """Last: node B is killed mid-run."""
    _, token = cluster.register()
    answered = []
    with cluster.client(cluster.edge, token) as client:
        for number in range(8):
            if number == 3:
                cluster.processes["node-b"].kill()
                cluster.processes["node-b"].wait()
            answer = generate(client, prompt=f"Say {number}.", settings=TINY, model="solo")
            assert answer.status_code == 200, answer.text
            answered.append(answer.json()["model"])
        assert answered == ["solo"] * 3 + ["backup"] * 5
        # The pool's conversations that lived on B now go to A.
        for prompt in openings(cluster)["b"]:
            before = completed_on(cluster.nodes["a"])
            assert generate(client, prompt=prompt, settings=TINY, model="smol").status_code == 200
            assert completed_on(cluster.nodes["a"]) == before + 1
    fallbacks = 0.0
    for gateway in cluster.gateways:
        text = httpx.get(f"{gateway}/metrics", timeout=10).text
        found = re.search(
            r'^llm_fallbacks_total{fallback="backup",model="solo"} (\S+)$', text, re.M
        )
        fallbacks += float(found.group(1)) if found else 0.0
    assert fallbacks == 5
