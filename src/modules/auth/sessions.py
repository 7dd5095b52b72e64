"""Browser sessions: the chat page's login lives in an HttpOnly, SameSite=Strict cookie.

The cookie holds an access token of its own login (refresh-token family), valid as long as a
refresh token would be, and revoked like any login (logout, deactivation, a password
change). Scripts cannot read it; what they can read is the CSRF token, an HMAC of the
login's family under the service's secret, which every state-changing request made with the
cookie must echo in the `X-CSRF-Token` header. Bearer tokens and API keys never need it: a
cross-site page cannot set an Authorization header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

from litestar.datastructures import Cookie

SESSION_COOKIE = "llm_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(secret: str, family_id: uuid.UUID) -> str:
    digest = hmac.new(secret.encode(), b"csrf:" + family_id.bytes, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_matches(secret: str, family_id: uuid.UUID, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_token(secret, family_id), sent)


def session_cookie(token: str, *, max_age: int, secure: bool) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )


def cleared_session_cookie(*, secure: bool) -> Cookie:
    return session_cookie("", max_age=0, secure=secure)
