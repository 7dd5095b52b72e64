"""The application: factory, lifespan, DI wiring, error mapping, CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.factory import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, not with the package: `llm-service serve` configures the process
    # (app/compute_threads.py) before anything loads llama.cpp.
    if name == "create_app":
        from app.factory import create_app

        return create_app
    raise AttributeError(f"module 'app' has no attribute {name!r}")
