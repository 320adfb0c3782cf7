"""The bundled sample hosts, kept as JSON manifests and materialized on demand.

Two hosts: `rhcos` (the default; a real RHCOS node's boot state, bootupd-style
boot with no grub.cfg that reads saved_entry, so writes answer NotSupported)
and `silverblue` (a Fedora Silverblue 40-like host whose grub.cfg is generated
by grub2-mkconfig and reads saved_entry and next_entry, so SetDefaultEntry and
SetNextEntry succeed on it).

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
from typing import TYPE_CHECKING, Any

from ..model import Paths

if TYPE_CHECKING:
    import argparse

_HERE = os.path.dirname(os.path.abspath(__file__))
NAMES: tuple[str, ...] = ("rhcos", "silverblue")
DEFAULT = "rhcos"
_TEMP_DIRS: dict[str, str] = {}


def add_argument(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The --sample [NAME] option, as ostreewatch and ostreewatchd both take it."""
    parser.add_argument(
        "--sample", nargs="?", const=DEFAULT, default=None, choices=NAMES, metavar="NAME", help=help_text
    )


def manifest_path(name: str = DEFAULT) -> str:
    """The JSON manifest of the sample NAME (ValueError for an unknown name)."""
    if name not in NAMES:
        raise ValueError(f"no bundled sample {name!r} (samples: {', '.join(NAMES)})")
    return os.path.join(_HERE, f"{name}.json")


def load_manifest(name: str = DEFAULT) -> dict[str, Any]:
    with open(manifest_path(name), encoding="utf-8") as f:
        manifest: dict[str, Any] = json.load(f)
    return manifest


def _inside(dest: str, rel: str) -> str:
    """dest/rel, refusing a manifest path that would leave dest."""
    path = os.path.normpath(os.path.join(dest, rel))
    if rel.startswith("/") or not path.startswith(os.path.normpath(dest) + os.sep):
        raise ValueError(f"sample manifest path leaves the sample: {rel}")
    return path


def materialize(dest: str, name: str = DEFAULT) -> Paths:
    """Write the sample NAME under dest (an empty or new directory); returns its model.Paths."""
    manifest = load_manifest(name)
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


def paths_in(dest: str) -> Paths:
    """The model.Paths of a sample materialized in dest."""
    return Paths(
        sysroot=os.path.join(dest, "sysroot"),
        mountinfo=os.path.join(dest, "mountinfo"),
        cmdline=os.path.join(dest, "cmdline"),
        run=os.path.join(dest, "run"),
    )


def materialize_temp(name: str = DEFAULT) -> str:
    """Materialize into a new temp dir that is removed when the process exits; returns the dir."""
    manifest_path(name)  # an unknown name fails before a temp dir exists
    dest = tempfile.mkdtemp(prefix="ostreewatch-sample-")
    atexit.register(shutil.rmtree, dest, True)
    materialize(dest, name)
    return dest


def paths_for(name: str = DEFAULT) -> Paths:
    """The model.Paths of the sample NAME, materialized once per process in a temp dir removed at exit."""
    if name not in _TEMP_DIRS:
        _TEMP_DIRS[name] = materialize_temp(name)
    return paths_in(_TEMP_DIRS[name])
