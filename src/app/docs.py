"""The OpenAPI docs, served offline: Swagger UI from files vendored in app/static (see its
VERSION), not from a CDN.

Every page under /schema carries a Content-Security-Policy and may not be framed
(clickjacking): scripts and styles come only from the service itself. Litestar's Swagger page
starts Swagger UI with an inline script holding the whole schema; ours loads a small script
from /schema instead (`swagger-init.js`), which fetches /schema/openapi.json, so the policy
needs no 'unsafe-inline'. The OAuth2 redirect page Litestar serves keeps its inline script,
allowed by its hash alone."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

from modules.web import security_headers

STATIC = Path(__file__).parent / "static"
SCHEMA = "/schema"
ASSETS = f"{SCHEMA}/assets"
SWAGGER = f"{ASSETS}/swagger-ui"
INIT_SCRIPT = "/swagger-init.js"  # under /schema


def inline_script_hashes(page: bytes) -> list[str]:
    """CSP sources ('sha256-...') allowing exactly the inline scripts of `page`."""
    scripts = re.findall(rb"<script>(.*?)</script>", page, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(s).digest()).decode()}'" for s in scripts]


# Swagger UI's own styles set element styles from script (allowed), its icons are data: URLs.
SECURITY_HEADERS = security_headers(
    scripts=tuple(inline_script_hashes(SwaggerRenderPlugin.render_oauth2_redirect())),
    images=("data:",),
    fonts=True,
)
CONTENT_SECURITY_POLICY = SECURITY_HEADERS["Content-Security-Policy"]


class OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI with no inline script or style: the page loads the vendored bundle and
    `swagger-init.js`, which reads the schema from /schema/openapi.json."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            js_url=f"{SWAGGER}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER}/swagger-ui-standalone-preset.js",
            favicon="",  # Litestar's default is an image on a CDN
            style="",
            **kwargs,
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <title>{title}</title>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <link href="{self.css_url}" rel="stylesheet">
  <script src="{self.js_url}" defer></script>
  <script src="{self.standalone_preset_js_url}" defer></script>
  <script src="{SCHEMA}{INIT_SCRIPT}" defer></script>
</head>
<body>
  <div id="swagger-container"></div>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)  # the OAuth2 redirect page
        router.register(
            get(INIT_SCRIPT, media_type="text/javascript", sync_to_thread=False)(_init_script)
        )


def _init_script() -> str:
    # Deferred scripts run in order, after the document is parsed: the bundle is there.
    options = {
        "url": f"{SCHEMA}/openapi.json",
        "dom_id": "#swagger-container",
        "deepLinking": True,
        "showExtensions": True,
        "showCommonExtensions": True,
    }
    return f""""use strict";
window.ui = SwaggerUIBundle(Object.assign({json.dumps(options)}, {{
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}}));
"""


async def _with_security_headers(response: Response[Any]) -> Response[Any]:
    response.headers.update(SECURITY_HEADERS)
    return response


def openapi_config(version: str) -> OpenAPIConfig:
    return OpenAPIConfig(
        title="llm-service",
        version=version,
        path=SCHEMA,
        render_plugins=[OfflineSwagger(path=["/", "/swagger"])],
        # Litestar fills this router with the pages, the schema files and the 404 page.
        openapi_router=Router(
            SCHEMA,
            route_handlers=[],
            include_in_schema=False,
            dto=None,
            return_dto=None,
            after_request=_with_security_headers,
        ),
    )


def assets_router() -> Router:
    return create_static_files_router(
        path=ASSETS,
        directories=[STATIC],
        include_in_schema=False,
        opt={"exclude_from_auth": True},
        after_request=_with_security_headers,
    )
