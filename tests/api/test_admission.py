"""Admission, route by route: every route that reaches a model is admitted (with a limit of
one request a minute, the second call is refused on each), and answers carry OpenAI's
rate-limit headers. A refusal for the request limit, sent again at once, is refused before
anything is read. Quotas count the prompt's tokens as well as the answer's."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import openai
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from sqlalchemy import event
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from modules.llm.turns import Admission, EmbeddingService, TurnService
from modules.memory import MemorySearch
from tests.api.test_ratelimit import server, token_for
from tests.support import charged_today, promote

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
# One body per route that reaches a model. A new such route must be added here: the test
# below fails for a route it does not know.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/llm/generate"): {"prompt": "Hi", "settings": {"max_tokens": 2}},
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/completions"): {"prompt": "Once", "max_tokens": 2},
    ("POST", "/llm/validate-model"): {"max_tokens": 2},
    ("POST", "/v1/embeddings"): {"input": ["Hi", "there"]},
    ("POST", "/v1/responses"): {"input": "hi", "max_output_tokens": 2},
    ("GET", "/conversations/search"): {"q": "hi"},  # query parameters
}
# What authentication reads: the user, their login's refresh tokens, API keys.
AUTHENTICATION_TABLES = ("FROM users", "refresh_tokens", "api_keys")
# What reaches a model: a handler that asks for the turn service, the embedding service, an
# admission or the memory's search (which embeds its query).
GATES = (TurnService, EmbeddingService, Admission, MemorySearch)


def routes_reaching_a_model(app: Litestar) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if not isinstance(handler, HTTPRouteHandler):
                continue
            signature = inspect.signature(handler.fn)
            annotations = [str(p.annotation) for p in signature.parameters.values()]
            if any(gate.__name__ in text for gate in GATES for text in annotations):
                found |= {(method, route.path) for method in handler.http_methods}
    return found


def test_every_route_that_reaches_a_model_is_admitted(tmp_path: Any) -> None:
    with server(tmp_path, rate_limit_requests_per_minute=1, rate_limit_role_overrides={}) as client:
        routes = routes_reaching_a_model(client.app)  # type: ignore[attr-defined]
        assert routes == set(BODIES), "a route that reaches a model has no body in BODIES"
        for (method, path), body in BODIES.items():
            email = f"admitted-{path.replace('/', '-')}@example.com"
            token_for(client, email)
            promote(client.database_url, email)  # type: ignore[attr-defined]
            headers = {"Authorization": f"Bearer {token_for(client, email)}"}
            sent = {"params": body} if method == "GET" else {"json": body}
            first = client.request(method, path, headers=headers, **sent)
            assert first.status_code == 200, (path, first.text)
            assert first.headers["x-ratelimit-limit-requests"] == "1"
            assert first.headers["x-ratelimit-remaining-requests"] == "0"
            second = client.request(method, path, headers=headers, **sent)
            assert second.status_code == 429, (path, second.text)
            assert second.headers["x-ratelimit-remaining-requests"] == "0"
            assert "retry-after" in second.headers
            # Sent again at once: the same refusal, remembered, before anything is read.
            with counting_statements() as statements:
                third = client.request(method, path, headers=headers, **sent)
            assert third.status_code == 429, (path, third.text)
            # Authentication read nothing (background work, the catalog's sync or the first
            # turn's embedding, may write meanwhile).
            reads = [s for s in statements if any(t in s for t in AUTHENTICATION_TABLES)]
            assert reads == [], (path, reads)
            assert third.json().keys() == second.json().keys()
            for name in ("retry-after", "x-ratelimit-limit-requests"):
                assert third.headers[name] == second.headers[name], (path, name)
            assert third.headers["x-ratelimit-remaining-requests"] == "0"
            # The first repeat is logged; the later ones are counted, not logged one by one.
            with capture_logs() as logs:
                fourth = client.request(method, path, headers=headers, **sent)
            assert fourth.status_code == 429
            assert [line for line in logs if line["event"] == "request"] == [], path


@contextlib.contextmanager
def counting_statements() -> Iterator[list[str]]:
    """The SQL statements any engine of this process runs meanwhile."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_answers_carry_openai_rate_limit_headers(tmp_path: Any) -> None:
    with server(
        tmp_path, rate_limit_requests_per_minute=10, rate_limit_tokens_per_minute=1000
    ) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        whole = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert whole.status_code == 200
        assert whole.headers["x-ratelimit-limit-requests"] == "10"
        assert whole.headers["x-ratelimit-remaining-requests"] == "9"
        assert whole.headers["x-ratelimit-limit-tokens"] == "1000"
        remaining = int(whole.headers["x-ratelimit-remaining-tokens"])
        assert 0 < remaining <= 1000 - 2  # at least max_tokens set aside
        assert whole.headers["x-ratelimit-reset-requests"].endswith("s")
        assert whole.headers["x-ratelimit-reset-tokens"].endswith("s")
        # A stream starts with them too.
        with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        ) as streamed:
            assert streamed.headers["x-ratelimit-remaining-requests"] == "8"
            streamed.read()
        # Routes that reach no model carry none.
        me = client.get("/users/me", headers=headers)
        assert "x-ratelimit-limit-requests" not in me.headers


def test_openai_client_reads_the_headers(tmp_path: Any) -> None:
    with server(tmp_path, rate_limit_requests_per_minute=5) as client:
        sdk = openai.OpenAI(
            base_url=f"{client.base_url}/v1", api_key=token_for(client), max_retries=0
        )
        model = sdk.models.list().data[0].id
        raw = sdk.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert raw.headers["x-ratelimit-remaining-requests"] == "4"


def test_prompt_tokens_count_toward_the_token_quota(tmp_path: Any) -> None:
    with server(
        tmp_path,
        rate_limit_tokens_per_minute=100,
        rate_limit_cached_token_weight=1.0,
    ) as client:
        token = token_for(client)
        headers = {"Authorization": f"Bearer {token}"}
        long_prompt = " ".join(["word"] * 150)  # 150 prompt tokens on the fake backend
        body = {"prompt": long_prompt, "settings": {"max_tokens": 2}, "use_cache": False}
        first = client.post("/llm/generate", json=body, headers=headers)
        assert first.status_code == 200
        usage = first.json()["usage"]
        me = client.get("/users/me", headers=headers).json()["id"]
        charged = charged_today(client.app, me)  # type: ignore[attr-defined]
        assert charged == usage["prompt_tokens"] + usage["completion_tokens"]
        assert usage["prompt_tokens"] >= 150
        # The prompt alone used the minute's budget up: the next request is refused.
        refused = client.post("/llm/generate", json=body, headers=headers)
        assert refused.status_code == 429
        assert "tokens per minute" in refused.json()["detail"]
        assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_prompt_tokens_can_weigh_less(tmp_path: Any) -> None:
    with server(tmp_path, rate_limit_prompt_token_weight=0.0) as client:
        token = token_for(client)
        headers = {"Authorization": f"Bearer {token}"}
        body = {"prompt": "many words " * 50, "settings": {"max_tokens": 3}, "use_cache": False}
        answer: httpx.Response = client.post("/llm/generate", json=body, headers=headers)
        me = client.get("/users/me", headers=headers).json()["id"]
        charged = charged_today(client.app, me)  # type: ignore[attr-defined]
        assert charged == answer.json()["usage"]["completion_tokens"]
