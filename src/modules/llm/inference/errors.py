"""Errors of the inference layer; the app maps each to one HTTP answer."""

from __future__ import annotations


class BackendUnavailableError(Exception):
    """The model is not serving (still loading, failed to load, unloaded or shutting down)."""


class QueueFullError(Exception):
    """Every queue place is taken; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("the model is busy: the request queue is full")
        self.retry_after = retry_after


class QueueTimeoutError(Exception):
    """The request's deadline passed before the model could start on it."""


class PromptTooLongError(ValueError):
    """`at_least`: only a part of the prompt was counted (it already did not fit)."""

    def __init__(self, prompt_tokens: int, context_size: int, *, at_least: bool = False) -> None:
        length = f"over {prompt_tokens}" if at_least else str(prompt_tokens)
        super().__init__(
            f"the prompt is {length} tokens long; the model's context holds "
            f"{context_size} and needs room for at least one generated token"
        )
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


class ModelNotFoundError(LookupError):
    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"no model named {name!r}; available: {', '.join(available)}")
        self.name = name
        self.available = available


class UnsupportedRequestError(ValueError):
    """A request this model cannot serve as asked (a grammar llama.cpp cannot parse, more
    choices than it has slots); `field` names the culprit. A 400."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
