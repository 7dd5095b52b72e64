"""The module boundaries, checked by parsing the imports: no cycles between packages, users
below auth, and an inference layer with no web or database code."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
MODULES = SRC / "modules"
# The llm module's layers count as packages of their own.
LAYERED = {"llm": ("inference", "turns", "api")}


def package_of(module: str) -> str | None:
    """`modules.llm.turns.service` -> `llm.turns`; `modules.users.models` -> `users`."""
    parts = module.split(".")
    if parts[0] != "modules" or len(parts) < 2:
        return None
    top = parts[1]
    if top in LAYERED and len(parts) > 2 and parts[2] in LAYERED[top]:
        return f"{top}.{parts[2]}"
    return top


def imports_of(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def module_name(path: Path) -> str:
    relative = path.relative_to(SRC).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in MODULES.rglob("*.py"):
        source = package_of(module_name(path))
        if source is None:
            continue
        edges.setdefault(source, set())
        for imported in imports_of(path):
            target = package_of(imported)
            if (
                target is not None
                and target != source
                and (MODULES / target.replace(".", "/")).exists()
            ):
                edges[source].add(target)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_between_packages() -> None:
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("users", "auth"),
        ("llm.inference", "llm.turns"),
        ("llm.inference", "llm.api"),
        ("llm.turns", "llm.api"),
        ("llm", "profiles"),
        ("llm.turns", "profiles"),
    ],
)
def test_dependencies_point_one_way(package: str, forbidden: str) -> None:
    assert forbidden not in graph().get(package, set())


def test_inference_has_no_web_or_database_code() -> None:
    for path in (MODULES / "llm" / "inference").rglob("*.py"):
        for imported in imports_of(path):
            root = imported.split(".")[0]
            assert root not in {"litestar", "sqlalchemy", "advanced_alchemy", "redis"}, path
            assert package_of(imported) in (None, "llm.inference", "config"), (path, imported)
