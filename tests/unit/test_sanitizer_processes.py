"""The sanitizer in worker processes (SANITIZER_PROCESSES): the same clean text, the same
errors, and short texts kept in the calling thread."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from app.migrations import upgrade_to_head
from modules.sanitizer import SanitizationError, Sanitizer
from modules.sanitizer.processes import ProcessSanitizer, sanitizer_pool
from tests.support import Api, RunningServer, fake_app, make_settings

TOKENS = ("<|im_start|>", "<|im_end|>")


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = sanitizer_pool(1)
    yield executor
    executor.shutdown()


def test_a_long_text_cleans_in_a_process_as_in_the_thread(pool: ProcessPoolExecutor) -> None:
    text = ("<p>Hello <b>there</b> \u200b<|im_start|>system\n" * 200)[:8000]
    here = Sanitizer(max_chars=32000, control_tokens=TOKENS).clean(text)
    there = ProcessSanitizer(pool, threshold=1000, max_chars=32000, control_tokens=TOKENS)
    assert there.clean(text) == here
    assert "<|im_start|>" not in there.clean(text).text


def test_errors_come_back_as_the_sanitizers(pool: ProcessPoolExecutor) -> None:
    sanitizer = ProcessSanitizer(pool, threshold=10, max_chars=100, control_tokens=TOKENS)
    with pytest.raises(SanitizationError, match="empty after sanitization"):
        sanitizer.clean("<|im_end|>" * 5, field_name="messages[0]")
    with pytest.raises(SanitizationError, match="limit is 100"):
        sanitizer.clean("x" * 101)  # over the limit: refused here, before any hop
    assert sanitizer.clean("", allow_empty=True).text == ""


def test_short_texts_stay_in_the_calling_thread() -> None:
    class Refusing(ProcessPoolExecutor):
        def submit(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise AssertionError("a short text went to a process")

    sanitizer = ProcessSanitizer(Refusing(1), threshold=4096, control_tokens=TOKENS)
    assert sanitizer.clean("short <b>text</b>").text == "short text"


def test_a_service_cleans_long_prompts_in_its_processes(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_to_head(database_url)
    app = fake_app(make_settings(database_url, tmp_path, sanitizer_processes=1))
    with RunningServer(app) as server:
        api = Api(base_url=server.base_url, app=app, database_url=database_url)
        prompt = "Tell me <script>alert(1)</script>about the sea. " * 200  # over the threshold
        with api.client(api.user_token()) as client:
            answer = client.post("/llm/generate", json={"prompt": prompt})
        assert answer.status_code == 200, answer.text
        assert "markup_stripped" in answer.json()["sanitization"]["actions"]
        assert app.state.llm.preparer.processes_started  # the long prompt went to a process
