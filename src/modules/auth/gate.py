"""What happens before an unauthenticated body (register, login, the browser session's
login, refresh) is read: cross-site form and text bodies are refused, the body is bounded
small, and the attempt is counted against the client's address. Only then is the body
read, so a flood of large or malformed bodies costs the event loop next to nothing and
runs into the per-address limit like any other attempt.

Form and text bodies (and bodies with no Content-Type) are the ones a page on another
site can make a browser send without a CORS preflight. A login sent that way from
another site would count failures against the victim's own account and address; it is
refused before anything is counted. JSON needs a preflight, which this service never
grants, so it is not checked here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from modules.ratelimit import RateLimiter

# Credentials, a refresh token or a new account: a few hundred bytes. Route handlers set
# it as their `request_max_body_size`, which bounds bodies sent without a Content-Length.
UNAUTHENTICATED_BODY_LIMIT = 16 * 1024
# What a page on any site can send without a preflight (no Content-Type at all included).
SIMPLE_MEDIA_TYPES = frozenset(
    ["", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
)
# What a browser says about where a request came from (Sec-Fetch-Site): "none" is the
# user's own doing (a bookmark, the address bar).
SAME_ORIGIN_SITES = frozenset(["same-origin", "none"])
# A request that carries one of these came through a proxy: its loopback address is the
# proxy's, not the client's.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
DEFAULT_PORTS = {"http": 80, "https": 443}

Connection = ASGIConnection[Any, Any, Any, Any]
Counter = Callable[[RateLimiter, str], Awaitable[None]]


def client_address(connection: Connection) -> str:
    """The client's address, as every per-address limit counts it: the address that
    connected, or the one a TRUSTED_PROXIES balancer names in X-Forwarded-For (uvicorn
    resolves it)."""
    client = connection.client
    return client.host if client else "unknown"


def is_local_client(connection: Connection) -> bool:
    """The request comes from the server's own machine: a loopback address, and not
    relayed by a proxy (a proxy on this machine would make every client look local, and
    with TRUSTED_PROXIES=* anyone could claim 127.0.0.1 in X-Forwarded-For)."""
    if any(name in connection.headers for name in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(client_address(connection))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _origin_of(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is not a number
        return scheme, "", None
    return scheme, (parts.hostname or "").lower(), port


def refuse_cross_site(connection: Connection) -> None:
    """403 for a form or text body that a browser says came from another site (Sec-Fetch-
    Site) or from another origin (Origin, compared with this request's own scheme and
    host). Requests with neither header come from programs, not from pages."""
    media_type = connection.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in SIMPLE_MEDIA_TYPES:
        return
    fetch_site = connection.headers.get("sec-fetch-site", "").strip().lower()
    origin = connection.headers.get("origin")
    if fetch_site and fetch_site not in SAME_ORIGIN_SITES:
        came_from = f"Sec-Fetch-Site: {fetch_site}"
    elif (
        origin is not None
        # The browser itself vouches for the origin: a mismatch can only be a proxy that
        # rewrote the Host header.
        and fetch_site != "same-origin"
        and _origin_of(origin) != _origin_of(str(connection.base_url))
    ):
        came_from = f"Origin: {origin[:100]}"
    else:
        return
    raise PermissionDeniedException(
        f"a form or plain-text body is accepted only from this site's own pages, and this "
        f"one came from another site ({came_from}); programs send JSON "
        "(Content-Type: application/json) or a form without an Origin header. "
        "Nothing was counted against the account"
    )


def _too_large() -> HTTPException:
    return HTTPException(
        status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        detail=(
            f"the body is over {UNAUTHENTICATED_BODY_LIMIT} bytes, the limit of this "
            "route (credentials or a token need far less)"
        ),
    )


async def _rate_limiter(route_handler: BaseRouteHandler) -> RateLimiter | None:
    # The app's `rate_limiter` dependency: guards get no dependency injection, so it is
    # resolved here as a handler's parameter would be.
    provider = route_handler.resolve_dependencies().get("rate_limiter")
    limiter = await provider() if provider is not None else None
    return limiter if isinstance(limiter, RateLimiter) else None


def body_gate(count: Counter) -> Callable[[Connection, BaseRouteHandler], Awaitable[None]]:
    """A guard for an unauthenticated route that takes a body: cross-site form and text
    bodies refused, the declared size checked, the attempt counted with `count` against
    the client's address, and only then the body read (within the route's limit)."""

    async def guard(connection: Connection, route_handler: BaseRouteHandler) -> None:
        refuse_cross_site(connection)
        declared = connection.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > UNAUTHENTICATED_BODY_LIMIT:
            raise _too_large()
        limiter = await _rate_limiter(route_handler)
        if limiter is not None:
            await count(limiter, client_address(connection))
        if isinstance(connection, Request):
            try:
                await connection.body()  # kept for the handler; nothing is decoded yet
            except RequestEntityTooLarge as exc:  # sent without a Content-Length
                raise _too_large() from exc

    return guard


# Logins (JSON, the OAuth2 form, the browser session) and refreshes count against
# LOGIN_ATTEMPTS_PER_MINUTE_PER_IP (only the address: no email is known before the body
# is read; the account's own check follows in AuthService); registrations against
# REGISTRATIONS_PER_HOUR_PER_IP.
login_gate = body_gate(RateLimiter.count_login_attempt)
registration_gate = body_gate(RateLimiter.check_registration)
