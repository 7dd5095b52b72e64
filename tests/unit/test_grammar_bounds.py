"""The grammar check before llama.cpp parses a grammar: repetition bounds its parser would
spin on or blow up with are refused; braces inside literals, classes and comments are not
bounds."""

from __future__ import annotations

import pytest

from modules.llm.inference.llamacpp.sampler import _bounds_ok


@pytest.mark.parametrize(
    "grammar",
    [
        'root ::= "a"{2,3}',
        'root ::= "a"{3}',
        'root ::= "a"{0,}',
        'root ::= "{3,2}" [{}] # {9,1}\n',
        'root ::= "\\"{5,1}"',
        'root ::= "a"{0,1000}',
    ],
)
def test_bounds_llama_cpp_parses(grammar: str) -> None:
    assert _bounds_ok(grammar)


@pytest.mark.parametrize(
    "grammar",
    ['root ::= "a"{3,2}', 'root ::= "a"{100000000}', 'root ::= "a"{0,99999}', "root ::= x{5001,}"],
)
def test_bounds_llama_cpp_would_not_survive(grammar: str) -> None:
    assert not _bounds_ok(grammar)
