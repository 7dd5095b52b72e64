"""/v1/embeddings on the fake backend, through the official openai SDK: both encodings,
the kinds of input, the limits, sanitization, admission and charging, and errors in
OpenAI's shape that name the input at fault."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from modules.llm.inference import Capabilities
from tests.api.conftest import FakeApi
from tests.api.test_ratelimit import server, token_for
from tests.fakes import EMBEDDING_DIMENSIONS, fake_tokenize, fake_vector
from tests.support import Api, charged_today

MODEL = "SmolLM2-135M-Instruct.Q4_1"


def client_for(api: Api, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=token, max_retries=0)


def bad_request(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as raised:
        call()
    body = raised.value.body
    assert isinstance(body, dict)
    return body


def test_floats_and_the_sdk_default_base64_agree(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    # The SDK asks for base64 when no format is given, and decodes it itself.
    default = client.embeddings.create(model=MODEL, input="the sea is calm")
    assert api.backend.embedded[-1].options.encoding_format == "base64"
    floats = client.embeddings.create(model=MODEL, input="the sea is calm", encoding_format="float")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-7)
    vector = np.array(floats.data[0].embedding)
    assert vector.shape == (EMBEDDING_DIMENSIONS,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)
    assert floats.model == MODEL
    assert floats.object == "list"
    assert floats.data[0].object == "embedding"
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == 4


def test_base64_is_little_endian_float32(api: FakeApi, user_token: str) -> None:
    with api.client(user_token) as http:
        body = {"model": MODEL, "input": "calm", "encoding_format": "base64"}
        answer = http.post("/v1/embeddings", json=body).json()
    raw = base64.b64decode(answer["data"][0]["embedding"])
    assert len(raw) == 4 * EMBEDDING_DIMENSIONS
    decoded = np.frombuffer(raw, dtype="<f4")
    expected = fake_vector(fake_tokenize("calm", False))
    assert np.array_equal(decoded, expected.astype("<f4"))


def test_a_list_of_texts_keeps_its_order(api: FakeApi, user_token: str) -> None:
    texts = ["first one", "second", "the third input here"]
    answer = client_for(api, user_token).embeddings.create(
        model=MODEL, input=texts, encoding_format="float"
    )
    assert [item.index for item in answer.data] == [0, 1, 2]
    for text, item in zip(texts, answer.data, strict=True):
        assert item.embedding == pytest.approx(fake_vector(fake_tokenize(text, False)).tolist())
    assert answer.usage.prompt_tokens == 2 + 1 + 4


def test_token_arrays_one_or_many(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    one = client.embeddings.create(model=MODEL, input=[5, 6, 7], encoding_format="float")
    assert len(one.data) == 1
    assert one.usage.prompt_tokens == 3
    assert one.data[0].embedding == pytest.approx(fake_vector((5, 6, 7)).tolist())
    many = client.embeddings.create(model=MODEL, input=[[5, 6, 7], [8]], encoding_format="float")
    assert len(many.data) == 2
    assert many.data[0].embedding == one.data[0].embedding
    assert many.usage.prompt_tokens == 4
    # A token the model does not have is named by its input.
    body = bad_request(lambda: client.embeddings.create(model=MODEL, input=[[1], [-3]]))
    assert body["param"] == "input[1]"
    assert "vocabulary" in body["message"]


def test_mixed_inputs_are_refused(api: FakeApi, user_token: str) -> None:
    with api.client(user_token) as http:
        mixed = http.post("/v1/embeddings", json={"model": MODEL, "input": ["a", [1, 2]]})
        assert mixed.status_code == 400
        assert mixed.json()["error"]["param"] == "input"
        loose = http.post("/v1/embeddings", json={"model": MODEL, "input": [[1, 2], 3]})
        assert loose.status_code == 400
        assert loose.json()["error"]["param"] == "input[1]"
        empty = http.post("/v1/embeddings", json={"model": MODEL, "input": []})
        assert empty.status_code == 400
        assert empty.json()["error"]["param"] == "input"
        unknown = http.post("/v1/embeddings", json={"model": MODEL, "input": "a", "extra": 1})
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "unknown_parameter"


def test_inputs_are_sanitized_and_a_refused_one_is_named(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    client.embeddings.create(model=MODEL, input=["fine", "calm <b>sea</b> <|im_start|>system"])
    sent = api.backend.embedded[-1].inputs
    assert sent[0] == "fine"
    assert isinstance(sent[1], str)
    assert "<b>" not in sent[1]
    assert "<|im_start|>" not in sent[1]
    # An input with nothing left after cleaning is a 400 naming it.
    body = bad_request(lambda: client.embeddings.create(model=MODEL, input=["ok", "<b></b>"]))
    assert body["param"] == "input[1]"


def test_an_input_longer_than_the_context_is_a_400_naming_it(api: FakeApi, user_token: str) -> None:
    too_long = " ".join(["word"] * (api.backend.context_size + 1))
    body = bad_request(
        lambda: client_for(api, user_token).embeddings.create(
            model=MODEL, input=["short", "also short", too_long]
        )
    )
    assert body["param"] == "input[2]"
    assert "tokens long" in body["message"]
    assert body["type"] == "invalid_request_error"


def test_unknown_model_is_a_404_in_openai_shape(api: FakeApi, user_token: str) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client_for(api, user_token).embeddings.create(model="nope", input="x")
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "not_found_error"
    assert "nope" in body["message"]


def test_a_model_without_embeddings_is_a_400_naming_the_capability(
    api: FakeApi, user_token: str
) -> None:
    backend = api.backend
    backend.capabilities = Capabilities()
    try:
        body = bad_request(
            lambda: client_for(api, user_token).embeddings.create(model=MODEL, input="x")
        )
    finally:
        del backend.capabilities  # back to the class's
    assert body["param"] == "model"
    assert "does not support embeddings" in body["message"]


def test_dimensions_other_than_the_models_own_are_refused(api: FakeApi, user_token: str) -> None:
    client = client_for(api, user_token)
    own = client.embeddings.create(model=MODEL, input="x", dimensions=EMBEDDING_DIMENSIONS)
    assert len(own.data[0].embedding) == EMBEDDING_DIMENSIONS
    body = bad_request(lambda: client.embeddings.create(model=MODEL, input="x", dimensions=8))
    assert body["param"] == "dimensions"


def test_models_say_which_embed(api: FakeApi, user_token: str) -> None:
    (card,) = client_for(api, user_token).models.list().data
    assert "embeddings" in (card.model_extra or {})["capabilities"]
    with api.client(user_token) as http:
        (listed,) = http.get("/llm/models").json()["models"]
    assert listed["capabilities"]["embeddings"] is True


def test_limits_on_inputs_and_tokens(tmp_path: Path) -> None:
    with server(tmp_path, llm_embedding_max_inputs=3, llm_embedding_max_tokens=10) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        many = client.post("/v1/embeddings", json={"input": ["a"] * 4}, headers=headers)
        assert many.status_code == 400
        assert many.json()["error"]["param"] == "input"
        assert "LLM_EMBEDDING_MAX_INPUTS" in many.json()["error"]["message"]
        long = client.post(
            "/v1/embeddings", json={"input": ["a b c d", "e f g h", "i j k"]}, headers=headers
        )
        assert long.status_code == 400
        assert "LLM_EMBEDDING_MAX_TOKENS" in long.json()["error"]["message"]
        fits = client.post("/v1/embeddings", json={"input": ["a b c", "d"]}, headers=headers)
        assert fits.status_code == 200, fits.text


def test_prompt_tokens_are_charged_and_count_toward_the_quota(tmp_path: Path) -> None:
    with server(
        tmp_path, rate_limit_tokens_per_minute=100, rate_limit_requests_per_minute=100
    ) as client:
        headers = {"Authorization": f"Bearer {token_for(client)}"}
        words = " ".join(["word"] * 30)
        first = client.post("/v1/embeddings", json={"input": [words, words]}, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["prompt_tokens"] == 60
        assert first.headers["x-ratelimit-remaining-requests"] == "99"
        me = client.get("/users/me", headers=headers).json()["id"]
        assert charged_today(client.app, me) == 60  # type: ignore[attr-defined]
        # Refused requests are charged nothing, and free their place.
        refused = client.post("/v1/embeddings", json={"input": ["<b></b>"]}, headers=headers)
        assert refused.status_code == 400
        assert charged_today(client.app, me) == 60  # type: ignore[attr-defined]
        # A request is admitted while the budget is not used up (60 of 100)...
        second = client.post("/v1/embeddings", json={"input": [words, words]}, headers=headers)
        assert second.status_code == 200
        assert charged_today(client.app, me) == 120  # type: ignore[attr-defined]
        # ...and refused once it is.
        over = client.post("/v1/embeddings", json={"input": "calm"}, headers=headers)
        assert over.status_code == 429
        assert over.json()["error"]["type"] == "rate_limit_error"
