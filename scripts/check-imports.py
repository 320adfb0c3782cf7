#!/usr/bin/env python3
"""Fail when the ostreewatch package's imports break the module ownership of docs/ARCHITECTURE.md.

Checked: no import cycle; the parsers (PACKAGE.parse.*) are pure: no I/O module
imported and no open() called; dbus_next, pyinotify, systemd and gi are each
imported only by the modules that own them; the watcher imports no reader
(state, sysroot) and nothing above it. Every import counts, the ones inside functions
too (docs/design-notes.md says why). tests/test_architecture.py checks
docs/ARCHITECTURE.md's import table against graph() too.
Usage: scripts/check-imports.py [PACKAGE_DIR]; exit 1 on a finding, each printed.
"""

from __future__ import annotations

import ast
import os
import sys


def module_name(package_dir: str, path: str) -> str:
    """ostreewatch/parse/bls.py -> ostreewatch.parse.bls (a package's __init__.py -> the package)."""
    rel = os.path.relpath(path, os.path.dirname(package_dir))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


# Modules a parser may not import: each does I/O or reaches outside the process.
IO_MODULES = frozenset(
    [
        "os",
        "io",
        "sys",
        "subprocess",
        "socket",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "fcntl",
        "select",
        "selectors",
        "asyncio",
        "mmap",
        "ctypes",
        "signal",
        "threading",
        "multiprocessing",
        "urllib.request",
        "http",
        "logging",
    ]
)
# Third-party module -> the package's modules that may import it (relative to the package).
OWNED = {
    "dbus_next": frozenset({"service", "_dbusnext", "client"}),
    "pyinotify": frozenset({"watcher"}),
    "systemd": frozenset({"journal"}),
    "gi": frozenset({"_deployhelper"}),
}
# Package module -> the package's modules it must not import.
FORBIDDEN = {
    "watcher": frozenset({"state", "sysroot", "changes", "journal", "service", "client", "bootwrite", "daemon"}),
}


def external_imports(path: str) -> set[str]:
    """Every absolute import of the file at PATH, dotted (`import a.b` and `from a.b import c` give a.b)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return found


def calls_open(path: str) -> bool:
    """Whether the file at PATH calls the builtin open() (or io.open / os.open through a name `open`)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    return any(
        isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open"
        for node in ast.walk(tree)
    )


def ownership_findings(package_dir: str, edges: dict[str, set[str]]) -> list[str]:
    """What breaks the ownership rules above, one sentence each."""
    pkg = os.path.basename(package_dir)
    out: list[str] = []
    for dirpath, _dirs, names in os.walk(package_dir):
        for n in sorted(names):
            if not n.endswith(".py"):
                continue
            path = os.path.join(dirpath, n)
            name = module_name(package_dir, path)
            short = name[len(pkg) + 1 :] if name != pkg else ""
            imported = external_imports(path)
            tops = {m.split(".")[0] for m in imported}
            if short == "parse" or short.startswith("parse."):
                bad = sorted(m for m in imported if m in IO_MODULES or m.split(".")[0] in IO_MODULES)
                if bad:
                    out.append(f"{name}: a parser imports I/O modules: {', '.join(bad)}")
                if calls_open(path):
                    out.append(f"{name}: a parser calls open()")
            for module, owners in OWNED.items():
                if module in tops and short not in owners:
                    out.append(f"{name}: imports {module}, which only {', '.join(sorted(owners))} may import")
            for target in sorted(edges.get(name, ())):
                if target.startswith(pkg + ".") and target[len(pkg) + 1 :] in FORBIDDEN.get(short, ()):
                    out.append(f"{name}: imports {target}, which it must not (docs/ARCHITECTURE.md)")
    return out


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
    package_dir = package_dir.rstrip("/")
    edges = graph(package_dir)
    findings = ownership_findings(package_dir, edges)
    cycle = find_cycle(edges)
    if cycle:
        findings.insert(0, "import cycle: " + " -> ".join(cycle))
    for finding in findings:
        print(finding, file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
