"""The package's import graph: no cycles, and no layer imports one above it.

Layers, bottom to top (DESIGN.md, "Layers"):
1. core: everything in ``fer_core`` outside the three below (data, sampling, losses, models,
   train, console, ...);
2. ``fer_core.study``;
3. ``fer_core.report``;
4. ``fer_core.cli``: the top; nothing imports it.

Every ``import`` / ``from ... import`` anywhere in a file counts, also inside functions and
``TYPE_CHECKING`` blocks: a lazy import is still a dependency. A package's ``__init__`` is a
node of its own. Only imports between ``fer_core`` modules are edges.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fer_core

PACKAGE = Path(fer_core.__file__).parent
LAYERS = {"core": 1, "study": 2, "report": 3, "cli": 4}


def module_names(root: Path, package: str = "fer_core") -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (``pkg/__init__.py`` -> ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` lives in: itself, or the nearest enclosing module (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path = PACKAGE, package: str = "fer_core") -> dict[str, set[str]]:
    """Module -> the package's modules it imports (every Import/ImportFrom node in the file)."""
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]  # the package a relative import starts from
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base_parts = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(base_parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                # ``from pkg import mod`` imports the module ``pkg.mod``; ``from mod import name`` imports ``mod``
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    graph[name].add(owner)
    return graph


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return LAYERS.get(top, LAYERS["core"])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One concrete cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [" -> ".join(_one_cycle(graph, comp)) for comp in sorted(components)]


def _one_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = comp[0], set(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return comp  # unreachable for a strongly connected component


def test_no_import_cycles_and_no_upward_imports() -> None:
    graph = import_graph()
    violations = [f"cycle: {c}" for c in cycles(graph)] + [f"upward import: {e}" for e in upward_imports(graph)]
    assert violations == [], "layer violations:\n" + "\n".join(violations)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Module-level, function-level, relative and ``from pkg import module`` imports are all edges."""
    pkg = tmp_path / "fer_core"
    (pkg / "study").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "study" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("from fer_core.study import runner\n")
    (pkg / "models.py").write_text("def f():\n    from .study.runner import go\n    return go\n")
    (pkg / "study" / "runner.py").write_text("import fer_core.models\nfrom . import helper\n")
    (pkg / "study" / "helper.py").write_text("x = 1\n")
    graph = import_graph(pkg)
    assert graph["fer_core.cli"] == {"fer_core.study.runner"}
    assert graph["fer_core.models"] == {"fer_core.study.runner"}
    assert graph["fer_core.study.runner"] == {"fer_core.models", "fer_core.study.helper"}
    assert upward_imports(graph) == ["fer_core.models -> fer_core.study.runner"]
    assert cycles(graph) == ["fer_core.models -> fer_core.study.runner -> fer_core.models"]
