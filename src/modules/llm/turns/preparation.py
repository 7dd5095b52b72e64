"""From a turn request and the stored history to the prompt a backend reads: sanitize every
message, fit the history into the context, tokenize."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from modules.config import Settings
from modules.llm.inference import Backend, ChatMessage, Prompt, PromptTooLongError
from modules.llm.turns.options import InvalidTurnRequest
from modules.llm.turns.types import InputMessage, MessageSanitization, SanitizationReport
from modules.sanitizer import SanitizationError, Sanitizer

# Characters of stored history kept cleaned (see `CleanedHistory`): a few MB.
CLEANED_HISTORY_CHARS = 2_000_000


class CleanedHistory:
    """Stored messages as the sanitizer cleaned them (None: refused), by owner, sanitizer
    and text, the least recently used dropped first beyond a budget of characters. A
    conversation's history comes back unchanged turn after turn, and cleaning it again cost
    0.15 ms a message: a 50-turn conversation paid 15 ms before each turn. Kept per owner,
    so that one user's history never makes another's turn faster (a timing side channel).
    Used from worker threads."""

    def __init__(self, budget_chars: int = CLEANED_HISTORY_CHARS) -> None:
        self.budget = budget_chars
        self.used = 0
        self._entries: OrderedDict[tuple[str, Sanitizer, str], str | None] = OrderedDict()
        self._lock = threading.Lock()

    def clean(self, owner: str, sanitizer: Sanitizer, text: str) -> str | None:
        key = (owner, sanitizer, text)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
        try:
            cleaned: str | None = sanitizer.clean(text).text
        except SanitizationError:
            cleaned = None
        size = len(text) + len(cleaned or "")
        if size > self.budget:
            return cleaned
        with self._lock:
            if key not in self._entries:
                self._entries[key] = cleaned
                self.used += size
            while self.used > self.budget:
                (_, _, old), old_cleaned = self._entries.popitem(last=False)
                self.used -= len(old) + len(old_cleaned or "")
        return cleaned


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    prompt: Prompt
    new_messages: list[ChatMessage]  # this request's own messages, sanitized
    system: str | None
    sanitization: SanitizationReport
    history_turns_dropped: int = 0


class PromptPreparer:
    """Shared by all requests; keeps one sanitizer per backend (its control tokens)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sanitizers: dict[tuple[str, int], Sanitizer] = {}
        self._history = CleanedHistory()

    def sanitizer_for(self, backend: Backend) -> Sanitizer:
        key = (backend.alias, id(backend))
        sanitizer = self._sanitizers.get(key)
        if sanitizer is None:
            sanitizer = self._sanitizers[key] = Sanitizer(
                max_chars=self.settings.sanitizer_max_chars,
                control_tokens=backend.control_tokens,
            )
        return sanitizer

    def sanitize(
        self, backend: Backend, raw: Sequence[InputMessage]
    ) -> tuple[list[ChatMessage], SanitizationReport]:
        if len(raw) > self.settings.sanitizer_max_messages:
            raise InvalidTurnRequest(
                f"{len(raw)} messages; the limit is {self.settings.sanitizer_max_messages}",
                field="messages",
            )
        total = sum(len(message.content) for message in raw)
        if total > self.settings.sanitizer_max_request_chars:
            raise InvalidTurnRequest(
                f"the messages hold {total} characters; the limit is "
                f"{self.settings.sanitizer_max_request_chars} (SANITIZER_MAX_REQUEST_CHARS)",
                field="messages",
            )
        sanitizer = self.sanitizer_for(backend)
        messages: list[ChatMessage] = []
        per_message: list[MessageSanitization] = []
        all_actions: list[str] = []
        for index, message in enumerate(raw):
            try:
                clean = sanitizer.clean(message.content, field_name=message.field)
            except SanitizationError as exc:
                raise InvalidTurnRequest(str(exc), field=message.field) from exc
            messages.append(ChatMessage(role=message.role, content=clean.text))
            if clean.changed:
                per_message.append(
                    MessageSanitization(index=index, role=message.role, actions=list(clean.actions))
                )
                all_actions += [a for a in clean.actions if a not in all_actions]
        return messages, SanitizationReport(
            changed=bool(per_message), actions=all_actions, messages=per_message
        )

    async def chat(
        self,
        backend: Backend,
        new: Sequence[InputMessage],
        *,
        system: str | None,
        history: Sequence[ChatMessage],
        max_tokens: int,
        owner: str,
    ) -> PreparedPrompt:
        """The system turn, as much recent history as fits, and the new messages."""
        raw = ([InputMessage("system", system, "system")] if system else []) + list(new)
        # Cleaning is CPU work (bleach, NFKC): it runs off the event loop.
        cleaned, report = await asyncio.to_thread(self.sanitize, backend, raw)
        system_message = cleaned[0] if system else None
        new_messages = cleaned[1:] if system else cleaned
        # Stored history was sanitized when stored; cleaning it again (each text once, see
        # `CleanedHistory`) keeps the promise that everything the model reads went through
        # the sanitizer.
        past = await asyncio.to_thread(self._clean_history, backend, history, owner)
        n_ctx = backend.context_size
        # A conversation keeps room to answer; a lone prompt only has to fit.
        reserve = min(max_tokens, n_ctx // 4) if past else 0
        dropped = 0
        while True:
            messages = ([system_message] if system_message else []) + past + new_messages
            prompt = await backend.chat_prompt(messages)
            if prompt.token_count + reserve <= n_ctx or not past:
                break
            # Drop the oldest turn: through its assistant answer (or everything left).
            cut = next((i + 1 for i, m in enumerate(past) if m.role == "assistant"), len(past))
            past = past[cut:]
            dropped += 1
        if prompt.token_count >= n_ctx:
            raise PromptTooLongError(prompt.token_count, n_ctx)
        return PreparedPrompt(
            prompt=prompt,
            new_messages=new_messages,
            system=system_message.content if system_message else None,
            sanitization=report,
            history_turns_dropped=dropped,
        )

    async def text(self, backend: Backend, message: InputMessage) -> PreparedPrompt:
        """A plain completion: the sanitized text, no chat template."""
        cleaned, report = await asyncio.to_thread(self.sanitize, backend, [message])
        prompt = await backend.text_prompt(cleaned[0].content)
        if prompt.token_count >= backend.context_size:
            raise PromptTooLongError(prompt.token_count, backend.context_size)
        return PreparedPrompt(prompt=prompt, new_messages=cleaned, system=None, sanitization=report)

    def _clean_history(
        self, backend: Backend, history: Sequence[ChatMessage], owner: str
    ) -> list[ChatMessage]:
        sanitizer = self.sanitizer_for(backend)
        cleaned = []
        for message in history:
            text = self._history.clean(owner, sanitizer, message.content)
            if text is not None:  # a stored message the current rules refuse is left out
                cleaned.append(ChatMessage(message.role, text))
        return cleaned
