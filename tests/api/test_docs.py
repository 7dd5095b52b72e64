"""The API docs work offline: the pages load only what the service itself serves."""

from __future__ import annotations

import re

from tests.support import Api


def test_docs_pages_load_nothing_from_elsewhere(api: Api) -> None:
    with api.client() as client:
        for page in ("/schema", "/schema/swagger"):
            response = client.get(page)
            assert response.status_code == 200
            urls = re.findall(r'(?:src|href)="([^"]+)"', response.text)
            assert urls, page
            assert all(url.startswith("/schema/assets/") for url in urls), urls
            for url in urls:
                asset = client.get(url)
                assert asset.status_code == 200, url
                assert len(asset.content) > 10_000, url
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "llm-service"
