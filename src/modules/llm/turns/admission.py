"""Admission: the one gate on every path that reaches a model (/llm/generate, /v1/*,
/llm/validate-model, and every path added later).

In order: the caller's place among their requests in flight, the request limit and the
token budgets (the request's `max_tokens` set aside), the prompt's tokens set aside once it
is read, and, however the request ends (finished, failed, cancelled, timed out, never
started), the charge of what the model read and wrote and the release of the place. The
sanitizer is the other half of the gate: `PromptPreparer` cleans every message the model
reads, for whichever path."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from modules.config import Settings
from modules.llm.inference import Finished
from modules.ratelimit import (
    REFUSAL_KEY_STATE,
    Quota,
    RateLimiter,
    RateLimitExceededError,
    Reservation,
)

# Where an admission leaves its ticket in the request's scope state: the response's
# rate-limit headers are read from it when the response starts (`rate_limit_headers`).
TICKET_STATE_KEY = "admission_ticket"


@dataclass(frozen=True, slots=True)
class TokenWeights:
    """What a token costs against the budgets: completion tokens 1, prompt tokens
    `prompt`, prompt tokens read from the KV cache `cached`."""

    prompt: float = 1.0
    cached: float = 0.1

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        cached = min(cached_tokens, prompt_tokens)
        read = self.prompt * (prompt_tokens - cached) + self.cached * cached
        return math.ceil(read) + completion_tokens


@dataclass
class Ticket:
    """One admitted request. `charge` settles it and `release` frees its place; each takes
    effect once, so every ending can call both."""

    limiter: RateLimiter
    owner: str
    reservation: Reservation
    weights: TokenWeights
    _settled: bool = False
    _released: bool = False

    @property
    def quota(self) -> Quota:
        return self.reservation.quota

    async def reserve(self, tokens: int) -> None:
        """Set `tokens` aside in the budgets (what the request may generate), so concurrent
        requests cannot overshoot a budget by more than one request."""
        if not self._settled:
            self.reservation = await self.limiter.reserve(self.reservation, tokens)

    async def reading(self, prompt_tokens: int) -> None:
        """The prompt is built: its tokens are set aside too, before the model reads them."""
        await self.reserve(self.weights.cost(prompt_tokens, 0))

    async def charge(self, finished: Finished | None) -> None:
        """Replace the reservation by what the model read and generated (None: nothing,
        as for a cached answer)."""
        if self._settled:
            return
        self._settled = True
        cost = (
            0
            if finished is None
            else self.weights.cost(
                finished.prompt_tokens, finished.completion_tokens, finished.cached_tokens
            )
        )
        await self.limiter.settle(self.reservation, cost)

    async def release(self) -> None:
        """Free the in-flight place (first, without awaiting: a cancelled task must not
        keep it) and give back a reservation nothing was charged against."""
        if self._released:
            return
        self._released = True
        self.limiter.leave(self.owner)
        if not self._settled:
            self._settled = True
            await self.limiter.settle(self.reservation, 0)


@dataclass(frozen=True, slots=True)
class Admission:
    """Request-scoped: admits one caller's requests to the models."""

    limiter: RateLimiter
    weights: TokenWeights
    user_id: uuid.UUID
    role: str
    # The request's scope state: the quota goes there for the response's headers.
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        settings: Settings,
        limiter: RateLimiter,
        user_id: uuid.UUID,
        role: str,
        state: dict[str, Any],
    ) -> Admission:
        weights = TokenWeights(
            prompt=settings.rate_limit_prompt_token_weight,
            cached=settings.rate_limit_cached_token_weight,
        )
        return cls(limiter, weights, user_id, role, state)

    async def admit(self) -> Ticket:
        """Take a place in flight and count the request (the ticket reserves its tokens);
        raises RateLimitExceededError (429), holding nothing, when a limit is used up."""
        owner = str(self.user_id)
        self.limiter.enter(owner)
        try:
            reservation = await self.limiter.admit(owner, self.role, 0)
        except BaseException as failure:
            self.limiter.leave(owner)
            # Refused: the same credential on the same route is refused at once until the
            # limit has room again, before authentication reads anything (`KnownRefusals`).
            key = self.state.get(REFUSAL_KEY_STATE)
            if isinstance(failure, RateLimitExceededError) and key is not None:
                self.limiter.refusals.remember(key, failure, owner)
            raise
        ticket = Ticket(self.limiter, owner, reservation, self.weights)
        self.state[TICKET_STATE_KEY] = ticket
        return ticket


def quota_headers(state: dict[str, Any]) -> dict[str, str]:
    """The rate-limit headers of the request whose scope state this is (none when nothing
    was admitted)."""
    ticket = state.get(TICKET_STATE_KEY)
    return ticket.quota.headers() if isinstance(ticket, Ticket) else {}
