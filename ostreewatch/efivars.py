"""systemd-boot's one-shot entry: the EFI variable LoaderEntryOneShot, written through efivarfs."""

from __future__ import annotations

import fcntl
import os
import struct

EFIVARS = "/sys/firmware/efi/efivars"

# The Boot Loader Interface's vendor GUID (systemd src/fundamental/efivars-fundamental.h,
# EFI_LOADER_VARIABLE_GUID); efivarfs names a variable NAME-GUID.
LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
ONESHOT_VAR = "LoaderEntryOneShot-" + LOADER_GUID
# EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS, as systemd's
# efi_set_variable() writes them (systemd src/basic/efivars.c).
EFI_ATTRIBUTES = 0x7


def oneshot_bytes(entry_file: str) -> bytes:
    """efivarfs content for LoaderEntryOneShot: 4-byte attributes, then the id in UTF-16LE with its NUL.

    systemd's efi_set_variable_string() writes the string with its terminating
    NUL (src/basic/efivars.c); systemd-boot ids are the file names, ".conf" included.
    """
    return struct.pack("<I", EFI_ATTRIBUTES) + (entry_file + "\0").encode("utf-16-le")


def write_oneshot(efivars: str, entry_file: str) -> None:
    """Set (or with "" delete) LoaderEntryOneShot in EFIVARS (blocking).

    efivarfs has no rename: systemd writes the whole value in one write() after
    clearing the file's immutable flag; a new variable is created by the write.
    """
    path = os.path.join(efivars, ONESHOT_VAR)
    if not entry_file:
        try:
            _chattr_mutable(path)
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    data = oneshot_bytes(entry_file)
    if os.path.exists(path):
        _chattr_mutable(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
    finally:
        os.close(fd)


FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x10


def _chattr_mutable(path: str) -> None:
    """Clear FS_IMMUTABLE_FL, which the kernel sets on efivarfs files (an ordinary directory may refuse: fine)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        buf = bytearray(struct.pack("i", 0))
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = struct.unpack("i", bytes(buf))[0]
        if flags & FS_IMMUTABLE_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags & ~FS_IMMUTABLE_FL))
    except OSError:
        pass
    finally:
        os.close(fd)
