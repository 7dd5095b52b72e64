"""Errors on /v1 in OpenAI's shape (`{"error": {message, type, param, code}}`), which the
official clients understand; every other error of the app is converted to it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsException

Handler = Callable[[Request[Any, Any, Any], Any], Response[Any]]
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `([^`]+)`")
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


@dataclass
class OpenAIError(Exception):
    message: str
    status: int = 400
    param: str | None = None
    code: str | None = None
    error_type: str = "invalid_request_error"
    headers: dict[str, str] | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        error = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        if self.request_id is not None:
            error["request_id"] = self.request_id
        return {"error": error}


def from_validation(message: str, where: str) -> OpenAIError:
    """A body that does not fit the request schema (msgspec's message and JSON path)."""
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown:
        name = unknown.group(1)
        return OpenAIError(
            f"Unrecognized request argument supplied: {name}",
            param=name,
            code="unknown_parameter",
        )
    param = where.removeprefix("$.").removeprefix("data.").strip("`$.") or None
    return OpenAIError(
        f"Invalid value for '{param}': {message}" if param else message,
        param=param,
        code="invalid_value",
    )


def _from_problem(problem: ProblemDetailsException) -> OpenAIError:
    status = problem.status_code
    error_type = _ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    extra = problem.extra if isinstance(problem.extra, dict) else {}
    errors = extra.get("errors") or [{}]
    param = errors[0].get("key") if isinstance(errors[0], dict) else None
    return OpenAIError(
        problem.detail,
        status=status,
        param=param,
        error_type=error_type,
        headers=dict(problem.headers or {}) or None,
        request_id=extra.get("request_id"),
    )


def _respond(error: OpenAIError) -> Response[Any]:
    return Response(error.body(), status_code=error.status, headers=error.headers)


def _validation(exc: HTTPException) -> OpenAIError | None:
    cause = exc.__cause__
    if isinstance(cause, msgspec.ValidationError):
        message, _, where = str(cause).partition(" - at `")
        return from_validation(message, where.rstrip("`"))
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        first = exc.extra[0] if isinstance(exc.extra[0], dict) else {}
        return from_validation(str(first.get("message", exc.detail)), str(first.get("key", "")))
    return None


def openai_exception_handlers(
    to_problem: Mapping[type[Exception], Callable[[Any], ProblemDetailsException]],
) -> dict[type[Exception], Handler]:
    """The app's error mapping, answered in OpenAI's shape."""

    def handler_for(convert: Callable[[Any], ProblemDetailsException]) -> Handler:
        def handle(_: Request[Any, Any, Any], exc: Any) -> Response[Any]:
            if isinstance(exc, HTTPException) and exc.status_code in (400, 500):
                invalid = _validation(exc)
                if invalid is not None:
                    return _respond(invalid)
            return _respond(_from_problem(convert(exc)))

        return handle

    handlers: dict[type[Exception], Handler] = {
        exc_type: handler_for(convert) for exc_type, convert in to_problem.items()
    }
    handlers[OpenAIError] = lambda _, exc: _respond(exc)
    return handlers
