"""The files the daemon keeps under its runtime directory (/run/ostreewatch): status.json.

status.json is byte for byte what `ostreewatch status --json` prints from the daemon: every
property GetAll returns (Generation and Version included), for tools that do not speak D-Bus.
It is replaced atomically (temp file, fsync, rename), so a reader sees the old file or the
new one, never a torn or empty one. docs/logind.md describes it.
"""

from __future__ import annotations

import os
from _json import encode_basestring

from . import _interface, errors, model

# Written before READY=1 (ostreewatch/daemon.py): json, tempfile and typing would cost every boot
# ~15 ms of imports (json's re and enum, tempfile's random and shutil), so the JSON text and
# the temp file are made by hand here; tests/test_runstatus.py compares the text with json.dumps.
TYPE_CHECKING = False  # mypy takes any TYPE_CHECKING as true
if TYPE_CHECKING:
    from typing import Any

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
    """What `ostreewatch status --json` prints (and status.json holds): json.dumps(indent=2, ensure_ascii=False)."""
    out: list[str] = []
    try:
        _encode(values, 0, out)
    except _NotPlain:  # a value json knows and this encoder does not (a float...): json itself
        import json

        return json.dumps(values, indent=2, ensure_ascii=False) + "\n"
    return "".join(out) + "\n"


class _NotPlain(errors.OstreewatchError):
    """A value outside str, int, bool, None, list, tuple and dict with str keys."""


def _encode(value: object, level: int, out: list[str]) -> None:
    """VALUE as json.dumps(indent=2, ensure_ascii=False) writes it at nesting LEVEL."""
    if isinstance(value, str):
        out.append(encode_basestring(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = "\n" + "  " * (level + 1)
        out.append("[")
        for i, item in enumerate(value):
            out.append(inner if i == 0 else "," + inner)
            _encode(item, level + 1, out)
        out.append("\n" + "  " * level + "]")
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = "\n" + "  " * (level + 1)
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise _NotPlain
            out.append(inner if i == 0 else "," + inner)
            out.append(encode_basestring(key) + ": ")
            _encode(item, level + 1, out)
        out.append("\n" + "  " * level + "}")
    else:
        raise _NotPlain


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
    fd, tmp = _temp_file(directory, name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            # mkstemp makes 0600 and the unit's UMask=0077 would too: set the mode readers need.
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:  # noqa: SIM105 - contextlib would import collections and functools before READY=1
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return path


def _temp_file(directory: str, name: str) -> tuple[int, str]:
    """A new file DIRECTORY/.NAME.PID.N.tmp (0600, as tempfile.mkstemp makes it), open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for n in range(100):
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{n}.tmp")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:  # left by a process that had this pid, or a writer of ours
            continue
    raise FileExistsError(f"no free temp file name for {name} in {directory}")


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
