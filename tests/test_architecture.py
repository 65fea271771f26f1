"""The engine's architecture, read from its source: its import graph has no cycle and never reaches Streamlit,
no module is over 500 lines and no function over 80, and every subpackage says what it holds.

The graph is built with ``ast``, from every import in a file: at the top, inside function bodies (where the
``jobs`` <-> ``sweep`` cycle once ran) and under ``if TYPE_CHECKING``. An edge joins two engine modules only;
``from rlhf_engine.core import distributed`` is an edge to ``rlhf_engine.core.distributed``, importing a package is
an edge to its ``__init__``. Imports by a computed name (``importlib.import_module(path)``) cannot be read here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "rlhf_engine"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def module_files(root: Path) -> dict[str, Path]:
    """{dotted module name: file} for every ``.py`` file of the package at ``root`` (a package is its __init__)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` statement imports from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    parts = (module if is_package else module.rpartition(".")[0]).split(".")
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module imports anywhere in its file: ``import X`` is X;
    ``from X import y`` is X.y when that is a module, else X."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, is_package)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    found.add(target)
                elif base in known:
                    found.add(base)
    found.discard(module)  # a package's __init__ importing a name of its own: no edge
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the modules of the same package it imports} for the package at ``root``."""
    files = module_files(root)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = imported_modules(tree, module, path.name == "__init__.py", set(files))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None when it has none (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    for start in sorted(graph):
        if colour[start] != WHITE:
            continue
        colour[start] = GREY
        stack = [(start, iter(sorted(graph[start])))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = BLACK
                stack.pop()
            elif colour.get(child, WHITE) == GREY:
                path = [entry[0] for entry in stack]
                return path[path.index(child):] + [child]
            elif colour.get(child, WHITE) == WHITE:
                colour[child] = GREY
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _qualname(tree: ast.AST, target: ast.AST) -> str:
    """``Class.method`` / ``outer.inner`` for a function node of ``tree``."""
    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            name = f"{prefix}{child.name}" if isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else None
            if child is target:
                return name
            found = visit(child, f"{name}." if name else prefix)
            if found:
                return found
        return None
    return visit(tree, "") or getattr(target, "name", "?")


# -- the engine ---------------------------------------------------------------------------------------------------

def test_the_graph_covers_every_engine_module():
    graph = import_graph(ENGINE)
    assert len(graph) == len(list(ENGINE.rglob("*.py")))
    assert "rlhf_engine.core.distributed" in graph["rlhf_engine.runs.job"]  # imported inside Job.__init__
    assert {"rlhf_engine.cli.tools", "rlhf_engine.cli.train"} <= graph["rlhf_engine.cli"]  # `from . import ...`


def test_the_engine_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph(ENGINE))
    assert cycle is None, "the engine's modules import each other in a cycle: " + " -> ".join(cycle)


def test_the_engine_never_imports_streamlit():
    offenders = []
    for module, path in module_files(ENGINE).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            offenders += [f"{module}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert not offenders, "the engine must never import Streamlit:\n" + "\n".join(offenders)


def test_no_module_is_over_500_lines():
    sizes = {module: len(path.read_text(encoding="utf-8").splitlines()) for module, path in
             module_files(ENGINE).items()}
    over = [f"{module}: {lines} lines" for module, lines in sorted(sizes.items()) if lines > MAX_MODULE_LINES]
    assert not over, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(over)


def test_no_function_is_over_80_lines():
    over = []
    for module, path in module_files(ENGINE).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in _functions(tree):
            lines = function.end_lineno - function.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                over.append(f"{module}.{_qualname(tree, function)} (line {function.lineno}): {lines} lines")
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(sorted(over))


def test_every_subpackage_has_an_init_with_a_docstring():
    folders = sorted({path.parent for path in ENGINE.rglob("*.py")} - {ENGINE})
    assert folders, "no subpackages found"
    missing = []
    for folder in folders:
        init = folder / "__init__.py"
        if not init.is_file():
            missing.append(f"{folder.relative_to(ENGINE.parent)}: no __init__.py")
        elif not (ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or "").strip():
            missing.append(f"{init.relative_to(ENGINE.parent)}: no docstring")
    assert not missing, "subpackages must say what they hold:\n" + "\n".join(missing)


# -- the checks can fail --------------------------------------------------------------------------------------------

def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None  # a diamond is no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert find_cycle({"s": {"s"}}) == ["s", "s"]


def test_import_graph_sees_function_body_relative_and_type_checking_imports(tmp_path):
    """A made-up package whose only cycle runs through an import inside a function, as jobs <-> sweep did."""
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Toy."""\n')
    (pkg / "sub" / "__init__.py").write_text('"""Sub."""\nfrom . import leaf\n')
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "jobs.py").write_text("from toy.sub import leaf\n\n"
                                 "def start():\n    from .sweep import run\n    return run\n")
    (pkg / "sweep.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import toy.sub\n"
                                  "def run():\n    import toy.jobs\n")
    graph = import_graph(pkg)
    assert graph == {"toy": set(), "toy.sub": {"toy.sub.leaf"}, "toy.sub.leaf": set(),
                     "toy.jobs": {"toy.sub.leaf", "toy.sweep"}, "toy.sweep": {"toy.sub", "toy.jobs"}}
    assert find_cycle(graph) == ["toy.jobs", "toy.sweep", "toy.jobs"]

