"""Stop-string search and hold-back used while streaming, and the shared-prefix helper."""

from __future__ import annotations

from modules.llm.inference.sequences import common_prefix, find_stop, partial_stop_suffix


def test_find_stop_in_new_text() -> None:
    assert find_stop("hello END there", ("END",), 0, 3) == 6
    assert find_stop("hello", ("END",), 0, 3) is None
    assert find_stop("anything", (), 0, 0) is None


def test_find_stop_only_looks_past_what_was_emitted() -> None:
    # "END" at 0 was emitted long ago; only the window near the new text is searched.
    assert find_stop("END and more text END", ("END",), 15, 3) == 18


def test_partial_suffix_is_held_back() -> None:
    assert partial_stop_suffix("hello EN", ("END",)) == 2
    assert partial_stop_suffix("hello E", ("END", "Eh")) == 1
    assert partial_stop_suffix("hello", ("END",)) == 0


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [5]) == 1
