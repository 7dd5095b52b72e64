"""Stored history is cleaned again before every turn, each text once per owner, and its
tokens counted once per model and role."""

from __future__ import annotations

from modules.llm.inference import ChatMessage
from modules.llm.turns.preparation import CleanedHistory
from modules.sanitizer import SanitizationError, Sanitizer


class CountingSanitizer(Sanitizer):
    def __init__(self) -> None:
        super().__init__(max_chars=100)
        self.calls = 0

    def clean(self, text: str, *, field_name: str = "message"):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().clean(text, field_name=field_name)


def test_each_text_is_cleaned_once_per_owner() -> None:
    sanitizer = CountingSanitizer()
    history = CleanedHistory()
    for _ in range(3):
        assert history.clean("ada", sanitizer, "Hello <b>there</b>") == "Hello there"
    assert sanitizer.calls == 1
    # Another owner's turn cleans it again: one user's history never speeds up another's.
    assert history.clean("bob", sanitizer, "Hello <b>there</b>") == "Hello there"
    assert sanitizer.calls == 2


def test_a_refused_text_stays_refused() -> None:
    sanitizer = CountingSanitizer()
    history = CleanedHistory()
    too_long = "x" * 101
    try:
        sanitizer.clean(too_long)
        raise AssertionError("the sanitizer should refuse it")
    except SanitizationError:
        pass
    assert history.clean("ada", sanitizer, too_long) is None
    assert history.clean("ada", sanitizer, too_long) is None
    assert sanitizer.calls == 2  # the check above, then once through the cache


def test_the_least_recently_used_texts_leave_beyond_the_budget() -> None:
    sanitizer = CountingSanitizer()
    history = CleanedHistory(budget_chars=40)  # room for two 10-character texts, cleaned
    for text in ("aaaaaaaaaa", "bbbbbbbbbb", "aaaaaaaaaa", "cccccccccc"):
        history.clean("ada", sanitizer, text)
    assert history.used <= 40
    calls = sanitizer.calls
    history.clean("ada", sanitizer, "aaaaaaaaaa")  # used more recently than b: still kept
    assert sanitizer.calls == calls
    history.clean("ada", sanitizer, "bbbbbbbbbb")  # dropped: cleaned again
    assert sanitizer.calls == calls + 1


def test_each_texts_tokens_are_counted_once_per_model_and_role() -> None:
    sanitizer = CountingSanitizer()
    history = CleanedHistory()
    counted: list[ChatMessage] = []

    def count(message: ChatMessage) -> int:
        counted.append(message)
        return len(message.content.split()) + 2

    hello = ChatMessage("user", "Hello <b>there</b>")
    for _ in range(3):
        assert history.measure("ada", sanitizer, hello, "m1", count) == (
            ChatMessage("user", "Hello there"),
            4,
        )
    assert counted == [ChatMessage("user", "Hello there")]  # the cleaned text, once
    assert sanitizer.calls == 1
    # The same text in another role, or for another model, is counted again; not cleaned.
    history.measure("ada", sanitizer, ChatMessage("assistant", hello.content), "m1", count)
    history.measure("ada", sanitizer, hello, "m2", count)
    assert len(counted) == 3
    assert sanitizer.calls == 1
    # A refused text is never counted.
    assert history.measure("ada", sanitizer, ChatMessage("user", "x" * 101), "m1", count) is None
    assert len(counted) == 3
