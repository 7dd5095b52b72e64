"""/v1/embeddings on the bundled SmolLM2 (mean pooling on its own context): the vectors'
size and length, their meaning, batching, and chat streams running beside them."""

from __future__ import annotations

import threading

import numpy as np
import openai

from tests.model.conftest import ModelApi

ASK = [{"role": "user", "content": "Name three colours of the sea."}]


def client_for(api: ModelApi, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.base_url}/v1", api_key=token, max_retries=0)


def vectors(client: openai.OpenAI, texts: list[str]) -> np.ndarray:
    answer = client.embeddings.create(model=client.models.list().data[0].id, input=texts)
    return np.array([item.embedding for item in answer.data])


def test_vectors_have_the_models_dimension_and_unit_length(api: ModelApi, user_token: str) -> None:
    client = client_for(api, user_token)
    card = client.models.list().data[0]
    assert "embeddings" in (card.model_extra or {})["capabilities"]
    answer = client.embeddings.create(model=card.id, input=["The sea is calm.", "Hello"])
    embedder = api.backend.embedder
    assert embedder is not None
    assert embedder.pooling_name == "mean"  # the GGUF declares none: a chat model
    found = np.array([item.embedding for item in answer.data])
    assert found.shape == (2, embedder.dimensions)
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)
    # The model's own tokens: with a BOS, as the model reads any text.
    bos = int(api.backend.model.add_bos)
    assert (
        answer.usage.prompt_tokens
        == len(api.backend.model.tokenize("The sea is calm.", special=False))
        + len(api.backend.model.tokenize("Hello", special=False))
        + 2 * bos
    )


def test_similar_texts_are_nearer_than_unrelated_ones(api: ModelApi, user_token: str) -> None:
    cat, kitten, revenue = vectors(
        client_for(api, user_token),
        [
            "The cat sits on the mat.",
            "A kitten is resting on a rug.",
            "Quarterly revenue grew by twelve percent.",
        ],
    )
    assert cat @ kitten > cat @ revenue
    assert cat @ kitten > kitten @ revenue


def test_batched_vectors_are_the_vectors_one_by_one(api: ModelApi, user_token: str) -> None:
    client = client_for(api, user_token)
    texts = [f"Sentence number {i} is about {topic}." for i, topic in
             enumerate(["boats", "bread", "stars", "rain", "music", "trains", "tea"])]  # fmt: skip
    together = vectors(client, texts)
    alone = np.array([vectors(client, [text])[0] for text in texts])
    # One decode or seven: each sequence's numbers are its own (to float rounding).
    assert np.abs(together - alone).max() < 1e-4
    # Token arrays: the same text's tokens give the same vector.
    tokens = api.backend.model.tokenize(texts[0], special=False, add_bos=api.backend.model.add_bos)
    model = client.models.list().data[0].id
    by_tokens = client.embeddings.create(model=model, input=[tokens], encoding_format="float")
    assert np.abs(np.array(by_tokens.data[0].embedding) - together[0]).max() < 1e-4


def test_a_chat_stream_beside_embeddings_is_unaffected(api: ModelApi, user_token: str) -> None:
    client = client_for(api, user_token)
    model = client.models.list().data[0].id

    def chat() -> str:
        stream = client.chat.completions.create(
            model=model, messages=ASK, max_tokens=48, temperature=0, stream=True,
            extra_body={"use_cache": False},
        )  # fmt: skip
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    alone = chat()
    stop = threading.Event()
    embedded = 0
    failures: list[BaseException] = []

    def embed_meanwhile() -> None:
        nonlocal embedded
        texts = [f"A long enough input about the sea, number {i}." for i in range(16)]
        try:
            while not stop.is_set():
                vectors(client, texts)
                embedded += len(texts)
        except BaseException as exc:  # reported below
            failures.append(exc)

    embedder = api.backend.embedder
    assert embedder is not None
    worker = threading.Thread(target=embed_meanwhile)
    worker.start()
    try:
        while not embedded and not failures:  # embeddings are running: one request is done
            stop.wait(0.01)
        decodes = embedder.decodes
        beside = chat()
    finally:
        stop.set()
        worker.join(60)
    assert not failures
    assert embedder.decodes > decodes  # they went on while the chat streamed
    # The chat's context and batches are its own: the same greedy answer.
    assert beside == alone
