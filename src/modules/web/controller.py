"""`/` (the page) and `/static/*` (its script and styles), with the page's security headers."""

from __future__ import annotations

from pathlib import Path

from litestar import Controller, Router, get
from litestar.datastructures import ResponseHeader
from litestar.response import File
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"

# No inline script or style, no eval, nothing from another origin; the page may not be
# framed (clickjacking) and sends no Referer.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="no-referrer"),
    ResponseHeader(name="X-Frame-Options", value="DENY"),
]


class ChatPageController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", exclude_from_auth=True, cache=False)
    async def page(self) -> File:
        """The chat page; it finds out who is logged in from GET /auth/session."""
        return File(
            STATIC / "index.html",
            content_disposition_type="inline",
            media_type="text/html; charset=utf-8",
        )


def create_router() -> Router:
    assets = create_static_files_router(
        path="/static",
        directories=[STATIC],
        include_in_schema=False,
        opt={"exclude_from_auth": True},
    )
    return Router(
        path="/",
        route_handlers=[ChatPageController, assets],
        response_headers=SECURITY_HEADERS,
    )
