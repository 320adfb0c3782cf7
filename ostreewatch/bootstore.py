"""The boot records under the state directory (/var/lib/ostreewatch/boots): encode, decode, load, save.

One file holds the last MAX_BOOTS boots, newest first, each with its judgement (bootoutcome.BootRecord)
and the last expectation published during it. Its first line carries a SHA-256 of the rest, so a torn
or altered file is told from a good one; it is replaced whole and crash-safe (_writehelper.atomic_replace:
temp file, fsync, rename, fsync of the directory), so a power cut leaves the old or the new file.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, cast

from . import bootoutcome
from .errors import OstreewatchError

FILE_NAME = "boots"
CORRUPT_NAME = "boots.corrupt"
MAX_BOOTS = 32
MAX_SIZE = 1 << 20  # 32 records with their expectations take a few tens of KiB
MAGIC = b"ostreewatch-boots 1 sha256="


class _Digest(Protocol):
    def hexdigest(self) -> str: ...


def _builtin_sha256() -> Callable[[bytes], _Digest]:
    """CPython's own SHA-256 (_sha2 from 3.12, _sha256 before), hashlib's only where neither is built.

    hashlib maps OpenSSL's libcrypto (3.3 MB of resident memory) for a digest of a few KiB;
    CPython's random module takes its built-in SHA-512 for the same reason.
    """
    for name in ("_sha2", "_sha256"):
        try:
            return cast(Callable[[bytes], _Digest], importlib.import_module(name).sha256)
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256


_sha256 = _builtin_sha256()


class BootStoreCorrupt(OstreewatchError):
    """The boot records file is torn, altered or not ours."""


@dataclass(frozen=True)
class StoredBoot:
    """One boot: its judgement and the last expectation published during it (None before the first)."""

    record: bootoutcome.BootRecord
    expectation: bootoutcome.Expectation | None = None


def encode(boots: list[StoredBoot]) -> bytes:
    """The file's bytes for BOOTS (newest first; only the first MAX_BOOTS are kept)."""
    body = {
        "boots": [
            {
                "record": b.record.to_dict(),
                "expectation": None if b.expectation is None else bootoutcome.expectation_to_dict(b.expectation),
            }
            for b in boots[:MAX_BOOTS]
        ]
    }
    data = json.dumps(body, sort_keys=True, ensure_ascii=False, indent=1).encode() + b"\n"
    return MAGIC + _sha256(data).hexdigest().encode() + b"\n" + data


def decode(data: bytes) -> list[StoredBoot]:
    """The boots a file holds; raises BootStoreCorrupt when it is torn, altered or malformed."""
    header, sep, body = data.partition(b"\n")
    if not sep or not header.startswith(MAGIC):
        raise BootStoreCorrupt("no ostreewatch-boots header")
    if header[len(MAGIC) :].decode("ascii", "replace") != _sha256(body).hexdigest():
        raise BootStoreCorrupt("the SHA-256 in the header does not match the content (torn or altered)")
    try:
        parsed = json.loads(body)
        items = parsed["boots"]
        if not isinstance(items, list):
            raise TypeError("boots is not a list")
        out = []
        for item in items:
            exp = item["expectation"]
            out.append(
                StoredBoot(
                    bootoutcome.BootRecord.from_dict(item["record"]),
                    None if exp is None else bootoutcome.expectation_from_dict(exp),
                )
            )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise BootStoreCorrupt(f"malformed content: {e}") from None
    return out[:MAX_BOOTS]


@dataclass(frozen=True)
class Loaded:
    """What load() found: the boots (empty on a fresh start), and why the file was set aside, if it was."""

    boots: list[StoredBoot]
    corrupt: str = ""  # the reason; "" when the file was good or absent


def load(directory: str) -> Loaded:
    """The stored boots. A corrupt file is renamed boots.corrupt (kept for a human) and reported.

    Raises OSError only when the directory cannot be read at all.
    """
    path = os.path.join(directory, FILE_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return Loaded([])
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO):  # a symlink, a socket: not a file of ours
            return _set_aside(directory, f"{path} is not a regular file")
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return _set_aside(directory, f"{path} is not a regular file")
        data = os.read(fd, MAX_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SIZE:
        return _set_aside(directory, f"{path} is larger than {MAX_SIZE} bytes")
    try:
        return Loaded(decode(data))
    except BootStoreCorrupt as e:
        return _set_aside(directory, f"{path}: {e}")


def _set_aside(directory: str, reason: str) -> Loaded:
    with contextlib.suppress(OSError):
        os.replace(os.path.join(directory, FILE_NAME), os.path.join(directory, CORRUPT_NAME))
    return Loaded([], reason)


def save(directory: str, boots: list[StoredBoot]) -> None:
    """Replace the file by BOOTS, crash-safe. Raises OSError."""
    from ._writehelper import atomic_replace  # ctypes and friends: not before the daemon's READY=1

    atomic_replace(os.path.join(directory, FILE_NAME), encode(boots))


def with_expectation(boots: list[StoredBoot], expectation: bootoutcome.Expectation) -> list[StoredBoot]:
    """BOOTS with the newest boot's expectation replaced (the boot must be EXPECTATION's)."""
    if not boots or boots[0].record.boot_id != expectation.boot_id:
        raise ValueError("the expectation is not the newest boot's")
    return [replace(boots[0], expectation=expectation), *boots[1:]]


def begin_boot(
    boots: list[StoredBoot], facts: bootoutcome.BootFacts, history_lost: str = ""
) -> tuple[list[StoredBoot], bootoutcome.BootRecord, bool]:
    """(boots with this boot judged in front, its record, new): a daemon restarted in the same boot judges nothing.

    HISTORY_LOST: why the stored records were set aside, for the reason of a first record.
    """
    if boots and boots[0].record.boot_id == facts.boot_id:
        return boots, boots[0].record, False
    previous = boots[0] if boots else None
    record = bootoutcome.judge(
        previous.expectation if previous is not None else None,
        facts,
        previous_boot_id=previous.record.boot_id if previous is not None else "",
        history_lost=history_lost,
    )
    return [StoredBoot(record), *boots][:MAX_BOOTS], record, True
