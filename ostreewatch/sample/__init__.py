"""The bundled sample host (an RHCOS node), kept as a JSON manifest and materialized on demand.

A manifest, not a directory tree: wheels do not keep symlinks, and the boot
links are the point of the sample. materialize(dest) writes under dest:
sysroot/ (boot/, ostree/), mountinfo, cmdline and run/ (with ostree-booted).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from typing import Any, Dict

MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rhcos.json")


def load_manifest() -> Dict[str, Any]:
    with open(MANIFEST, encoding="utf-8") as f:
        return json.load(f)


def _inside(dest: str, rel: str) -> str:
    """dest/rel, refusing a manifest path that would leave dest."""
    path = os.path.normpath(os.path.join(dest, rel))
    if rel.startswith("/") or not path.startswith(os.path.normpath(dest) + os.sep):
        raise ValueError(f"sample manifest path leaves the sample: {rel}")
    return path


def materialize(dest: str) -> Any:
    """Write the sample under dest (an empty or new directory); returns its state.Paths."""
    manifest = load_manifest()
    os.makedirs(dest, exist_ok=True)
    for rel in manifest["dirs"]:
        os.makedirs(_inside(dest, rel), exist_ok=True)
    for rel, text in manifest["files"].items():
        path = _inside(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    for rel, target in manifest["symlinks"].items():
        path = _inside(dest, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    return paths_in(dest)


def paths_in(dest: str) -> Any:
    """The state.Paths of a sample materialized in dest."""
    from ..state import Paths
    return Paths(sysroot=os.path.join(dest, "sysroot"), mountinfo=os.path.join(dest, "mountinfo"),
                 cmdline=os.path.join(dest, "cmdline"), run=os.path.join(dest, "run"))


def materialize_temp() -> str:
    """Materialize into a new temp dir that is removed when the process exits; returns the dir."""
    dest = tempfile.mkdtemp(prefix="ostreewatch-sample-")
    atexit.register(shutil.rmtree, dest, True)
    materialize(dest)
    return dest
