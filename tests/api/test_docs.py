"""The API docs work offline: the pages load only what the service itself serves. Every HTML
page the service serves (the chat page, the docs, their error pages) has a
Content-Security-Policy and cannot be framed."""

from __future__ import annotations

import mimetypes
import re
import uuid

from litestar.routes import HTTPRoute

from app import docs
from modules.web import controller as web
from tests.support import Api

# The routers that serve files from a directory, by their path: the HTML files among them
# are pages too.
STATIC_DIRECTORIES = {"/schema/assets": docs.STATIC, "/static": web.STATIC}


def test_docs_pages_load_nothing_from_elsewhere(api: Api) -> None:
    with api.client() as client:
        for page in ("/schema", "/schema/swagger"):
            response = client.get(page)
            assert response.status_code == 200
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
            assert urls, page
            assert all(url.startswith("/schema/") for url in urls), urls
            assert "<script>" not in response.text  # no inline script: see the CSP
            for url in urls:
                asset = client.get(url)
                assert asset.status_code == 200, url
                if url.startswith("/schema/assets/"):
                    assert len(asset.content) > 10_000, url
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "llm-service"


def html_pages(api: Api) -> list[str]:
    """A concrete path for every GET route (parameters filled in), and every HTML file of the
    static directories."""
    paths: list[str] = []
    for route in api.app.routes:
        if not isinstance(route, HTTPRoute) or "GET" not in route.methods:
            continue
        if route.path.endswith("{file_path:path}"):
            prefix = route.path.removesuffix("/{file_path:path}")
            assert prefix in STATIC_DIRECTORIES, f"{route.path}: which directory does it serve?"
            directory = STATIC_DIRECTORIES[prefix]
            paths += [
                f"{prefix}/{file.relative_to(directory).as_posix()}"
                for file in directory.rglob("*")
                if mimetypes.guess_type(file.name)[0] == "text/html"
            ]
            continue
        path = re.sub(r"\{[^}:]+:uuid\}", str(uuid.uuid4()), route.path)
        paths.append(re.sub(r"\{[^}]+\}", "no-such-page", path))
    return paths


def test_every_html_page_has_a_csp_and_cannot_be_framed(api: Api) -> None:
    served: dict[str, int] = {}
    with api.client() as client:
        for path in html_pages(api):
            response = client.get(path)
            if not response.headers.get("content-type", "").startswith("text/html"):
                continue
            served[path] = response.status_code
            policy = response.headers.get("content-security-policy", "")
            directives = {
                name: sources
                for name, _, sources in (part.strip().partition(" ") for part in policy.split(";"))
            }
            assert directives.get("frame-ancestors") == "'none'", (path, policy)
            assert response.headers.get("x-frame-options") == "DENY", path
            assert response.headers.get("x-content-type-options") == "nosniff", path
            assert directives.get("default-src") == "'none'", (path, policy)
            for source in ("script-src", "style-src"):
                assert "'unsafe-inline'" not in directives.get(source, ""), (path, policy)
                assert "'unsafe-eval'" not in directives.get(source, ""), (path, policy)
    # The enumeration found the pages there are (a route that stops serving HTML, or a new
    # page, shows here).
    assert {"/", "/schema", "/schema/swagger", "/schema/oauth2-redirect.html"} <= set(served)
    assert "/static/index.html" in served
    assert served["/schema/no-such-page"] == 404  # the docs' HTML 404 page


def test_the_docs_csp_allows_only_the_inline_script_it_names() -> None:
    # Litestar's OAuth2 redirect page keeps its inline script: the policy names its hash,
    # and no other inline script runs.
    page = docs.SwaggerRenderPlugin.render_oauth2_redirect()
    (script,) = re.findall(rb"<script>(.*?)</script>", page, flags=re.DOTALL)
    assert docs.inline_script_hashes(page)[0] in docs.CONTENT_SECURITY_POLICY
    assert docs.CONTENT_SECURITY_POLICY.count("'sha256-") == 1
    assert script.strip()
