"""The turn service: the one place a chat turn happens, whichever API asked for it.

In order: admission (requests in flight, rate limit, token budgets: see `Admission`),
model choice, profile, history load, sanitization and fitting into the context, response
cache, generation (the backend's bounded queue), then settlement: every token read and
generated charged (also when the client drops, times out or cancels), the turn stored, the
answer cached."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any

import msgspec
from advanced_alchemy.exceptions import DuplicateKeyError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from modules.cache import CachedAnswer, ResponseCache
from modules.config import Settings
from modules.conversations import (
    Conversation,
    ConversationNotFoundError,
    ConversationService,
    Message,
    NewConversation,
    NewMessage,
    store_first_turn,
    store_turn,
    title_from,
)
from modules.llm.inference import (
    Backend,
    BackendUnavailableError,
    ChatMessage,
    Completion,
    Finished,
    FinishReason,
    Generation,
    ModelRegistry,
    QueueFullError,
    SamplingParams,
    ToolCall,
)
from modules.llm.inference.tool_format import ToolCallReader
from modules.llm.turns.admission import Admission, Ticket
from modules.llm.turns.answer_shape import AnswerShape, answer_shape
from modules.llm.turns.fallback import started
from modules.llm.turns.memory import Memory, StoredText
from modules.llm.turns.options import InvalidTurnRequest, sampling_params
from modules.llm.turns.ports import ProfileStore
from modules.llm.turns.preparation import PreparedPrompt, PromptPreparer
from modules.llm.turns.turn import Turn
from modules.llm.turns.types import TurnRequest
from modules.memory import MemoryHit

SessionFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]
STORE_ATTEMPTS = 5
_append_locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()


def _append_lock(conversation_id: uuid.UUID) -> asyncio.Lock:
    lock = _append_locks.get(conversation_id)
    if lock is None:
        lock = _append_locks[conversation_id] = asyncio.Lock()
    return lock


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: uuid.UUID
    role: str


@dataclass(frozen=True, slots=True)
class TurnService:
    """Request-scoped: one caller's turns.

    A turn is its own unit of work: a stream outlives its request, so the turn reads and
    writes conversations through sessions of its own and commits them itself."""

    settings: Settings
    registry: ModelRegistry
    preparer: PromptPreparer
    admission: Admission
    cache: ResponseCache
    profiles: ProfileStore
    sessions: SessionFactory
    caller: Caller
    log: dict[str, Any]  # fields for this request's log line
    memory: Memory | None = None

    async def start(self, request: TurnRequest) -> Turn:
        """Admit the turn, prepare it and start its answer; what it costs is charged and
        its place released however it ends (see `Turn`)."""
        ticket = await self.admission.admit()  # over a limit: 429 before any work
        try:
            return await self._start(request, ticket)
        except BaseException:
            await ticket.release()
            raise

    async def _start(self, request: TurnRequest, ticket: Ticket) -> Turn:
        chain = self.registry.chain(request.model)  # unknown names: 404 before any work
        if request.probe:
            chain = chain[:1]
        conversation, history = await self._history(request.conversation_id)
        own_system = request.system
        request, profile = await self._with_profile(request, conversation)
        params = sampling_params(self.settings, request.settings)
        await ticket.reserve(params.resolved_max_tokens * params.n)  # every choice is charged
        recalled = await self._recall(request)
        backend, prepared, key, cached, source = await self._generate(
            chain, request, conversation, history, params, recalled
        )
        if cached is None:
            await ticket.reading(prepared.prompt.token_count)
        self._log_turn(chain, backend, prepared, cached)
        new_conversation = (
            None
            if request.raw or request.probe or not request.store or conversation is not None
            else self._new_conversation(
                backend.alias,
                prepared,
                # A profile's prompt is the admin's: the conversation names the profile
                # and keeps only a system prompt the user sent.
                system=prepared.system if profile is None or own_system else None,
                profile=profile,
            )
        )
        conversation_id = new_conversation.id if new_conversation is not None else None
        if conversation is not None and request.store:
            conversation_id = conversation.id

        async def settle(answer: Completion) -> None:
            finished = answer.finished
            # What the model read and generated is charged (a cache hit: nothing).
            await ticket.charge(None if cached else finished)
            if cached is None:
                self.log["tokens"] = finished.prompt_tokens + finished.completion_tokens
            # A stopped answer is kept too, with what it had said, marked cancelled: a
            # reload during a new chat's first answer keeps the question.
            # A conversation keeps the first choice: what the next turn continues.
            if conversation_id is not None:
                stored = await self._store(conversation_id, prepared, answer, new_conversation)
                if stored and self.memory is not None:  # embedded in the background
                    self.memory.remember(
                        self.registry, self.caller.user_id, conversation_id, stored
                    )
            if key and cached is None and finished.finish_reason in ("stop", "length"):
                usage = (finished.prompt_tokens, finished.completion_tokens)
                reason = finished.finish_reason
                await self.cache.put(backend.alias, key, answer.text, reason, usage)

        return Turn(
            model=backend.alias,
            conversation_id=conversation_id,
            prepared=prepared,
            source=source,
            settle=settle,
            release=ticket.release,
            # A margin over the backend's own deadline, in case a prompt evaluation overruns.
            timeout=self.settings.llm_request_timeout_seconds + 30,
        )

    def _log_turn(
        self,
        chain: Sequence[str],
        backend: Backend,
        prepared: PreparedPrompt,
        cached: CachedAnswer | None,
    ) -> None:
        self.log["cache_hit"] = cached is not None
        if backend.alias != chain[0]:
            self.log["fallback"] = backend.alias
        if self.settings.log_prompts:
            self.log["prompt"] = [m.content for m in prepared.new_messages]

    async def _generate(
        self,
        chain: Sequence[str],
        request: TurnRequest,
        conversation: Conversation | None,
        history: Sequence[ChatMessage],
        params: SamplingParams,
        recalled: Sequence[MemoryHit] = (),
    ) -> tuple[Backend, PreparedPrompt, str | None, CachedAnswer | None, Generation | Completion]:
        """The answer's source on the first model of `chain` that can take it: a model that
        is unavailable (not loaded, its server down, its queue full) before its first
        token hands the turn to the next. Each model gets its own prompt: its template,
        its context, its control tokens. A model whose refusal can come after it accepted
        the turn (a remote server) is waited for until its first event."""
        for position, alias in enumerate(chain):
            fallback = chain[position + 1] if position + 1 < len(chain) else None
            try:
                backend = self.registry.get(alias)
                shape = answer_shape(backend, params)  # a 400 before any work
                prepared = await self._prepare(
                    backend, request, conversation, history, params, shape, recalled
                )
                key = (
                    self._cache_key(backend, prepared, params, request)
                    if request.use_cache and not request.probe and shape.plain
                    else None
                )
                cached = await self.cache.get(alias, key) if key else None
                if cached is not None:
                    completion = Completion(cached.text, _finished_from_cache(cached))
                    return backend, prepared, key, cached, completion
                generation: Generation = backend.stream(
                    prepared.prompt,
                    shape.params,
                    owner=str(self.caller.user_id),
                    timeout=self.settings.llm_request_timeout_seconds,
                )
                if shape.reads_tool_calls is not None:
                    generation = ToolCallReader(generation, shape.reads_tool_calls)
                if fallback is not None and backend.unavailable_after_start:
                    # Know that it started before giving up the others.
                    generation = await started(generation)
                return backend, prepared, key, None, generation
            except (BackendUnavailableError, QueueFullError):
                if fallback is None:
                    raise
                self.registry.fell_back(alias, fallback)
        raise AssertionError("a chain has at least one model")

    async def _recall(self, request: TurnRequest) -> list[MemoryHit]:
        """`memory: k`: the caller's k stored messages nearest to this turn's last user
        message, from their other conversations (none for a plain completion)."""
        if not request.memory or request.raw or self.memory is None:
            return []
        cap = self.settings.memory_max_recall
        if request.memory > cap:
            raise InvalidTurnRequest(
                f"memory is {request.memory}; this server recalls at most {cap} "
                "(MEMORY_MAX_RECALL)",
                field="memory",
                status_code=400,
            )
        text = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if not text.strip():
            return []
        hits = await self.memory.recall(
            self.registry, self.caller.user_id, text, request.memory, request.conversation_id
        )
        self.log["recalled"] = len(hits)
        return hits

    async def _with_profile(
        self, request: TurnRequest, conversation: Conversation | None
    ) -> tuple[TurnRequest, str | None]:
        """Apply the request's profile, or the conversation's. Request settings override
        the profile's, which override the server's defaults; a request's own system prompt
        overrides the profile's. Returns the request and the profile applied."""
        name = request.profile or (conversation.profile if conversation is not None else None)
        if not name:
            return request, None
        try:
            profile = await self.profiles.by_name(name)
        except LookupError:
            if request.profile:
                raise
            return request, None  # the conversation's profile was deleted since: go on
        base = msgspec.convert(profile.settings or {}, SamplingParams)
        applied = replace(
            request,
            system=request.system or profile.system_prompt,
            settings=request.settings.over(base),
        )
        return applied, name

    async def _history(
        self, conversation_id: uuid.UUID | None
    ) -> tuple[Conversation | None, list[ChatMessage]]:
        """The caller's conversation and its messages (someone else's id is a 404)."""
        if conversation_id is None:
            return None, []
        async with self.sessions() as session:
            conversations = ConversationService(session=session)
            conversation = await conversations.get_owned(self.caller.user_id, conversation_id)
            messages = await conversations.messages(conversation.id)
            return conversation, [stored_message(m) for m in messages]

    async def _prepare(
        self,
        backend: Backend,
        request: TurnRequest,
        conversation: Conversation | None,
        history: Sequence[ChatMessage],
        params: SamplingParams,
        shape: AnswerShape,
        recalled: Sequence[MemoryHit] = (),
    ) -> PreparedPrompt:
        if request.raw:
            return await self.preparer.text(
                backend, request.messages[0], owner=str(self.caller.user_id)
            )
        system = (
            request.system
            or (conversation.system_prompt if conversation is not None else None)
            or self.settings.llm_default_system_prompt
            or None
        )
        return await self.preparer.chat(
            backend,
            request.messages,
            system=system,
            history=history,
            max_tokens=params.resolved_max_tokens,
            owner=str(self.caller.user_id),
            tools_prompt=shape.tools_prompt,
            template_tools=params.tools if shape.template_tools else (),
            recalled=[(hit.role, hit.content) for hit in recalled],
        )

    def _cache_key(
        self,
        backend: Backend,
        prepared: PreparedPrompt,
        params: SamplingParams,
        request: TurnRequest,
    ) -> str:
        return self.cache.key(
            backend.alias,
            [(m.role, m.content) for m in prepared.prompt.messages],
            {**msgspec.to_builtins(params), "raw": request.raw},
            str(self.caller.user_id),
            model_file=self.registry.entry(backend.alias).fingerprint,
        )

    def _new_conversation(
        self, model: str, prepared: PreparedPrompt, *, system: str | None, profile: str | None
    ) -> NewConversation:
        first_user = next(
            (m.content for m in prepared.new_messages if m.role == "user"), "New conversation"
        )
        return NewConversation(
            owner_id=self.caller.user_id,
            title=title_from(first_user) or "New conversation",
            model=model,
            system_prompt=system,
            profile=profile,
        )

    async def _store(
        self,
        conversation_id: uuid.UUID,
        prepared: PreparedPrompt,
        answer: Completion,
        new_conversation: NewConversation | None,
    ) -> list[StoredText]:
        """Store the turn; the messages stored (none: the conversation went meanwhile)."""
        finished = answer.finished
        new = [new_message(m) for m in prepared.new_messages]
        if new:
            new[-1] = replace(new[-1], prompt_tokens=finished.prompt_tokens)
        first = answer.all_choices[0]
        new.append(
            NewMessage(
                "assistant",
                first.text,
                tool_calls=[call.openai() for call in first.tool_calls] or None,
                completion_tokens=finished.completion_tokens,
                generation_seconds=round(finished.generation_seconds, 4),
                time_to_first_token=round(finished.time_to_first_token, 4),
                finish_reason=first.finish_reason,
            )
        )
        stored = [StoredText(m.id, m.role, m.content) for m in new]
        if new_conversation is not None:
            # A new conversation is written with its first turn, in one transaction: its id
            # was handed out at the start, and a first turn that fails leaves no empty
            # conversation behind.
            try:
                async with self.sessions() as session:
                    await store_first_turn(session, new_conversation, new)
                    await session.commit()
            except (IntegrityError, DuplicateKeyError):
                # Only the owner can be missing (deleted during the turn): nothing to keep.
                self.log["stored"] = False
                return []
            return stored
        # Two turns at once on one conversation: this process appends them one at a time;
        # across processes the append locks the conversation's row (PostgreSQL) and positions
        # are unique, so the loser of a race retries on fresh numbers.
        async with _append_lock(conversation_id):
            for attempt in range(STORE_ATTEMPTS):
                try:
                    async with self.sessions() as session:
                        await store_turn(session, conversation_id, new)
                        await session.commit()
                    return stored
                except ConversationNotFoundError:
                    # Deleted while its turn ran: the deletion wins, the answer still ends.
                    self.log["stored"] = False
                    return []
                except (IntegrityError, DuplicateKeyError):
                    if attempt == STORE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
        return []


def stored_message(message: Message) -> ChatMessage:
    """A stored message as a model reads it (with its tool calls, if any)."""
    calls = tuple(
        ToolCall(
            id=str(call.get("id", "")),
            name=str(call.get("function", {}).get("name", "")),
            arguments=str(call.get("function", {}).get("arguments", "")),
        )
        for call in message.tool_calls or ()
    )
    return ChatMessage(message.role, message.content, calls, message.tool_call_id)


def new_message(message: ChatMessage) -> NewMessage:
    return NewMessage(
        message.role,
        message.content,
        tool_calls=[call.openai() for call in message.tool_calls] or None,
        tool_call_id=message.tool_call_id,
    )


def _finished_from_cache(cached: CachedAnswer) -> Finished:
    finish_reason: FinishReason = "length" if cached.finish_reason == "length" else "stop"
    return Finished(
        finish_reason=finish_reason,
        prompt_tokens=cached.prompt_tokens,
        completion_tokens=cached.completion_tokens,
    )
