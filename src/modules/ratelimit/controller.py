"""GET /users/me/usage: one's own counters against one's own limits."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from modules.ratelimit.schemas import UsageRead
from modules.ratelimit.service import RateLimiter
from modules.users import User


class UsageController(Controller):
    path = "/users/me/usage"
    tags = ("users",)

    @get("/")
    async def usage(
        self, request: Request[User, Any, Any], rate_limiter: NamedDependency[RateLimiter]
    ) -> UsageRead:
        """Requests in the last minute, tokens this minute and tokens today, each with its limit
        (null when there is none) and the seconds until its window starts again: the
        counters that admit or refuse one's requests, so what this shows is what counts."""
        user = request.user
        return UsageRead.of(await rate_limiter.usage(str(user.id), user.role))
