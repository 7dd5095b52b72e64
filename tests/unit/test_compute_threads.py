"""llama.cpp's compute threads sleep while they wait, unless told to spin: set by
`llm-service serve` before llama.cpp (and OpenMP with it) is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.compute_threads import configure_thread_waiting

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    # As in the CLI before its imports: llama.cpp not loaded yet (the test process may have).
    monkeypatch.delitem(sys.modules, "llama_cpp", raising=False)


@pytest.mark.usefixtures("clean_environment")
def test_sleep_sets_the_passive_policy() -> None:
    assert configure_thread_waiting("sleep")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


@pytest.mark.usefixtures("clean_environment")
def test_spin_leaves_openmp_its_default() -> None:
    assert configure_thread_waiting("spin")
    assert "OMP_WAIT_POLICY" not in os.environ


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize(
    ("name", "value"), [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "1000")]
)
def test_an_operators_openmp_variable_wins(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    configure_thread_waiting("sleep")
    assert os.environ[name] == value
    if name != "OMP_WAIT_POLICY":
        assert "OMP_WAIT_POLICY" not in os.environ


def test_too_late_once_llama_cpp_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setitem(sys.modules, "llama_cpp", sys.modules.get("llama_cpp", object()))
    assert not configure_thread_waiting("sleep")
    assert "OMP_WAIT_POLICY" not in os.environ


def test_the_cli_loads_llama_cpp_only_after_configuring() -> None:
    # `import app.cli` (the console script's first step) must not load llama.cpp: the
    # policy would be read before serve() sets it.
    code = "import sys, app.cli; sys.exit('llama_cpp' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0
