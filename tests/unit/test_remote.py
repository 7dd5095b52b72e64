"""The remote backend's pure parts: the control strings sent models must never receive, the
circuit breaker, which node of a pool takes a turn, and what is shown of a server."""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from modules.llm.inference import ChatMessage
from modules.llm.inference.descriptions import redact
from modules.llm.inference.remote import (
    REMOTE_CONTROL_TOKENS,
    CircuitBreaker,
    RemoteNode,
    affinity_key,
    choose,
    home,
    public_url,
)
from modules.llm.inference.remote.node import RemoteError, resolve_model, without_credentials
from modules.llm.inference.remote.routing import IMBALANCE
from modules.sanitizer import Sanitizer


def basic_auth(user: str, password: str) -> str:
    """The Authorization header HTTP basic auth sends (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("token", REMOTE_CONTROL_TOKENS)
def test_every_family_control_string_is_removed(token: str) -> None:
    sanitizer = Sanitizer(control_tokens=REMOTE_CONTROL_TOKENS)
    cleaned = sanitizer.clean(f"before {token} after").text
    assert token not in cleaned
    assert cleaned.startswith("before") and cleaned.endswith("after")  # noqa: PT018


def test_the_families_are_all_there() -> None:
    for family_marker in ("<|im_start|>", "[INST]", "<|eot_id|>", "<start_of_turn>", "<|end|>",
                          "<｜Assistant｜>", "<tool_call>"):  # fmt: skip
        assert family_marker in REMOTE_CONTROL_TOKENS


def test_the_breaker_opens_after_failures_in_a_row_and_closes_on_success() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # the count is of failures in a row
    breaker.failed()
    breaker.failed()
    assert not breaker.is_open
    breaker.failed()
    assert breaker.is_open
    breaker.open_until = 0  # the cooldown has passed: one request may try
    assert not breaker.is_open
    breaker.succeeded()
    assert breaker.failures == 0


def pool(count: int) -> list[RemoteNode]:
    return [
        RemoteNode(f"http://10.0.0.{n}:8080/v1", "m", None, httpx.Timeout(1))
        for n in range(1, count + 1)
    ]


def opening(n: int) -> str:
    return affinity_key([ChatMessage("system", "Be brief."), ChatMessage("user", f"Topic {n}")])


def test_a_conversation_keeps_its_node_whatever_follows_its_opening() -> None:
    nodes = pool(3)
    first = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello")]
    later = [*first, ChatMessage("assistant", "Hi."), ChatMessage("user", "And then?")]
    assert affinity_key(first) == affinity_key(later)
    assert choose(nodes, affinity_key(first)) is choose(nodes, affinity_key(later))
    # Another replica with its own node objects picks the same server: no shared state.
    other = pool(3)
    for n in range(20):
        assert home(opening(n), nodes).name == home(opening(n), other).name


def test_conversations_spread_and_only_a_failed_nodes_move() -> None:
    nodes = pool(3)
    homes = {n: home(opening(n), nodes) for n in range(300)}
    shares = [sum(1 for node in homes.values() if node is each) for each in nodes]
    assert min(shares) > 60  # about 100 each
    down = nodes[1]
    for _ in range(down.breaker.threshold):
        down.breaker.failed()
    for n, before in homes.items():
        after = choose(nodes, opening(n))
        assert after is not down
        if before is not down:
            assert after is before  # the others' conversations keep their caches


def test_a_busy_home_gives_the_turn_to_the_least_busy_node() -> None:
    nodes = pool(2)
    key = opening(1)
    own = home(key, nodes)
    other = next(node for node in nodes if node is not own)
    own.in_flight = IMBALANCE - 1
    assert choose(nodes, key) is own
    own.in_flight = IMBALANCE
    assert choose(nodes, key) is other
    assert choose(nodes, key, exclude=[other]) is own
    assert choose(nodes, key, exclude=nodes) is None


def test_server_names_never_carry_credentials() -> None:
    assert public_url("https://user:secret@gpu-1:8443/v1/#qwen") == "https://gpu-1:8443/v1"
    assert public_url("http://gpu-2/v1") == "http://gpu-2/v1"


def test_redaction_hides_credentials_and_directories_in_any_text() -> None:
    status = (
        "Client error '401 Unauthorized' for url 'http://user:s3cret@gpu-1:8443/v1/models'\n"
        "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401"
    )
    assert redact(status) == (
        "Client error '401 Unauthorized' for url 'http://gpu-1:8443/v1/models'\n"
        "For more information check: https://developer.mozilla.org/en-US/docs/Web/HTTP/Status/401"
    )
    assert redact("Model path does not exist: /srv/private/q.gguf.") == (
        "Model path does not exist: q.gguf."
    )
    # A directory with a space in its name, home-relative paths, paths after `=` or in
    # brackets; a slash that is not a path stays.
    assert redact("from file: /srv/my models/q.gguf") == "from file: q.gguf"
    assert redact("path=~/models/a.gguf (/opt/b.gguf), 3 / 4 and 50/50") == (
        "path=a.gguf (b.gguf), 3 / 4 and 50/50"
    )
    # What the caller knows is in it goes first, whatever it holds.
    assert redact("cannot read /data/x, y/z.gguf", ["/data/x, y/z.gguf"]) == "cannot read z.gguf"
    assert redact("https://u:p@[::1]:8080/v1?key=k#model") == "https://[::1]:8080/v1"


def test_credentials_in_a_url_travel_as_basic_auth_not_in_the_url() -> None:
    node = RemoteNode("https://user:s%40cret@gpu-1:8443/v1/", "m", None, httpx.Timeout(1))
    assert node.base_url == node.name == "https://gpu-1:8443/v1"
    assert node.auth is not None
    request = next(node.auth.auth_flow(httpx.Request("GET", node.base_url)))
    assert request.headers["Authorization"] == basic_auth("user", "s@cret")
    assert without_credentials("http://gpu-2/v1") == ("http://gpu-2/v1", None)


class Refusing(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(401)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


def test_a_server_that_refuses_is_named_without_its_credentials() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://user:s3cret@127.0.0.1:{server.server_port}/v1"
        with pytest.raises(RemoteError) as refused:
            resolve_model(url, None, timeout=5)
    finally:
        server.shutdown()
        server.server_close()
    assert str(refused.value) == f"http://127.0.0.1:{server.server_port}/v1/models answered 401"
    assert Refusing.seen == [basic_auth("user", "s3cret")]  # still sent
