"""The shape of moot's import graph, read from the source with `ast` (nothing is imported).

Prints three lists and exits 1 if any is non-empty:
- import circles: groups of modules that import each other, directly or around a loop (every
  import counts: at the top, inside functions, under TYPE_CHECKING);
- private imports across packages: a module taking a private name (`_x`, or anything from a
  private module) from a module of another package of moot/ (a package's own privates are
  its business);
- modules over 500 lines.

    python benchmarks/architecture.py [--root moot] [--max-lines 500]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, top: Path) -> str:
    parts = list(path.relative_to(top.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str, is_package: bool) -> str:
    return module if is_package else module.rpartition(".")[0]


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def imports_of(tree: ast.AST, package: str) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every import in the tree."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found += [(source, alias.name, node.lineno) for alias in node.names]
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def check(top: Path, max_lines: int) -> tuple[list[list[str]], list[str], list[str]]:
    """The circles, the private cross-package imports and the long modules under `top`."""
    files = {module_name(path, top): path for path in sorted(top.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    private: dict[str, list[str]] = {}
    long: list[str] = []
    for module, path in files.items():
        text = path.read_text()
        lines = text.count("\n")
        if lines > max_lines:
            long.append(f"{path.relative_to(top.parent)}: {lines} lines")
        package = package_of(module, path.name == "__init__.py")
        for source, name, line in imports_of(ast.parse(text), package):
            target = f"{source}.{name}" if name and f"{source}.{name}" in files else source
            if target not in files or target == module:
                continue
            graph[module].add(target)
            target_package = package_of(target, files[target].name == "__init__.py")
            if target_package == package or target.startswith(module + "."):
                continue  # a package's own privates, or a package reaching into its children
            hidden = [part for part in target.split(".") if is_private(part)]
            if name is not None and is_private(name):
                hidden.append(name)
            if hidden:
                where = f"{path.relative_to(top.parent)}:{line}: {source}"
                private.setdefault(where, []).append(name or "")
    statements = [f"{where} import {', '.join(names)}" for where, names in private.items()]
    return strongly_connected(graph), statements, long


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(ROOT / "moot"))
    parser.add_argument("--max-lines", type=int, default=500)
    args = parser.parse_args()
    circles, private, long = check(Path(args.root).resolve(), args.max_lines)
    print(f"import circles: {len(circles)}")
    for group in circles:
        print("  " + " <-> ".join(group))
    print(f"imports of private names from another package: {len(private)}")
    for line in private:
        print("  " + line)
    print(f"modules over {args.max_lines} lines: {len(long)}")
    for line in long:
        print("  " + line)
    return 1 if circles or private or long else 0


if __name__ == "__main__":
    sys.exit(main())
