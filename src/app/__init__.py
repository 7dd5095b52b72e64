"""The application: factory, lifespan, DI wiring, error mapping, CLI."""

from app.factory import create_app

__all__ = ["create_app"]
