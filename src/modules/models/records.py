"""The model catalog's rows: models added at run time, shared by every replica.

A row says where a model comes from (a file under MODELS_DIR, a download, or a remote
server) and how to load it; what each replica has made of it (downloading, loading,
loaded, failed) is that replica's own state, in its model registry. A row's alias never
changes: a model is replaced by deleting it and adding it again."""

from __future__ import annotations

import uuid
from typing import Any

from advanced_alchemy.base import UUIDAuditBase
from advanced_alchemy.types import GUID
from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column


class CatalogModel(UUIDAuditBase):
    __tablename__ = "catalog_models"

    alias: Mapped[str] = mapped_column(String(64), unique=True)
    # "path": a GGUF under MODELS_DIR; "url": a GGUF downloaded into MODELS_DIR/downloads;
    # "remote": an OpenAI-compatible server ("http://host:port/v1#model").
    source: Mapped[str] = mapped_column(String(8))
    path: Mapped[str | None] = mapped_column(String(1024), default=None)
    url: Mapped[str | None] = mapped_column(String(2048), default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    remote: Mapped[str | None] = mapped_column(String(2048), default=None)
    api_key: Mapped[str | None] = mapped_column(String(512), default=None)  # never shown
    # Load options over the settings': context_size, slots, gpu_layers.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(GUID, default=None)
