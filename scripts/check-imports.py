#!/usr/bin/env python3
"""Fail when the ostreewatch package's modules import each other in a cycle.

Every import counts, the ones inside functions too (they hid a state <-> sample
cycle once). Usage: scripts/check-imports.py [PACKAGE_DIR]; exit 1 on a cycle.
"""

from __future__ import annotations

import ast
import os
import sys


def module_name(package_dir: str, path: str) -> str:
    """ostreewatch/parse/bls.py -> ostreewatch.parse.bls (a package's __init__.py -> the package)."""
    rel = os.path.relpath(path, os.path.dirname(package_dir))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def imports_of(name: str, path: str, known: set[str]) -> set[str]:
    """The package's modules that the module NAME (file PATH) imports, wherever the import stands."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from . import x` names a module when x is one, else something inside base.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(package_dir: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    files: dict[str, str] = {}
    for dirpath, _dirs, names in os.walk(package_dir):
        for n in names:
            if n.endswith(".py"):
                path = os.path.join(dirpath, n)
                files[module_name(package_dir, path)] = path
    known = set(files)
    out: dict[str, set[str]] = {}
    for name, path in files.items():
        # A package is imported before its submodules: `a.b` depends on `a` as well.
        deps = imports_of(name, path, known)
        parent = name.rpartition(".")[0]
        if parent in known:
            deps.add(parent)
        out[name] = deps
    return out


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a]; None when there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                hit = visit(nxt)
                if hit:
                    return hit
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            hit = visit(node)
            if hit:
                return hit
    return None


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package_dir = argv[1] if len(argv) > 1 else os.path.join(here, "ostreewatch")
    cycle = find_cycle(graph(package_dir.rstrip("/")))
    if cycle:
        print("import cycle: " + " -> ".join(cycle), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
