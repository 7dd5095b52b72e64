"""Database configuration (advanced-alchemy) and the metadata of every module's tables."""

from __future__ import annotations

from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import MetaData

# Importing the models registers their tables on advanced-alchemy's shared metadata.
from modules.auth.models import ApiKey, RefreshToken
from modules.conversations.models import Conversation, Message
from modules.users.models import User

MODELS = (User, RefreshToken, ApiKey, Conversation, Message)


def metadata() -> MetaData:
    return orm_registry.metadata


def database_config(url: str, *, echo: bool = False) -> SQLAlchemyAsyncConfig:
    is_sqlite = url.startswith("sqlite")
    engine = (
        EngineConfig(echo=echo)
        if is_sqlite
        else EngineConfig(echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=10)
    )
    return SQLAlchemyAsyncConfig(
        connection_string=url,
        engine_config=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
        create_all=False,  # Alembic owns the schema
    )
