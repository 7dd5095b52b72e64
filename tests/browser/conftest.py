"""The chat page in a real browser: Debian's headless Chromium driven by Playwright, against
the real app on a real port and PostgreSQL, with the fake inference backend (the page is
what is under test, not the model)."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from app.migrations import upgrade_to_head
from modules.config import default_model_path
from tests.api.conftest import FakeApi
from tests.conftest import admin_execute
from tests.fakes import FakeBackend, FakeBackends
from tests.support import FileServer, RunningServer, fake_app, make_settings

T = TypeVar("T")


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if found is None:
        pytest.fail(
            "chromium is not installed: run scripts/ensure-chromium.sh (make test does), "
            "or apt-get install chromium"
        )
    return found


@pytest.fixture(scope="module")
def playwright(site: FakeApi) -> Iterator[Playwright]:
    # Playwright's sync API keeps an event loop running on this thread while it is open:
    # what uses asyncio.run (the database's set-up, `off_loop` helpers, other modules'
    # async tests in this worker) runs before it, on another thread, or after the module.
    with sync_playwright() as driver:
        yield driver


def off_loop(function: Callable[..., T], *args: Any) -> T:
    """Call `function` on another thread, which has no running event loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=chromium_path(),
        headless=True,
        # As root in a container, Chromium's sandbox cannot start.
        args=["--no-sandbox", "--disable-dev-shm-usage"],
    )
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """The bundled GGUF on a slow loopback server (a megabyte every 20 ms), for the admin's
    model view to download with a progress bar."""
    root = tmp_path_factory.mktemp("served-models")
    model = default_model_path()
    assert model is not None
    shutil.copy(model, root / "smol.gguf")
    with FileServer(root, chunk_delay=0.02) as files:
        yield files


@pytest.fixture(scope="session")
def site(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, model_files: FileServer
) -> Iterator[FakeApi]:
    # A database of its own: the models an admin adds here are not the other apps'.
    name = f"llm_service_browser_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    database_url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade_to_head(database_url)
    backends = FakeBackends(parallel=4, queue_size=4, token_delay=0.02, answer_tokens=12)
    settings = make_settings(
        database_url,
        tmp_path_factory.mktemp("browser"),
        models_dir=str(tmp_path_factory.mktemp("browser-models")),
        model_download_prefixes=f"{model_files.base_url}/",
        # The page sends no max_tokens unless asked: long answers, for Stop to cut.
        llm_default_max_tokens=512,
        # Limits a person might have, far above what these tests send: the Account view's
        # usage shows them.
        rate_limit_requests_per_minute=600,
        rate_limit_tokens_per_minute=200_000,
        rate_limit_tokens_per_day=5_000_000,
    )
    app = fake_app(settings, backends)
    try:
        with RunningServer(app) as server:
            site = FakeApi(base_url=server.base_url, app=app, database_url=database_url)
            site.backends = backends
            yield site
    finally:
        asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# Chromium logs every 4xx answer to fetch() as a console error; the page expects some (the
# session check before logging in, a wrong password). Any other console error fails a test:
# a CSP violation, a script's own error.
EXPECTED_REFUSAL = re.compile(
    r"^Failed to load resource: the server responded with a status of 4\d\d"
)


@contextmanager
def open_page(browser: Browser, site: FakeApi, **options: Any) -> Iterator[Page]:
    """A page in a fresh browser profile (no cookies), at desktop size unless `options` say
    otherwise; on leaving, it fails on any page error or console error it saw (a CSP
    violation is one)."""
    options.setdefault("viewport", {"width": 1280, "height": 800})
    context = browser.new_context(base_url=site.base_url, **options)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and not EXPECTED_REFUSAL.match(message.text)
            else None
        ),
    )
    yield page
    context.close()
    assert not problems, problems


@pytest.fixture
def page(browser: Browser, site: FakeApi) -> Iterator[Page]:
    """A fresh browser profile (no cookies) per test, at desktop size."""
    with open_page(browser, site) as page:
        yield page


@pytest.fixture
def backend(site: FakeApi) -> Iterator[FakeBackend]:
    """The default model's fake backend, put back as it was after the test."""
    backend = site.backend
    saved = (backend.script, backend.pieces, backend.answer_tokens, backend.token_delay)
    yield backend
    backend.script, backend.pieces, backend.answer_tokens, backend.token_delay = saved
