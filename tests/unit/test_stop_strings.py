"""Stop-string search and hold-back used while streaming."""

from __future__ import annotations

from modules.llm.engine import _find_stop, _partial_stop_suffix


def test_find_stop_in_new_text() -> None:
    assert _find_stop("hello END there", ("END",), 0, 3) == 6
    assert _find_stop("hello", ("END",), 0, 3) is None
    assert _find_stop("anything", (), 0, 0) is None


def test_partial_suffix_is_held_back() -> None:
    assert _partial_stop_suffix("hello EN", ("END",)) == 2
    assert _partial_stop_suffix("hello E", ("END", "Eh")) == 1
    assert _partial_stop_suffix("hello", ("END",)) == 0
