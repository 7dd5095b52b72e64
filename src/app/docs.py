"""The OpenAPI docs, served offline: Swagger UI from files vendored in app/static (see its
VERSION), not from a CDN."""

from __future__ import annotations

from pathlib import Path

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"
ASSETS = "/schema/assets"


def openapi_config(version: str) -> OpenAPIConfig:
    swagger = f"{ASSETS}/swagger-ui"
    return OpenAPIConfig(
        title="llm-service",
        version=version,
        path="/schema",
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{swagger}/swagger-ui-bundle.js",
                css_url=f"{swagger}/swagger-ui.css",
                standalone_preset_js_url=f"{swagger}/swagger-ui-standalone-preset.js",
            )
        ],
    )


def assets_router() -> Router:
    return create_static_files_router(
        path=ASSETS, directories=[STATIC], include_in_schema=False, opt={"exclude_from_auth": True}
    )
