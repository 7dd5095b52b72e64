"""Growing past one machine, in process: a pool of remote nodes under one alias, fallback
models, and the response cache per model. Nodes are this suite's own fake-backed services,
reached through their /v1 with an API key (tests/model/test_scale.py does it all with real
processes, the real model and nginx)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from app import create_app
from app.migrations import upgrade_to_head
from modules.llm.inference import ChatMessage
from modules.llm.inference.remote import RemoteNode, affinity_key, home
from tests.fakes import FakeBackend, FakeBackends
from tests.support import (
    CHEAP_HASHER,
    Api,
    RunningServer,
    fake_app,
    free_port,
    generate,
    make_settings,
)

SHORT = {"max_tokens": 3}


@contextmanager
def serving(tmp_path: Path, backends: FakeBackends | None = None, **settings: Any) -> Iterator[Api]:
    """A service on its own SQLite file: fake-backed with `backends`, else with the real
    backend factory (remote models)."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
    upgrade_to_head(database_url)
    config = make_settings(database_url, tmp_path, **settings)
    app = (
        fake_app(config, backends)
        if backends is not None
        else create_app(config, password_hasher=CHEAP_HASHER)
    )
    with RunningServer(app) as server:
        yield Api(base_url=server.base_url, app=app, database_url=database_url)


@contextmanager
def fake_node(tmp_path: Path) -> Iterator[tuple[str, str, FakeBackend]]:
    """An inference node: its /v1 URL with its model, an API key, and its fake model."""
    backends = FakeBackends(parallel=8, queue_size=4)
    with serving(tmp_path, backends) as node, node.client(node.user_token()) as client:
        key = client.post("/auth/api-keys", json={"name": "gateway"}).json()["key"]
        alias = node.registry.default_alias
        yield f"{node.base_url}/v1#{alias}", key, backends.made[alias]


def gateway_client(gateway: Api) -> httpx.Client:
    """An admin's client: it also reads the nodes in /health/details."""
    return gateway.client(gateway.admin_token())


def metric(text: str, name: str, **labels: str) -> float:
    # prometheus_client writes labels in name order.
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(selector)}\}} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{{{selector}}} not in /metrics"
    return float(found.group(1))


def homed_prompts(urls: list[str], per_node: int = 2) -> dict[str, list[str]]:
    """Opening prompts whose home is each node, found with the pool's own hashing (a
    gateway with no default system prompt sends just the user's message)."""
    nodes = [RemoteNode(url.partition("#")[0], "m", None, httpx.Timeout(1)) for url in urls]
    wanted: dict[str, list[str]] = {node.name: [] for node in nodes}
    for n in range(200):
        prompt = f"Tell me about topic {n}"
        owner = wanted[home(affinity_key([ChatMessage("user", prompt)]), nodes).name]
        if len(owner) < per_node:
            owner.append(prompt)
    assert all(len(prompts) == per_node for prompts in wanted.values())
    return wanted


def test_a_pool_keeps_each_conversation_on_its_home_node(tmp_path: Path) -> None:
    with ExitStack() as stack:
        url_a, key_a, node_a = stack.enter_context(fake_node(tmp_path))
        url_b, key_b, node_b = stack.enter_context(fake_node(tmp_path))
        gateway = stack.enter_context(
            serving(
                tmp_path,
                llm_models=f"pool={url_a}|{url_b}",
                llm_remote_api_keys=f"pool={key_a}|{key_b}",  # one key per node, in order
            )
        )
        with gateway_client(gateway) as client:
            served_by = {url_a.partition("#")[0]: node_a, url_b.partition("#")[0]: node_b}
            for name, prompts in homed_prompts([url_a, url_b]).items():
                node = served_by[name]
                for prompt in prompts:
                    before = len(node.prompts)
                    first = generate(client, prompt=prompt, settings=SHORT)
                    assert first.status_code == 200, first.text
                    assert first.json()["model"] == "pool"
                    again = generate(
                        client,
                        prompt="And then?",
                        settings=SHORT,
                        conversation_id=first.json()["conversation_id"],
                    )
                    assert again.status_code == 200, again.text
                    # Both turns went to the conversation's home node.
                    assert len(node.prompts) == before + 2
                    assert node.prompts[-1].messages[0].content == prompt
            health = client.get("/health/details").json()["models"][0]
            assert [n["turns"] for n in health["nodes"]] == [4, 4]
            metrics = client.get("/metrics").text
            for name in served_by:
                assert metric(metrics, "llm_remote_node_turns_total", model="pool", node=name) == 4
                assert metric(metrics, "llm_remote_node_up", model="pool", node=name) == 1


