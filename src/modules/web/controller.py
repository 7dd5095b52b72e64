"""`/` (the page) and `/static/*` (its script and styles), with the page's security headers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Controller, HttpMethod, MediaType, Response, Router, route
from litestar.response import File
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"


def security_headers(
    *, scripts: tuple[str, ...] = (), images: tuple[str, ...] = (), fonts: bool = False
) -> dict[str, str]:
    """The headers of every HTML page the service serves: no inline script or style, no
    eval, nothing from another origin; the page may not be framed (clickjacking) and sends
    no Referer. `scripts` and `images` add sources (an inline script's hash, data: URLs)."""
    policy = "; ".join(
        (
            "default-src 'none'",
            " ".join(("script-src 'self'", *scripts)),
            "style-src 'self'",
            " ".join(("img-src 'self'", *images)),
            *(("font-src 'self'",) if fonts else ()),
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


SECURITY_HEADERS = security_headers()


async def _with_security_headers(response: Response[Any]) -> Response[Any]:
    # An after_request hook: the static files router ignores its parents' response_headers.
    response.headers.update(SECURITY_HEADERS)
    return response


class ChatPageController(Controller):
    path = "/"
    include_in_schema = False

    @route("/", http_method=[HttpMethod.GET, HttpMethod.HEAD], exclude_from_auth=True)
    async def page(self) -> File:
        """The chat page; it finds out who is logged in from GET /auth/session."""
        return File(
            STATIC / "index.html",
            content_disposition_type="inline",
            media_type=MediaType.HTML,  # Litestar adds the charset
        )


def create_router() -> Router:
    assets = create_static_files_router(
        path="/static",
        directories=[STATIC],
        include_in_schema=False,
        opt={"exclude_from_auth": True},
        after_request=_with_security_headers,
    )
    return Router(
        path="/",
        route_handlers=[ChatPageController, assets],
        after_request=_with_security_headers,
    )
