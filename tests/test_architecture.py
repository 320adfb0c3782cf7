"""docs/ARCHITECTURE.md's module table matches the code, and scripts/check-imports.py enforces ownership.

The table's "may import" column is checked against the imports the code really has
(scripts/check-imports.py's graph, in-function imports included): a module that starts
importing another, or stops, fails here until the table says so.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check-imports.py"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

pytestmark = pytest.mark.unit


def _check_imports() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def documented_table() -> dict[str, set[str] | None]:
    """Row of the module table -> the modules it may import (None for "all")."""
    rows: dict[str, set[str] | None] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\| `ostreewatch/([^`]+)` \|.*\| ([^|]+) \|$", line)
        if not m:
            continue
        cell = m.group(2).strip()
        if cell == "all":
            rows[m.group(1)] = None
        elif cell == "nothing":
            rows[m.group(1)] = set()
        else:
            rows[m.group(1)] = {part.strip().strip("`") for part in cell.split(",")}
    return rows


def row_of(module: str) -> str | None:
    """The table row that covers a package module (ostreewatch.parse.bls -> parse/*.py)."""
    short = module.removeprefix("ostreewatch").removeprefix(".")
    if short in ("", "parse") or short.startswith("parse."):
        return None if short == "" else "parse/*.py"
    if short == "sample":
        return "sample/"
    return short + ".py"


@functools.lru_cache(maxsize=1)
def actual_table() -> dict[str, set[str]]:
    """Row -> the package's modules its modules import (parse.X counted as parse; parents and own group left out)."""
    edges = _check_imports().graph(str(ROOT / "ostreewatch"))
    out: dict[str, set[str]] = {}
    for module, targets in edges.items():
        row = row_of(module)
        if row is None:
            continue
        names = out.setdefault(row, set())
        for target in targets:
            short = target.removeprefix("ostreewatch").removeprefix(".")
            if short == "":
                continue
            if short.startswith("parse"):
                if row == "parse/*.py":
                    continue  # the parsers may use each other
                short = "parse"
            names.add(short)
    return out


def test_every_module_has_a_row_and_every_row_a_module() -> None:
    assert set(documented_table()) == set(actual_table())


@pytest.mark.parametrize("row", sorted(actual_table()))
def test_may_import_column_matches_the_code(row: str) -> None:
    documented = documented_table()[row]
    actual = actual_table()[row]
    if documented is None:
        return  # "all": the daemon wires everything
    assert actual == documented, f"docs/ARCHITECTURE.md row {row}: code imports {sorted(actual)}"


def test_ownership_rules_hold() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "parse").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "parse" / "__init__.py").write_text("")
    for name, text in files.items():
        (pkg / name).write_text(text)
    return pkg


@pytest.mark.parametrize(
    ("files", "finding"),
    [
        ({"parse/x.py": "import os\n"}, "pkg.parse.x: a parser imports I/O modules: os"),
        ({"parse/x.py": "def f():\n    from subprocess import run\n"}, "I/O modules: subprocess"),
        ({"parse/x.py": "def f(p):\n    return open(p).read()\n"}, "pkg.parse.x: a parser calls open()"),
        ({"cli.py": "import dbus_next.aio\n"}, "pkg.cli: imports dbus_next, which only _dbusnext, client, service"),
        ({"state.py": "import pyinotify\n"}, "pkg.state: imports pyinotify"),
        ({"state.py": "", "watcher.py": "def f():\n    from . import state\n"}, "pkg.watcher: imports pkg.state"),
    ],
)
def test_a_broken_rule_is_named(tmp_path: Path, files: dict[str, str], finding: str) -> None:
    pkg = _package(tmp_path, files)
    done = subprocess.run([sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert finding in done.stderr


def test_the_rules_allow_what_the_owners_do(tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        {
            "parse/x.py": "import re\nfrom . import y\n",
            "parse/y.py": "import struct\n",
            "service.py": "import dbus_next\n",
            "watcher.py": "import pyinotify\nfrom . import layout\n",
            "layout.py": "import os\n",
        },
    )
    done = subprocess.run([sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# Test files not named after one module: what each is about instead (issue 20 point 9).
TEST_TOPICS = {
    "architecture": "docs/ARCHITECTURE.md against the code",
    "bench": "bench/ and BENCHMARKS.md",
    "catalog": "units/ostreewatch.catalog",
    "fleet": "docs/fleet.md: the fleet's journal, Prometheus and textfile paths",
    "grub": "GRUB itself (grub-emu, grub-mkconfig) as the oracle of the reader",
    "hand": "the hand-written matchers of the start path",
    "imports": "scripts/check-imports.py",
    "infra": "scripts/ (run-tests.sh, lint.sh, the set-up)",
    "install": "make install and the wheel",
    "logind": "docs/logind.md: the logind bridge (rebootentry.py and its units)",
    "modern": "hosts written by ostree 2025-2026 (docs/modern-rig.md)",
    "nspawn": "booted containers",
    "readme": "README.md's commands",
    "reliability": "bad input and crashes across the daemon",
    "rpm": "packaging/rpm.spec",
    "trees": "the cached trixie/sid trees",
    "units": "units/ and the bus policy",
    "vm": "real boots in QEMU (tests/vm/, docs/vm-rig.md)",
}


def _module_names() -> set[str]:
    pkg = ROOT / "ostreewatch"
    names = {p.stem.lstrip("_") for p in pkg.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    names |= {f"parse_{p.stem}" for p in (pkg / "parse").glob("*.py") if p.stem != "__init__"}
    return names


def test_test_files_are_named_after_their_module_or_a_topic() -> None:
    modules = _module_names()
    assert not modules & set(TEST_TOPICS), "a topic that is a module name: name the file after the module"
    stray = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        name = path.stem[len("test_") :]
        if not any(name == m or name.startswith(m + "_") for m in modules | set(TEST_TOPICS)):
            stray.append(path.name)
    assert not stray, f"name these after the module they test (or add a topic to TEST_TOPICS): {stray}"
