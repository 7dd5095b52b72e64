"""The remote backend's pure parts: the control strings sent models must never receive, and
the circuit breaker."""

from __future__ import annotations

import pytest

from modules.llm.inference.remote import REMOTE_CONTROL_TOKENS, CircuitBreaker
from modules.sanitizer import Sanitizer


@pytest.mark.parametrize("token", REMOTE_CONTROL_TOKENS)
def test_every_family_control_string_is_removed(token: str) -> None:
    sanitizer = Sanitizer(control_tokens=REMOTE_CONTROL_TOKENS)
    cleaned = sanitizer.clean(f"before {token} after").text
    assert token not in cleaned
    assert cleaned.startswith("before") and cleaned.endswith("after")  # noqa: PT018


def test_the_families_are_all_there() -> None:
    for family_marker in ("<|im_start|>", "[INST]", "<|eot_id|>", "<start_of_turn>", "<|end|>",
                          "<｜Assistant｜>", "<tool_call>"):  # fmt: skip
        assert family_marker in REMOTE_CONTROL_TOKENS


def test_the_breaker_opens_after_failures_in_a_row_and_closes_on_success() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=60)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # the count is of failures in a row
    breaker.failed()
    breaker.failed()
    assert not breaker.is_open
    breaker.failed()
    assert breaker.is_open
    breaker.open_until = 0  # the cooldown has passed: one request may try
    assert not breaker.is_open
    breaker.succeeded()
    assert breaker.failures == 0
