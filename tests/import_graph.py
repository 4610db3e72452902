"""The import graph of the fedml_prr package, function-level imports included.

    python tests/import_graph.py            # every edge between the package's layers, with counts
    python tests/import_graph.py --modules  # every module-to-module edge

tests/test_layering.py checks the graph against :data:`LAYERS`.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "fedml_prr"
NAME = "fedml_prr"

#: layers, lowest first: a module may import its own layer and the ones before it, never one after
LAYERS: Tuple[Tuple[str, ...], ...] = (
    ("registry", "config", "tables", "files", "devices", "core"),
    ("data", "models"),
    ("training",),
    ("algorithms",),
    ("fedml_adapter",),
    ("runtime",),
    ("api",),
    ("compare",),
    ("cli", "__main__", "__init__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str, known: Dict[str, Path]) -> bool:
    return known.get(name, Path()).name == "__init__.py"


def imports_of(name: str, path: Path, known: Dict[str, Path]) -> Iterator[Tuple[str, int]]:
    """``(imported module, line)`` of every import in ``path`` (module or function level)."""
    package = name if _is_package(name, known) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                child = f"{target}.{alias.name}"
                yield (child if child in known else target), node.lineno


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    for rank, names in enumerate(LAYERS):
        if key in names:
            return rank
    raise KeyError(f"{module} is in no layer of tests/import_graph.py LAYERS; add its package there")


def edges() -> List[Tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of one package module by another."""
    known = modules()
    out = []
    for name, path in known.items():
        for target, line in imports_of(name, path, known):
            if target == NAME or target.startswith(NAME + "."):
                if target != name:
                    out.append((name, target, line))
    return out


def external_imports() -> List[Tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import of something outside the package."""
    known = modules()
    return [(name, target, line) for name, path in known.items() for target, line in imports_of(name, path, known)
            if not (target == NAME or target.startswith(NAME + "."))]


def cycles() -> List[List[str]]:
    """Every cycle of the module graph (one path per strongly connected component of size > 1)."""
    graph: Dict[str, Set[str]] = {}
    for a, b, _ in edges():
        graph.setdefault(a, set()).add(b)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def layer_edges() -> Counter:
    """``(importer package, imported package) -> number of imports`` between the package's parts."""
    def part(module: str) -> str:
        pieces = module.split(".")
        return pieces[1] if len(pieces) > 1 else NAME

    return Counter((part(a), part(b)) for a, b, _ in edges() if part(a) != part(b))


def main(argv: List[str]) -> int:
    if "--modules" in argv:
        for a, b, line in sorted(edges()):
            print(f"{a}:{line} -> {b}")
        return 0
    rank = {name: r for r, names in enumerate(LAYERS) for name in names}
    for (a, b), n in sorted(layer_edges().items(), key=lambda item: (rank.get(item[0][0], 99), item[0])):
        upward = rank.get(b, 99) > rank.get(a, 99)
        print(f"{a:>14} -> {b:<14} {n:3d}{'   UPWARD' if upward else ''}")
    found = cycles()
    print(f"cycles: {found if found else 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
