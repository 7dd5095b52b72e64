"""Every error as RFC 9457 problem details, through Litestar's problem-details plugin."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from advanced_alchemy.exceptions import DuplicateKeyError, NotFoundError
from litestar import Request, Response
from litestar.config.app import AppConfig
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.plugins import InitPlugin
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException
from redis.exceptions import RedisError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.database import database_unavailable
from app.request_log import current_request_id, request_id_for
from modules.auth import (
    ApiKeyNotAllowedError,
    ApiKeyNotFoundError,
    AuthError,
    EmailTakenError,
    PasswordPolicyError,
    RegistrationClosedError,
    WrongPasswordError,
)
from modules.conversations import ConversationNotFoundError
from modules.llm.inference import (
    BackendUnavailableError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
    QueueTimeoutError,
    UnsupportedRequestError,
)
from modules.llm.turns import InvalidTurnRequest
from modules.models.catalog import CatalogError
from modules.profiles import ProfileIdNotFoundError, ProfileNameTakenError, ProfileNotFoundError
from modules.ratelimit import RateLimitExceededError
from modules.responses import ResponseNotFoundError, ResponseNotLatestError
from modules.users import SelfLockoutError, UserNotFoundError

logger = structlog.get_logger("app.errors")


def _problem(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> ProblemDetailsException:
    # Every error names its request, so a user's report finds its log line.
    request_id = current_request_id.get()
    if request_id is not None:
        extra = {**(extra or {}), "request_id": request_id}
        # Errors raised before the request-log middleware's own send (authentication) get
        # the header here.
        headers = {**(headers or {}), "X-Request-ID": request_id}
    return ProblemDetailsException(
        status_code=status,
        title=HTTPStatus(status).phrase,
        detail=detail,
        headers=headers,
        extra=extra or None,
    )


def _body_field(key: object) -> str:
    # Litestar names the request body `data`; clients know it as the body.
    text = str(key or "")
    if text == "data":
        return "body"
    return text.removeprefix("data.")


def _from_body_validation(error: msgspec.ValidationError) -> ProblemDetailsException:
    message, _, where = str(error).partition(" - at `$.")
    key = _body_field(where.rstrip("`")) or "body"
    return _problem(
        400,
        f"invalid request: {key}: {message}",
        extra={"errors": [{"key": key, "message": message, "source": "body"}]},
    )


def _from_http_exception(exc: HTTPException) -> ProblemDetailsException:
    extra: dict[str, Any] = {}
    detail = exc.detail
    if exc.status_code == 500 and isinstance(exc.__cause__, msgspec.ValidationError):
        # Litestar 2.25 loses the location of some nested body errors and answers 500;
        # the msgspec error it chains still says where the client went wrong.
        return _from_body_validation(exc.__cause__)
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        # Name the offending fields in `detail`; keep the structured list in `errors`.
        errors = [
            {**e, "key": _body_field(e.get("key"))} if "key" in e else e
            for e in exc.extra
            if isinstance(e, dict)
        ]
        named = [f"{e.get('key') or 'body'}: {e.get('message')}" for e in errors]
        if named:
            detail = "invalid request: " + "; ".join(named)
        extra["errors"] = errors
    elif isinstance(exc.extra, dict):
        extra.update(exc.extra)
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return _problem(exc.status_code, detail, headers=headers or None, extra=extra)


def _from_auth_error(exc: AuthError) -> ProblemDetailsException:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return _problem(exc.status_code, exc.detail, headers=headers)


def _from_password_policy(exc: PasswordPolicyError) -> ProblemDetailsException:
    errors = [{"key": exc.field, "message": p} for p in exc.problems]
    return _problem(422, str(exc), extra={"errors": errors})


def _naming_field(status: int, detail: str, field: str | None) -> ProblemDetailsException:
    """A refusal whose `errors` name the field at fault, where there is one."""
    extra = {"errors": [{"key": field, "message": detail}]} if field else {}
    return _problem(status, detail, extra=extra)


def _from_invalid_turn(exc: InvalidTurnRequest) -> ProblemDetailsException:
    return _naming_field(exc.status_code, exc.detail, exc.field)


def _from_catalog_error(exc: CatalogError) -> ProblemDetailsException:
    return _naming_field(exc.status_code, exc.detail, exc.field)


def _from_unsupported(exc: UnsupportedRequestError) -> ProblemDetailsException:
    return _naming_field(400, exc.detail, exc.field)


def _from_prompt_too_long(exc: PromptTooLongError) -> ProblemDetailsException:
    counts = {"prompt_tokens": exc.prompt_tokens, "context_size": exc.context_size}
    return _problem(422, str(exc), extra=counts)


def _from_queue_full(exc: QueueFullError) -> ProblemDetailsException:
    return _problem(
        503,
        f"{exc}; retry after {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
        extra={"retry_after": exc.retry_after},
    )


def _from_rate_limit(exc: RateLimitExceededError) -> ProblemDetailsException:
    return _problem(
        429,
        str(exc),
        headers={
            "Retry-After": str(exc.retry_after),
            **(exc.quota.headers() if exc.quota is not None else {}),
        },
        extra={"limit": exc.limit, "window": exc.window, "retry_after": exc.retry_after},
    )


def _unavailable(exc: Exception) -> ProblemDetailsException:
    # Our own messages, which never carry a dependency's exception text.
    return _problem(503, str(exc), headers={"Retry-After": "5"})


def _database_down(exc: Exception) -> ProblemDetailsException:
    logger.error("database unavailable", error=str(exc))
    return _problem(503, "the database is unavailable", headers={"Retry-After": "5"})


def _database_busy(exc: Exception) -> ProblemDetailsException:
    logger.error("no database connection free", error=str(exc))
    return _problem(503, "the database is busy", headers={"Retry-After": "1"})


def _unexpected(exc: Exception) -> ProblemDetailsException:
    """What no rule names, the database's errors included: asyncpg's raw (a refused
    connect), SQLAlchemy's, advanced-alchemy's RepositoryError around either. A database
    that is busy, or that cannot be used now (`database_unavailable` decides, for every
    path: authentication's user read, a handler's query, a turn being stored), is a 503
    with Retry-After; anything else is our bug."""
    if isinstance(exc.__cause__, PoolTimeoutError):
        return _database_busy(exc.__cause__)
    if database_unavailable(exc):
        return _database_down(exc)
    return _internal(exc)


def _internal(exc: Exception) -> ProblemDetailsException:
    logger.error("unhandled error", exc_info=exc)
    return _problem(500, "internal server error")


def problem_details_config() -> ProblemDetailsConfig:
    return ProblemDetailsConfig(
        enable_for_all_http_exceptions=False,
        exception_to_problem_detail_map={
            HTTPException: _from_http_exception,
            AuthError: _from_auth_error,
            PasswordPolicyError: _from_password_policy,
            EmailTakenError: lambda exc: _problem(409, str(exc)),
            WrongPasswordError: lambda exc: _problem(422, str(exc)),
            RegistrationClosedError: lambda exc: _problem(403, str(exc)),
            ApiKeyNotAllowedError: lambda exc: _problem(403, str(exc)),
            SelfLockoutError: lambda exc: _problem(409, str(exc)),
            UserNotFoundError: lambda exc: _problem(404, str(exc)),
            ApiKeyNotFoundError: lambda exc: _problem(404, str(exc)),
            ConversationNotFoundError: lambda exc: _problem(404, str(exc)),
            ProfileIdNotFoundError: lambda exc: _problem(404, str(exc)),
            ProfileNameTakenError: lambda exc: _problem(409, str(exc)),
            ModelNotFoundError: lambda exc: _problem(
                404, str(exc), extra={"available": exc.available}
            ),
            ProfileNotFoundError: lambda exc: _problem(404, str(exc)),
            ResponseNotFoundError: lambda exc: _problem(404, str(exc)),
            ResponseNotLatestError: lambda exc: _problem(
                409, str(exc), extra={"errors": [{"key": "previous_response_id"}]}
            ),
            NotFoundError: lambda exc: _problem(404, "not found"),
            DuplicateKeyError: lambda exc: _problem(409, "a record with these values exists"),
            InvalidTurnRequest: _from_invalid_turn,
            CatalogError: _from_catalog_error,
            PromptTooLongError: _from_prompt_too_long,
            UnsupportedRequestError: _from_unsupported,
            QueueFullError: _from_queue_full,
            RateLimitExceededError: _from_rate_limit,
            QueueTimeoutError: _unavailable,
            BackendUnavailableError: _unavailable,
            RedisError: lambda exc: _problem(
                503, "the cache backend (Redis) is unavailable", headers={"Retry-After": "5"}
            ),
            PoolTimeoutError: _database_busy,
            # Bodies that decode to nothing usable are the client's mistake, named as such.
            UnicodeDecodeError: lambda exc: _problem(400, "the request body is not valid UTF-8"),
            RecursionError: lambda exc: _problem(400, "the request body nests too deeply"),
            Exception: _unexpected,  # the database's errors too (see there)
        },
    )


Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]


class UnroutedErrors(InitPlugin):
    """Errors raised before any route matched (an unknown path: 404, a method the path
    lacks: 405) meet only the app's own handlers, outside the request-log middleware.
    Here they get a request id (body and X-Request-ID), and under a prefix with an error
    shape of its own (`/v1`: OpenAI's) that shape. Runs after the problem-details plugin,
    whose handlers it wraps; routed requests keep their own."""

    def __init__(self, shaped: Mapping[str, Mapping[type[Exception], Handler]]) -> None:
        self.shaped = shaped

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        handlers = app_config.exception_handlers
        for key, handler in list(handlers.items()):
            handlers[key] = self._wrap(handler)
        return app_config

    def _wrap(self, handler: Handler) -> Handler:
        def handle(request: Request[Any, Any, Any], exc: Any) -> Response[Any]:
            state = request.scope.setdefault("state", {})
            if "request_id" not in state:  # unrouted: the request log never saw it
                state["request_id"] = request_id_for(request.scope)
                current_request_id.set(state["request_id"])
                _name_the_route(request, exc)
            for prefix, shaped in self.shaped.items():
                path = request.scope.get("path", "")
                if path == prefix or path.startswith(prefix + "/"):
                    own = next((shaped[t] for t in type(exc).__mro__ if t in shaped), None)
                    if own is not None:
                        return own(request, exc)
            return handler(request, exc)

        return handle


def _name_the_route(request: Request[Any, Any, Any], exc: Any) -> None:
    """Say what was asked for, as OpenAI's own 404 does, rather than a bare reason."""
    asked = f"{request.method} {request.scope.get('path', '')}"
    if isinstance(exc, NotFoundException):
        exc.detail = f"Invalid URL ({asked}): no such route"
    elif isinstance(exc, MethodNotAllowedException):
        exc.detail = f"Method not allowed ({asked})"
