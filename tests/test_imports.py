"""scripts/check-imports.py: the package's imports form no cycle, in-function imports included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check-imports.py"


def test_package_has_no_import_cycle() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_cycle_through_an_in_function_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def late():\n    from .a import thing\n    return thing\n")
    done = subprocess.run([sys.executable, str(SCRIPT), str(pkg)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "pkg.a -> pkg.b -> pkg.a" in done.stderr
