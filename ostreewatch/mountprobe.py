"""A cheap look at the watched mount points, to tell a mount storm from a change that matters.

The kernel says only "the mount table changed" (POLLPRI on mountinfo), never
where. Reading a big mountinfo is costly (docs/design-notes.md), so on every
such wakeup ostreewatchd first asks about the few mount points it publishes
(model.WATCHED_MOUNT_POINTS): for each, the mount on top of it (its unique
mount id where the kernel has one, else the old id plus the device) and its
flags (fstatvfs: read-only, nosuid, noexec, ...). Equal probes mean nothing
published can have changed, except a remount that changes only filesystem
options with no flag; the watcher reports a change anyway at most
MOUNT_RECHECK_EVERY seconds apart (ostreewatch/watcher.py).

Paths resolve in the namespace of the process whose mountinfo is watched,
through /proc/PID/root (the daemon runs in a sandbox namespace of its own,
while PID 1's table is the truth), or, where that is refused, in the daemon's
own namespace (probe_root). Each point is opened O_PATH|O_NOFOLLOW, which
never triggers an automount (a systemd /boot/efi automount stays untouched).
Anything unexpected (no /proc/PID/root access, a kernel without statx's mount
id) gives None: then the caller reads the whole table, as before.
"""

from __future__ import annotations

import ctypes
import os
import re
from collections.abc import Sequence
from typing import Optional

from .model import WATCHED_MOUNT_POINTS

# One watched point: (mount id, is the id the unique 64-bit one, st_dev, statvfs flags), or None when absent.
PointProbe = Optional[tuple[int, bool, int, int]]
Probe = tuple[PointProbe, ...]

_PROC_MOUNTINFO = re.compile(r"/proc/(self|thread-self|[0-9]+)/mountinfo")

# <linux/stat.h>, <linux/fcntl.h>
_STATX_MNT_ID = 0x1000
_STATX_MNT_ID_UNIQUE = 0x4000  # Linux 6.8: never reused, unlike the old id
_AT_EMPTY_PATH = 0x1000
_AT_NO_AUTOMOUNT = 0x800
_STATX_SIZE = 256
_OFF_MASK, _OFF_DEV_MAJOR, _OFF_DEV_MINOR, _OFF_MNT_ID = 0, 136, 140, 144

_statx_fn: ctypes._CFuncPtr | None = None  # type: ignore[name-defined]
_statx_missing = False


def _statx() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """glibc's statx(2) wrapper (glibc >= 2.28), loaded once; None when absent."""
    global _statx_fn, _statx_missing
    if _statx_fn is None and not _statx_missing:
        try:
            libc = ctypes.CDLL(None, use_errno=True)  # the libc already loaded: no ldconfig look-up
            fn = libc.statx
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
            fn.restype = ctypes.c_int
            _statx_fn = fn
        except (OSError, AttributeError):
            _statx_missing = True
    return _statx_fn


def proc_root(mountinfo: str) -> str | None:
    """/proc/PID/root for a /proc/PID/mountinfo path; None for any other file (a test's plain file)."""
    m = _PROC_MOUNTINFO.fullmatch(os.path.normpath(str(mountinfo)))
    return f"/proc/{m.group(1)}/root" if m else None


def _probe_point(root: str, point: str, buf: ctypes.Array) -> PointProbe:  # type: ignore[type-arg]
    try:
        fd = os.open(root + point, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fn = _statx()
        if fn is None or fn(fd, b"", _AT_EMPTY_PATH | _AT_NO_AUTOMOUNT, _STATX_MNT_ID | _STATX_MNT_ID_UNIQUE, buf) != 0:
            raise OSError(ctypes.get_errno(), "statx")
        raw = bytes(buf)
        mask = int.from_bytes(raw[_OFF_MASK : _OFF_MASK + 4], "little")
        if not mask & (_STATX_MNT_ID | _STATX_MNT_ID_UNIQUE):
            raise OSError("statx reported no mount id (a kernel older than 5.8)")
        mnt_id = int.from_bytes(raw[_OFF_MNT_ID : _OFF_MNT_ID + 8], "little")
        dev = os.makedev(
            int.from_bytes(raw[_OFF_DEV_MAJOR : _OFF_DEV_MAJOR + 4], "little"),
            int.from_bytes(raw[_OFF_DEV_MINOR : _OFF_DEV_MINOR + 4], "little"),
        )
        return (mnt_id, bool(mask & _STATX_MNT_ID_UNIQUE), dev, os.fstatvfs(fd).f_flag)
    finally:
        os.close(fd)


def probe_root(mountinfo: str) -> tuple[str, bool] | None:
    """(where to resolve the watched points, whether that is exactly MOUNTINFO's namespace); None: no probing.

    A sandboxed service (the unit's CapabilityBoundingSet has no CAP_SYS_PTRACE) may not
    enter /proc/1/root, PID 1 being no dumpable process. Its own mount namespace, a slave
    of the host's, still receives every mount and unmount, and statvfs shows a file system
    made read-only; what does not propagate is a change of per-mount flags alone
    (`mount -o remount,bind,ro`). Then the probe is "" (this process's view), not exact.
    """
    root = proc_root(mountinfo)
    if root is None:
        return None
    try:
        os.close(os.open(root + "/", os.O_PATH | os.O_CLOEXEC))
    except PermissionError:
        return "", False
    except OSError:
        return None
    return root, True


def probe(root: str, points: Sequence[str] = WATCHED_MOUNT_POINTS, own_points: Sequence[str] = ()) -> Probe | None:
    """The mounts and flags of POINTS resolved under ROOT (probe_root's), then of OWN_POINTS as this
    process sees them (e.g. the watched sysroot's boot/); None when it cannot be told."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    try:
        return tuple(_probe_point(root, point, buf) for point in points) + tuple(
            _probe_point("", os.path.abspath(point), buf) for point in own_points
        )
    except OSError:
        return None
