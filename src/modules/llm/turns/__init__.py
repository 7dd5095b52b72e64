"""The turn service: the one place a chat turn happens (admission to settlement)."""

from modules.llm.turns.admission import Admission, Ticket, TokenWeights, quota_headers
from modules.llm.turns.embeddings import EmbeddingAnswer, EmbeddingQuery, EmbeddingService
from modules.llm.turns.options import (
    InvalidTurnRequest,
    sampling_params,
)
from modules.llm.turns.ports import ProfileStore
from modules.llm.turns.preparation import PreparedPrompt, PromptPreparer
from modules.llm.turns.service import Caller, SessionFactory, TurnService
from modules.llm.turns.turn import Turn
from modules.llm.turns.types import (
    InputMessage,
    MessageSanitization,
    SanitizationReport,
    TurnRequest,
)

__all__ = [
    "Admission",
    "Caller",
    "EmbeddingAnswer",
    "EmbeddingQuery",
    "EmbeddingService",
    "InputMessage",
    "InvalidTurnRequest",
    "MessageSanitization",
    "PreparedPrompt",
    "ProfileStore",
    "PromptPreparer",
    "SanitizationReport",
    "SessionFactory",
    "Ticket",
    "TokenWeights",
    "Turn",
    "TurnRequest",
    "TurnService",
    "quota_headers",
    "sampling_params",
]
