"""/v1/embeddings: OpenAI's embeddings. The route only translates formats; the embedding
service admits, sanitizes, counts, embeds and charges."""

from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from modules.llm.api.openai.controller import ERRORS
from modules.llm.api.openai.errors import OpenAIError
from modules.llm.api.openai.schemas import (
    EmbeddingItem,
    EmbeddingList,
    EmbeddingsRequest,
    EmbeddingUsage,
)
from modules.llm.inference.embeddings import EmbeddingInput, EmbeddingOptions, to_base64
from modules.llm.turns import EmbeddingQuery, EmbeddingService


def embedding_inputs(data: EmbeddingsRequest) -> tuple[EmbeddingInput, ...]:
    """The inputs, each a text or a token array; a list mixing kinds is a 400."""
    raw = data.input
    if isinstance(raw, str):
        return (raw,)
    if raw and all(isinstance(item, int) for item in raw):
        return (tuple(item for item in raw if isinstance(item, int)),)
    inputs: list[EmbeddingInput] = []
    for index, item in enumerate(raw):
        if isinstance(item, int):
            raise OpenAIError(
                f"input[{index}] is a token id among other inputs: send one token array, or "
                "a list of texts or of token arrays",
                param=f"input[{index}]",
                code="invalid_value",
            )
        inputs.append(item if isinstance(item, str) else tuple(item))
    if len({isinstance(item, str) for item in inputs}) > 1:
        raise OpenAIError(
            "input mixes texts and token arrays: send one kind",
            param="input",
            code="invalid_value",
        )
    return tuple(inputs)


class EmbeddingsController(Controller):
    path = "/v1"
    tags = ("openai",)

    @post("/embeddings", status_code=200, responses=ERRORS)
    async def embeddings(
        self,
        data: JSONBody[EmbeddingsRequest],
        embedding_service: NamedDependency[EmbeddingService],
    ) -> EmbeddingList:
        """OpenAI embeddings: one vector per input, L2-normalized on a local model, as
        floats or base64 (little-endian float32, the openai SDK's default). `dimensions`
        is passed through to a remote model and refused by a local one (other than its
        own); token arrays are checked against a local model's vocabulary."""
        options = EmbeddingOptions(data.dimensions, data.user, data.encoding_format)
        answer = await embedding_service.embed(
            EmbeddingQuery(embedding_inputs(data), data.model, options)
        )
        base64 = data.encoding_format == "base64"
        vectors = answer.embeddings.vectors
        tokens = answer.embeddings.prompt_tokens
        return EmbeddingList(
            data=[
                EmbeddingItem(
                    index=index, embedding=to_base64(vector) if base64 else vector.tolist()
                )
                for index, vector in enumerate(vectors)
            ],
            model=answer.model,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )
