"""The chat page for people, served by the service itself at `/`: plain HTML, CSS and
JavaScript from `static/` (no build step, no CDN; one vendored parser, markdown-it, whose
tokens the page turns into DOM nodes itself), under a strict Content-Security-Policy. It
talks to the same JSON API as any client, with the browser session cookie and CSRF token
of /auth/session instead of a bearer token."""

from modules.web.controller import create_router, security_headers

__all__ = ["create_router", "security_headers"]