def test_a_dead_node_hands_its_conversations_to_the_others(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1#gone"  # named models: no contact at start
    with (
        fake_node(tmp_path) as (url_a, key_a, node_a),
        serving(
            tmp_path, llm_models=f"pool={url_a}|{dead}", llm_remote_api_keys=f"pool={key_a}|x"
        ) as gateway,
        gateway_client(gateway) as client,
    ):
        for prompt in homed_prompts([url_a, dead], per_node=3)[dead.partition("#")[0]]:
            before = len(node_a.prompts)
            answer = generate(client, prompt=prompt, settings=SHORT)
            assert answer.status_code == 200, answer.text
            assert len(node_a.prompts) == before + 1  # the dead node's turn went to A
        nodes = client.get("/health/details").json()["models"][0]["nodes"]
        assert [node["breaker"] for node in nodes] == ["closed", "open"]
        metrics = client.get("/metrics").text
        assert metric(metrics, "llm_remote_node_up", model="pool", node=nodes[1]["url"]) == 0


def test_unavailable_models_hand_turns_to_their_fallback(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1#gone"
    with (
        fake_node(tmp_path) as (url, key, node),
        serving(
            tmp_path,
            llm_models=f"primary={dead},spare={url}",
            llm_remote_api_keys=f"spare={key}",
            llm_fallbacks="primary=spare",
        ) as gateway,
        gateway_client(gateway) as client,
    ):
        answer = generate(client, prompt="Hello", settings=SHORT, model="primary")
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "spare"  # the model that answered
        assert len(node.prompts) == 1
        chat = {"model": "primary", "messages": [{"role": "user", "content": "Hi"}]}
        openai = client.post("/v1/chat/completions", json={**chat, "max_tokens": 3})
        assert openai.status_code == 200, openai.text
        assert openai.json()["model"] == "spare"
        with client.stream(
            "POST", "/llm/generate", json={"prompt": "Stream", "model": "primary", "stream": True}
        ) as stream:
            text = "".join(stream.iter_text())
        assert '"model":"spare"' in text.replace(" ", "")
        metrics = client.get("/metrics").text
        assert metric(metrics, "llm_fallbacks_total", model="primary", fallback="spare") == 3
        # Asked for directly, the fallback answers as itself; unknown names stay a 404.
        assert (
            generate(client, prompt="Hi", settings=SHORT, model="spare").json()["model"] == "spare"
        )
        assert generate(client, prompt="Hi", settings=SHORT, model="nope").status_code == 404


def test_a_full_queue_or_an_unloaded_model_falls_back_and_a_reload_clears_only_its_cache(
    tmp_path: Path,
) -> None:
    backends = FakeBackends(parallel=1, queue_size=0, token_delay=0.05, answer_tokens=3)
    with (
        serving(
            tmp_path,
            backends,
            llm_models="main=/models/main.gguf,spare=/models/spare.gguf",
            llm_fallbacks="main=spare",
        ) as service,
        service.client(service.admin_token()) as client,
    ):
        # main's one slot is busy and it has no queue: the next turn goes to spare.
        long = {"prompt": "Long", "model": "main", "stream": True}
        with client.stream("POST", "/llm/generate", json=long) as stream:
            next(stream.iter_lines())  # its first token came: it holds the slot
            overflow = generate(client, prompt="Now", settings=SHORT, model="main")
            assert overflow.status_code == 200, overflow.text
            assert overflow.json()["model"] == "spare"
        # main unloaded: spare answers.
        assert client.post("/llm/models/main/unload").status_code == 200
        assert (
            generate(client, prompt="Where?", settings=SHORT, model="main").json()["model"]
            == "spare"
        )
        assert client.post("/llm/models/main/load").status_code == 200
        # An operator reloads spare: spare's cached answers go, main's stay.
        for model in ("main", "spare"):
            cached = generate(
                client, prompt=f"Cache {model}", settings=SHORT, model=model, use_cache=True
            )
            assert cached.json()["model"] == model
        assert client.post("/llm/models/spare/unload").status_code == 200
        assert client.post("/llm/models/spare/load").status_code == 200
        main = generate(
            client, prompt="Cache main", settings=SHORT, model="main", use_cache=True
        ).json()
        spare = generate(
            client, prompt="Cache spare", settings=SHORT, model="spare", use_cache=True
        ).json()
        assert (main["cache_hit"], spare["cache_hit"]) == (True, False)
