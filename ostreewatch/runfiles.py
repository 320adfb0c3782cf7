"""The files the daemon keeps under its runtime directory (/run/ostreewatch): status.json.

status.json is byte for byte what `ostreewatch status --json` prints from the daemon: every
property GetAll returns (Generation and Version included), for tools that do not speak D-Bus.
It is replaced atomically (temp file, fsync, rename), so a reader sees the old file or the
new one, never a torn or empty one. docs/logind.md describes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from . import _interface, model

STATUS_FILE = "status.json"
# RuntimeDirectory=ostreewatch in units/ostreewatch.service: systemd sets RUNTIME_DIRECTORY to it.
DEFAULT_RUNTIME_DIR = "/run/ostreewatch"


def status_plain(snapshot: model.Snapshot, generation: int | None, version: str) -> dict[str, Any]:
    """The published properties as GetAll returns them, in plain JSON values and the interface's order;
    GENERATION None (a direct read, no daemon): the snapshot alone, without Generation and Version."""
    plain = model.snapshot_to_plain(snapshot)
    if generation is not None:
        plain = {**plain, "Generation": generation, "Version": version}
    return {name: plain[name] for name in _interface.PROPERTIES if name in plain}


def render_json(values: dict[str, Any]) -> str:
    """The JSON text `ostreewatch status --json` prints (and status.json holds)."""
    return json.dumps(values, indent=2, ensure_ascii=False) + "\n"


def render_status(snapshot: model.Snapshot, generation: int | None, version: str) -> str:
    """status.json's text for a published snapshot."""
    return render_json(status_plain(snapshot, generation, version))


def ensure_dir(directory: str) -> None:
    """Create DIRECTORY (its parent must exist) world-readable, as RuntimeDirectory= does; raises OSError."""
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        return
    # The daemon's unit sets UMask=0077, which mkdir's mode does not escape: readers need 0755.
    os.chmod(directory, 0o755)


def replace(directory: str, name: str, data: bytes, mode: int = 0o644) -> str:
    """Atomically replace DIRECTORY/NAME with DATA (MODE); returns the path. Raises OSError."""
    path = os.path.join(directory, name)
    # A dot name: a glob for *.json or a path unit on NAME never sees the temp file.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp makes 0600 and the unit's UMask=0077 would too: set the mode readers need.
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def write_status(directory: str, snapshot: model.Snapshot, generation: int, version: str) -> str:
    """Replace DIRECTORY/status.json with the published state; returns the path. Raises OSError."""
    return replace(directory, STATUS_FILE, render_status(snapshot, generation, version).encode("utf-8"))


def remove(directory: str, name: str) -> bool:
    """Remove DIRECTORY/NAME; False when there was none."""
    try:
        os.unlink(os.path.join(directory, name))
        return True
    except FileNotFoundError:
        return False
