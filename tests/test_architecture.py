"""The package's shape: no import cycle between its modules (function-level and TYPE_CHECKING imports counted),
the layers of pyproject.toml's import-linter contract kept, and one docstring per module saying its job."""

from __future__ import annotations

import ast

import grimp
from conftest import ROOT
from importlinter.cli import lint_imports


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), i.e. each import cycle."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = []
            while True:
                n = stack.pop()
                on_stack.discard(n)
                group.append(n)
                if n == m:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles():
    graph = grimp.build_graph("competition", exclude_type_checking_imports=False, cache_dir=None)
    # The package's own __init__ loads the API lazily (PEP 562): an edge to the top, not a layer, so left out.
    graph.remove_module("competition")
    assert _cycles(graph) == []


def test_a_cycle_is_found(tmp_path, monkeypatch):
    """The check above can fail: two modules importing each other inside functions are a cycle."""
    pkg = tmp_path / "cyclic"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cyclic import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", exclude_type_checking_imports=False, cache_dir=None)
    assert _cycles(graph) == [["cyclic.a", "cyclic.b"]]


def test_layers_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def test_every_module_says_its_job():
    for path in sorted((ROOT / "competition").rglob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.split()) >= 3, f"{path.relative_to(ROOT)}: no docstring saying the module's job"
