"""Refusals remembered: a credential refused for the request limit on a route is refused
again on that route until one more request would fit, before anything is read for it.

A client that ignores its 429s and sends again at once would otherwise cost a whole request
each time: its token checked, its user read from the database, its body decoded. Four such
clients keep the event loop busy enough to slow everyone else's requests several times
(`bench/sanitize.py --limits default`). Remembered, each costs a hash and a dictionary
lookup, and is answered after a pause of a quarter second, so a client in a tight loop sends
a few a second, not thousands. Only the request limit is remembered, per process: token
budgets and the in-flight cap free up as other requests end, so those refusals are decided
again each time.

Keyed by a digest of the credential itself (bearer token, API key or session cookie) and the
route, so only the very credential that was refused is refused early; a revoked one gets
its 429 rather than its 401 until then, and is refused either way. The first
repeat is logged; the later ones are only counted (`/metrics`), not logged one by one."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from modules.ratelimit.quota import Allowance, Quota, RateLimitExceededError

# Where authentication leaves the request's key (scope state), for admission to remember.
REFUSAL_KEY_STATE = "refusal_key"
# Set (scope state) on a repeat refused early after the first: the request log leaves it
# out, so one client ignoring its 429s cannot fill the log; the metrics still count it.
QUIET_STATE = "log_quietly"
# Credentials remembered at most; beyond, a refusal is decided in full as before.
CAPACITY = 10_000
# How long a remembered refusal waits before it is answered.
REPEAT_PAUSE_SECONDS = 0.25

RefusalKey = tuple[bytes, int]


@dataclass(slots=True)
class _Refused:
    until: float  # the clock's time when one more request fits
    limit: int
    user_id: str
    repeats: int = 0


class KnownRefusals:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._known: dict[RefusalKey, _Refused] = {}

    @staticmethod
    def key_for(credential: str, route: object) -> RefusalKey:
        digest = hashlib.blake2b(credential.encode(), digest_size=16).digest()
        return digest, id(route)

    def remember(self, key: RefusalKey, error: RateLimitExceededError, user_id: str) -> None:
        if error.what != "requests" or error.until is None:
            return
        if len(self._known) >= CAPACITY:
            now = self.clock()
            self._known = {k: v for k, v in self._known.items() if v.until > now}
            if len(self._known) >= CAPACITY:
                return
        self._known[key] = _Refused(error.until, error.limit, user_id)

    async def check(self, credential: str, scope: dict[str, Any]) -> None:
        """Before authentication reads anything: raise the remembered 429 for this
        credential on this route, after a pause, or leave the key in the scope's state for
        admission."""
        key = self.key_for(credential, scope.get("route_handler"))
        state = scope.setdefault("state", {})
        known = self._still_refused(key)
        if known is None:
            state[REFUSAL_KEY_STATE] = key
            return
        refusal = self._repeat(known)
        state["user_id"] = known.user_id  # for the log line
        if known.repeats > 1:
            state[QUIET_STATE] = True
        # A client that sends again at once, its Retry-After ignored, would spin the event
        # loop on refusals as fast as it can read them; paused, its loop slows to a few a
        # second, and a sleeping request costs the server nothing.
        await asyncio.sleep(REPEAT_PAUSE_SECONDS)
        raise refusal

    def _still_refused(self, key: RefusalKey) -> _Refused | None:
        known = self._known.get(key)
        if known is not None and known.until <= self.clock():
            del self._known[key]  # one more fits now: decided in full again
            return None
        return known

    def _repeat(self, known: _Refused) -> RateLimitExceededError:
        known.repeats += 1
        seconds = max(1, math.ceil(known.until - self.clock()))
        quota = Quota(requests=Allowance(known.limit, 0, seconds))
        return RateLimitExceededError("requests", known.limit, "minute", seconds, quota)
