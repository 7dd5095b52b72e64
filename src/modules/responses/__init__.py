"""Responses: the Responses API's stored answers, each mapped to the conversation turn it
answered; always scoped to their owner."""

from modules.responses.models import StoredResponse
from modules.responses.service import (
    ResponseNotFoundError,
    ResponseNotLatestError,
    ResponseStore,
    new_response_id,
)

__all__ = [
    "ResponseNotFoundError",
    "ResponseNotLatestError",
    "ResponseStore",
    "StoredResponse",
    "new_response_id",
]
