"""The app's request class: JSON bodies that decode but cannot be stored (a NUL in any
string) are refused before any handler, and so before the database, sees them."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ValidationException


def invalid_text_at(value: Any) -> tuple[str, str] | None:
    """Where a decoded JSON value holds text no column can store: (its path, what is
    wrong), or None. PostgreSQL's text type refuses NUL (msgspec already refuses a lone
    surrogate: it has no UTF-8 encoding). One pass over the value, keys included."""
    pending: list[tuple[str, Any]] = [("", value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            wrong = _what_is_wrong(item)
            if wrong:
                return path or "body", wrong
        elif isinstance(item, dict):
            for key, child in item.items():
                wrong = _what_is_wrong(key)
                if wrong:
                    return path or "body", f"a key {wrong}"
                pending.append((f"{path}.{key}" if path else key, child))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


def _what_is_wrong(text: str) -> str | None:
    return "holds a NUL character (\\u0000)" if "\x00" in text else None


class CheckedRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        value = await super().json()
        found = invalid_text_at(value)
        if found is not None:
            path, wrong = found
            raise ValidationException(
                f"invalid request: {path} {wrong}",
                extra=[{"key": path, "message": f"{wrong}: not accepted in any field"}],
            )
        return value
