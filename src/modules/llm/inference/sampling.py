"""Sampling settings: one type from the API schemas to the backend, its defaults here.

Clients send some of them (`settings` of /llm/generate, a profile's defaults, the fields of
/v1). `temperature` and `max_tokens` left out are None: the server's defaults
(LLM_DEFAULT_TEMPERATURE, LLM_DEFAULT_MAX_TOKENS) fill them in before a backend reads
them. Every other field has its default here."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from modules.llm.inference.structured import ResponseFormat, Tool, ToolChoice

StopString = Annotated[str, Meta(min_length=1, max_length=64)]


class SamplingParams(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    """How to sample a generation. A backend only reads resolved params (`resolved`)."""

    temperature: Annotated[float, Meta(ge=0.0, le=5.0)] | None = None
    max_tokens: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    top_p: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Meta(ge=0, le=1000)] = 40
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.05
    repeat_penalty: Annotated[float, Meta(ge=0.5, le=2.0)] = 1.0
    presence_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Meta(ge=-2.0, le=2.0)] = 0.0
    stop: Annotated[tuple[StopString, ...], Meta(max_length=8)] = ()
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None
    # What the answer must be. A remote server gets these as they are; for a local model
    # the turn service compiles them into `grammar` (and renders `tools` in the prompt).
    response_format: ResponseFormat | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # What comes with the answer: the chosen tokens' log-probabilities, and the
    # `top_logprobs` most likely ones at each step; `n` choices for the one prompt.
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] = 0
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    # A GBNF grammar the sampled text must follow (llama.cpp's grammar sampler): set by
    # the turn service for local models, never by a client.
    grammar: str | None = None

    def over(self, base: SamplingParams) -> SamplingParams:
        """These settings where they differ from the defaults, `base`'s elsewhere (a
        request's settings over a profile's)."""
        values = msgspec.structs.asdict(base)
        changed = msgspec.structs.asdict(self)
        values.update({k: v for k, v in changed.items() if v != _DEFAULT_VALUES[k]})
        return SamplingParams(**values)

    def resolved(self, *, temperature: float, max_tokens: int) -> SamplingParams:
        """With the server's defaults where the client left the choice to it."""
        return msgspec.structs.replace(
            self,
            temperature=temperature if self.temperature is None else self.temperature,
            max_tokens=self.max_tokens or max_tokens,
        )

    # What a backend reads of resolved params (a client's params leave these to the server).
    @property
    def resolved_temperature(self) -> float:
        if self.temperature is None:
            raise ValueError("unresolved sampling params: the temperature is the server's")
        return self.temperature

    @property
    def resolved_max_tokens(self) -> int:
        if self.max_tokens is None:
            raise ValueError("unresolved sampling params: max_tokens is the server's")
        return self.max_tokens


DEFAULTS = SamplingParams()
_DEFAULT_VALUES = msgspec.structs.asdict(DEFAULTS)
