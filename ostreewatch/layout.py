"""Where ostree and the boot loaders keep things under a sysroot, and ostree's sysroot lock.

The reader (state.py), the writer (bootwrite.py) and the watcher (watcher.py)
take these names from here, so the three always look at the same files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from . import errors
from .sysroot import Root

# Paths relative to the sysroot.
GRUB_DIRS: tuple[str, ...] = ("boot/grub2", "boot/grub")
# What a grub.cfg may source from its own directory (bootupd configs.d 01_users.cfg,
# 41_custom.cfg; grub-static-pre.cfg's bootuuid.cfg and console.cfg; 00_header's user.cfg).
GRUB_SOURCED: tuple[str, ...] = ("user.cfg", "custom.cfg", "console.cfg", "bootuuid.cfg", "platform.cfg")
# systemd-boot reads loader.conf on the ESP: /boot when the ESP is /boot, else /boot/efi.
LOADER_CONFS: tuple[str, ...] = ("boot/loader/loader.conf", "boot/efi/loader/loader.conf")
ENTRIES_DIR = "boot/loader/entries"
SYSROOT_LOCK = "ostree/lock"

# The deployment a write chose, recorded beside the entry it wrote: the grubenv variables
# and the loader.conf comment line; state.py compares them with the entry's deployment
# (problem default-entry-moved).
GRUB_SAVED_DEPLOYMENT = "ostreewatch_saved_deployment"
GRUB_NEXT_DEPLOYMENT = "ostreewatch_next_deployment"
LOADER_COMMENT = "#ostreewatch-deployment"


def grubenv_location(root: Root, grub_dir: str | None = None) -> str | None:
    """Where GRUB's environment block is, relative to the sysroot: the first of GRUB_DIRS holding a
    grubenv (a dangling link counts: it is the one, unreadable), else GRUB_DIR/grubenv (the directory
    of the grub.cfg in use, where a write creates it); None when neither.

    The one rule for the reader (state.py) and the writer (bootplan.py).
    """
    for d in GRUB_DIRS:
        if root.exists(f"{d}/grubenv"):
            return f"{d}/grubenv"
    return f"{grub_dir.strip('/')}/grubenv" if grub_dir else None


# struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid (+ padding).
_FLOCK = "hhxxxxqqixxxx"


def _flock(lock_type: int) -> bytes:
    """A struct flock over the whole file."""
    return struct.pack(_FLOCK, lock_type, os.SEEK_SET, 0, 0, 0)


def sysroot_locked(root: Root | str) -> bool:
    """Whether another process holds ostree's sysroot lock (an OFD lock on ostree/lock).

    ostree holds it for a whole operation (deploy, undeploy, pin, kargs edit, finalize-staged):
    the sysroot is half-written until it is released. The file is opened through the
    confined reader (on a booted host `ostree` is a link to sysroot/ostree, resolved inside
    the sysroot) and asked with F_OFD_GETLK, which takes no lock, so it never gets in
    ostree's way. A missing or unreadable lock file: False (ostree unlinks it when it unlocks).
    """
    try:
        if not isinstance(root, Root):
            root = Root(root)
        fd = root.open_regular(SYSROOT_LOCK)
    except errors.OstreewatchError:
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK))
        return bool(struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK)
    except OSError:
        return False
    finally:
        os.close(fd)


def take_sysroot_lock(sysroot: str) -> int | None:
    """Take ostree's lock on SYSROOT/ostree/lock without waiting; the fd holds it. Busy when held.

    ostree (libglnx) takes an OFD write lock (F_OFD_SETLK); flock(1) and others
    take flock(2); the two do not exclude each other on Linux, so take both.
    None when the file is missing and cannot be created (read-only /sysroot):
    then no ostree process holds it either, as ostree creates it to lock.
    """
    lock_dir, name = os.path.split(SYSROOT_LOCK)
    path = os.path.join(Root(os.path.realpath(sysroot)).host_path(lock_dir), name)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            writable = True
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            writable = False
        try:
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK if writable else fcntl.F_RDLCK))
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: a kernel without OFD locks (< 3.15); libglnx falls back too
                    raise
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # ostree unlinks the file when it releases the lock: ours must still be the one on disk.
            st, now = os.fstat(fd), os.stat(path, follow_symlinks=False)
            if st.st_nlink > 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise errors.Busy(
                    f"another process holds the ostree sysroot lock ({path}); try again when it has finished"
                ) from None
            if e.errno == errno.ENOENT:
                continue
            raise
        os.close(fd)
    raise errors.Busy(f"the ostree sysroot lock {path} keeps being replaced; try again")
