"""The inference layer: models, backends and the registry. No web or database code here.

Everything above it (the turn service) talks to a `Backend`: the local llama.cpp engine
today, a remote OpenAI-compatible server beside it."""

from modules.llm.inference.answers import AnswerBuilder, Choice
from modules.llm.inference.backend import Backend, Completion, Prompt, collect
from modules.llm.inference.chat_template import ChatMessage, ChatTemplateError
from modules.llm.inference.descriptions import (
    Capabilities,
    Capability,
    LocalDetails,
    ModelDescription,
    NodeDescription,
)
from modules.llm.inference.errors import (
    BackendUnavailableError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
    QueueTimeoutError,
    UnsupportedRequestError,
)
from modules.llm.inference.events import (
    Event,
    Failed,
    Finished,
    FinishReason,
    Generation,
    TokenDelta,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
)
from modules.llm.inference.registry import (
    BackendFactory,
    LoadOverrides,
    ModelEntry,
    ModelRegistry,
    ModelSpec,
    ModelStatus,
)
from modules.llm.inference.remote import REMOTE_CONTROL_TOKENS, RemoteBackend
from modules.llm.inference.sampling import SamplingParams
from modules.llm.inference.stats import GenerationStats, Histogram, Load
from modules.llm.inference.structured import (
    FunctionSpec,
    JsonSchemaSpec,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolChoice,
)

__all__ = [
    "REMOTE_CONTROL_TOKENS",
    "AnswerBuilder",
    "Backend",
    "BackendFactory",
    "BackendUnavailableError",
    "Capabilities",
    "Capability",
    "ChatMessage",
    "ChatTemplateError",
    "Choice",
    "Completion",
    "Event",
    "Failed",
    "FinishReason",
    "Finished",
    "FunctionSpec",
    "Generation",
    "GenerationStats",
    "Histogram",
    "JsonSchemaSpec",
    "Load",
    "LoadOverrides",
    "LocalDetails",
    "ModelDescription",
    "ModelEntry",
    "ModelNotFoundError",
    "ModelRegistry",
    "ModelSpec",
    "ModelStatus",
    "NamedToolChoice",
    "NodeDescription",
    "Prompt",
    "PromptTooLongError",
    "QueueFullError",
    "QueueTimeoutError",
    "RemoteBackend",
    "ResponseFormat",
    "SamplingParams",
    "TokenDelta",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "TopLogprob",
    "UnsupportedRequestError",
    "collect",
]
