"""No import cycles inside the package: every import counts, at module level, inside a
function or under TYPE_CHECKING, since an import hidden in a function only delays the
cycle to the call that runs it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "earlybrain"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, packages named by their folder."""
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file.

    `from pkg import x` is an import of the submodule `pkg.x` when there is one, else of
    `pkg` itself (a name its __init__ defines).
    """

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (known(a.name) for a in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.update(filter(None, [sub if sub in modules else known(base)]))
    found.discard(name)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle() -> None:
    modules = module_names()
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 200  # it read the package
    assert cycles(graph) == []


IN_FUNCTION = {"a": "from pkg import b", "b": "def f():\n    from pkg.a import x"}
TYPE_ONLY = {
    "a": "from . import b",
    "b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x",
}


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (IN_FUNCTION, [["pkg.a", "pkg.b"]]),
        (TYPE_ONLY, [["pkg.a", "pkg.b"]]),
        ({"a": "import pkg.b", "b": "import numpy"}, []),
    ],
)
def test_cycles_are_found_wherever_the_import_hides(
    tmp_path: Path, files: dict[str, str], expected: list[list[str]]
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / f"{name}.py").write_text(text + "\n")
    modules = module_names(pkg)
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert cycles(graph) == expected
