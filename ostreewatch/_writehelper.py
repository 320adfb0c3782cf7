"""The write itself: crash-safe replacement of one small file, and the helper process for a read-only /boot.

`atomic_replace()` is used in-process (from an executor) when the target's
filesystem is writable. When it is mounted read-only (Fedora CoreOS /boot),
bootwrite runs `python -m ostreewatch._writehelper` instead: that process
enters a private mount namespace, makes every mount private, remounts the
target's mount read-write there only, and calls the same `atomic_replace()`.
The host's mount stays read-only (os.unshare is per thread, hence a process).

Request on stdin (one JSON line): {"path": ABS, "data": BASE64, "expect": BASE64|null}.
Answer on stdout (one JSON line): {"ok": true} or {"ok": false, "kind": "changed"|"failed", "error": TEXT};
exit 0 / 1 (ostreewatch.helperproc runs it).
Imports nothing but the standard library, ostreewatch.errors and ostreewatch.parse.mountinfo.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import stat
import sys

from ostreewatch.errors import OstreewatchError

TEMP_PREFIX = ".ostreewatch-tmp-"

# <sys/mount.h>, <sched.h>
CLONE_NEWNS = 0x00020000
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_SILENT = 32768
MS_PRIVATE = 1 << 18
ST_RDONLY = os.ST_RDONLY


class ContentChanged(OstreewatchError):
    """The target no longer holds the bytes the new content was computed from."""


def _read_all(fd: int, limit: int = 1 << 20) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise OSError(f"file larger than {limit} bytes")
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def remove_stale_temps(dir_fd: int) -> None:
    """Delete temporary files a killed writer left behind (callers hold the sysroot lock)."""
    for name in os.listdir(dir_fd):
        if name.startswith(TEMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)


def atomic_replace(path: str, data: bytes, expect: bytes | None = None) -> None:
    """Replace PATH by DATA: temp file in the same directory, fsync, rename over, fsync the directory.

    Keeps the old file's mode and owner. With EXPECT, refuses (ContentChanged)
    when the current bytes differ (None: no check). PATH must not be a symlink.
    At every moment the file is either the old or the new one.
    """
    directory, name = os.path.split(path)
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            old = None
        if old is not None and not stat.S_ISREG(old.st_mode):
            raise OSError(f"{path} is not a regular file")
        if expect is not None:
            current = b""
            if old is not None:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dir_fd)
                try:
                    current = _read_all(fd)
                finally:
                    os.close(fd)
            if current != expect:
                raise ContentChanged(f"{path} changed while the new content was prepared")
        remove_stale_temps(dir_fd)
        # os.urandom, as secrets.token_hex does: `secrets` imports hmac and hashlib, which load OpenSSL's
        # libcrypto into the daemon (it imports this module to serve): ~0.8 MB of modules and 3.4 MB
        # resident of libcrypto once asyncio's ssl is kept out too (daemon._load_runtime).
        tmp = TEMP_PREFIX + os.urandom(8).hex()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
        try:
            try:
                _write_all(fd, data)
                if old is not None:
                    _copy_owner_and_mode(fd, old)
                else:
                    os.fchmod(fd, 0o644)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        # The rename is durable only once the directory is.
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _copy_owner_and_mode(fd: int, old: os.stat_result) -> None:
    # vfat (an ESP) has no owners or modes: it refuses or ignores both, and that is fine.
    try:
        if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, old.st_uid, old.st_gid)
        os.fchmod(fd, stat.S_IMODE(old.st_mode))
    except PermissionError:
        pass


# --- the helper process: private mount namespace, target remounted read-write ----------


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    libc.unshare.argtypes = [ctypes.c_int]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount_point_of(directory: str) -> str:
    """The mount point of the mount DIRECTORY is on, via the mnt_id of an open fd (bind mounts included)."""
    from ostreewatch.parse.mountinfo import parse_mountinfo

    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            mnt_id = next(int(line.split(":", 1)[1]) for line in f if line.startswith("mnt_id:"))
    finally:
        os.close(fd)
    with open("/proc/self/mountinfo", "rb") as f:
        mounts, _ = parse_mountinfo(f.read())
    for m in mounts:
        if m.mount_id == mnt_id:
            return m.mount_point
    raise OSError(f"no mount with id {mnt_id} for {directory}")


def unshare_private() -> None:
    """Enter a private mount namespace of this process; nothing mounted from here on reaches the host."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def remount_rw(directory: str) -> None:
    """Make DIRECTORY's mount read-write (call after unshare_private(): only this namespace sees it)."""
    libc = _libc()
    mount_point = _mount_point_of(directory)
    keep = os.statvfs(directory).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    # First the per-mount flag (a read-only bind mount), then, as ostree does, the superblock.
    _check(
        libc.mount(None, mount_point.encode(), None, MS_REMOUNT | MS_BIND | keep, None),
        f"remount,bind,rw {mount_point}",
    )
    if os.statvfs(directory).f_flag & ST_RDONLY:
        _check(
            libc.mount(mount_point.encode(), mount_point.encode(), None, MS_REMOUNT | MS_SILENT, None),
            f"remount,rw {mount_point}",
        )
    if os.statvfs(directory).f_flag & ST_RDONLY:
        raise OSError(f"{mount_point} is still read-only after remounting it")


def enter_private_rw(directory: str) -> None:
    """In this process only: a private mount namespace where DIRECTORY's mount is read-write."""
    unshare_private()
    remount_rw(directory)


def main() -> int:
    """Helper process entry point: one request on stdin, one answer on stdout."""
    try:
        request = json.loads(sys.stdin.buffer.readline(1 << 22))
        path = request["path"]
        data = base64.b64decode(request["data"])
        expect = None if request.get("expect") is None else base64.b64decode(request["expect"])
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError("path must be absolute")
        enter_private_rw(os.path.dirname(path))
        atomic_replace(path, data, expect)
    except ContentChanged as e:
        answer = {"ok": False, "kind": "changed", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - the parent maps every failure to WriteFailed with this text
        answer = {"ok": False, "kind": "failed", "error": f"{type(e).__name__}: {e}"}
    else:
        answer = {"ok": True}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
