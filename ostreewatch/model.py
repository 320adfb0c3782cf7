"""The boot-state snapshot: immutable values, and their shape on the bus.

Field names are the contract (dbus/org.ostreewatch1.Manager.xml): properties keep the D-Bus names,
dictionary keys are snake_case, "" means none, -1 means unknown for numbers.
Nothing here does I/O.
"""

from __future__ import annotations

from . import _interface
from ._record import fields, frozen
from .bootoutcome import BOOT_RECORD_KEYS, GREENBOOT_VARS
from .bootoutcome import BootRecord as BootRecord  # BootHistory's records; the service builds them back
from .parse.bls import EntryKeys

# `typing` and `dataclasses` are not imported: this module is imported before READY=1
# (ostreewatch/daemon.py), and mypy treats any TYPE_CHECKING name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


@frozen
class Paths:
    """Where to read: a sysroot (holds boot/ and ostree/), a mountinfo, a kernel command line, a run dir."""

    sysroot: str = "/"
    mountinfo: str = "/proc/self/mountinfo"
    cmdline: str = "/proc/cmdline"
    run: str = "/run"


# D-Bus signature of each key of the a{sv} dictionaries.
DEPLOYMENT_KEYS: dict[str, str] = {
    "id": "s",  # OSNAME-CHECKSUM.SERIAL
    "osname": "s",
    "checksum": "s",
    "serial": "i",
    "index": "i",  # position in boot order; -1 for a staged deployment
    "path": "s",  # the deployment directory as the host sees it: /ostree/deploy/OS/deploy/CSUM.SERIAL
    "entry": "s",  # entry id, "" when no entry points at it
    "bootcsum": "s",
    "bootserial": "i",  # -1 when no entry
    "booted": "b",
    "default": "b",
    "rollback": "b",
    "staged": "b",
    "pinned": "b",
    "origin": "s",  # the refspec (or container image reference) of the .origin file
    "version": "s",  # the commit's "version" metadata, else os-release OSTREE_VERSION / IMAGE_VERSION / VERSION
    "title": "s",  # os-release PRETTY_NAME
}

BOOT_ENTRY_KEYS: dict[str, str] = {
    "id": "s",  # file name less .conf and boot-counting suffix
    "file": "s",  # file name as on disk
    "title": "s",
    "version": "s",
    "sort_key": "s",
    "machine_id": "s",
    "linux": "s",
    "initrd": "as",
    "options": "s",  # all options lines joined by a space
    "devicetree": "s",
    "architecture": "s",
    "ostree": "s",  # the ostree= argument of options, "" when none
    "deployment": "s",  # the deployment id it resolves to, "" when none
    "default": "b",
    "booted": "b",
    "tries_left": "i",  # -1 when the file has no boot-counting suffix
}

MOUNT_KEYS: dict[str, str] = {
    "mount_point": "s",
    "mount_id": "u",
    "parent_id": "u",
    "device": "s",  # "MAJOR:MINOR"
    "root": "s",
    "source": "s",
    "fstype": "s",
    "options": "s",  # per-mount options
    "super_options": "s",
    "read_only": "b",
    "propagation": "s",  # optional fields joined by a space ("shared:1 master:2"), "" = private
}

PROBLEM_KEYS: dict[str, str] = {
    "code": "s",  # stable code: PROBLEM_CODES, docs/problems.md
    "message": "s",
    "subject": "s",  # the entry id, deployment id, path or mount point concerned
}

# BootedRoot: what ostree-prepare-root recorded in /run/ostree-booted (ostree
# src/libotcore/otcore.h OTCORE_RUN_BOOTED_KEY_*; types as
# src/switchroot/ostree-prepare-root.c and src/libotcore/otcore-prepare-root.c
# write them), keyed by our snake_case name; absent keys are omitted.
BOOTED_ROOT_KEYS: dict[str, str] = {
    "composefs": "b",  # "composefs": composefs was used for /
    "composefs_verity": "b",  # "composefs.verity": fs-verity was required
    "composefs_signed": "s",  # "composefs.signed": the public key that verified the commit
    "root_transient": "b",  # "root.transient"
    "root_transient_ro": "b",  # "root.transient-ro"
    "sysroot_ro": "b",  # "sysroot-ro": /sysroot is mounted read-only
    "transient_etc": "s",  # "transient-etc": the directory of the transient /etc overlay
    "backing_device": "t",  # "backing-root-device-inode" (tt), first: st_dev of the deployment dir
    "backing_inode": "t",  # ... second: st_ino
}
# ostree's key -> ours (backing-root-device-inode is split in two).
BOOTED_ROOT_OSTREE_KEYS: dict[str, str] = {
    "composefs": "composefs",
    "composefs.verity": "composefs_verity",
    "composefs.signed": "composefs_signed",
    "root.transient": "root_transient",
    "root.transient-ro": "root_transient_ro",
    "sysroot-ro": "sysroot_ro",
    "transient-etc": "transient_etc",
}

# BootAssessment (docs/boot-outcome.md): greenboot's grubenv variables where set, and boot
# counting's tries per counted entry (entry id -> count), as bootctl names them.
BOOT_ASSESSMENT_KEYS: dict[str, str] = {
    **{name: "s" for name in GREENBOOT_VARS},
    "tries_left": "a{si}",
    "tries_done": "a{si}",
    "boot_complete": "b",  # boot-complete.target reached in this boot (systemd over D-Bus); absent when unknown
}

# The mount points published in Mounts, in this order.
WATCHED_MOUNT_POINTS: tuple[str, ...] = ("/", "/sysroot", "/usr", "/etc", "/var", "/boot", "/boot/efi")


@frozen
class Deployment:
    id: str
    osname: str
    checksum: str
    serial: int
    index: int
    path: str
    entry: str = ""
    bootcsum: str = ""
    bootserial: int = -1
    booted: bool = False
    default: bool = False
    rollback: bool = False
    staged: bool = False
    pinned: bool = False
    origin: str = ""
    version: str = ""
    title: str = ""


@frozen
class BootEntry(EntryKeys):
    """A boot entry as published: the entry file's keys (parse/bls.py), then what the boot state adds."""

    ostree: str = ""
    deployment: str = ""
    default: bool = False
    booted: bool = False
    tries_left: int = -1


@frozen
class Mount:
    mount_point: str
    mount_id: int
    parent_id: int
    device: str
    root: str
    source: str
    fstype: str
    options: str
    super_options: str
    read_only: bool
    propagation: str


@frozen
class Problem:
    code: str
    message: str
    subject: str = ""


class Code:
    """One problem code and its one-line meaning; NAME is its attribute name in ProblemCode."""

    __slots__ = ("name", "code", "description")

    def __init__(self, code: str, description: str) -> None:
        self.name = ""
        self.code = code
        self.description = description

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ProblemCode.{self.name}"


class _CodeTable(type):
    """Iterating ProblemCode gives its codes in the order they are declared (as an Enum would)."""

    def __iter__(cls) -> Iterator[Code]:
        return (value for value in vars(cls).values() if isinstance(value, Code))


# Not an enum.Enum: `enum` costs ~8 ms of every start, and this module is imported before READY=1.
class ProblemCode(metaclass=_CodeTable):
    """Every problem code the reader emits, with its one-line meaning (docs/problems.md says more)."""

    # Boot entries
    ENTRY_UNREADABLE = Code("entry-unreadable", "an entry file cannot be read safely; left out of BootEntries")
    ENTRY_UNPARSABLE = Code("entry-unparsable", "an entry file is not a valid BLS entry; left out of BootEntries")
    ENTRY_NO_KERNEL = Code("entry-no-kernel", "an entry has neither linux nor efi")
    OSTREE_ARG_UNRESOLVED = Code("ostree-arg-unresolved", "an entry's ostree= argument leads to no deployment")
    ENTRIES_DIR_MISSING = Code("entries-dir-missing", "there is no boot/loader/entries directory")
    LOADER_LINK_DANGLING = Code("loader-link-dangling", "boot/loader points to a directory that does not exist")
    STALE_LOADER_DIR = Code("stale-loader-dir", "a boot/loader.N directory that the loader link does not name")
    STALE_BOOT_DIR = Code("stale-boot-dir", "an ostree/boot.N or boot.N.M that the boot links in use do not name")
    SYSROOT_LOCK_HELD = Code(
        "sysroot-lock-held", "ostree's sysroot lock has been held for longer than the daemon waits"
    )
    # Deployments
    DEPLOYMENT_NO_ENTRY = Code("deployment-no-entry", "a deployment has no boot entry pointing at it")
    ORIGIN_UNPARSABLE = Code("origin-unparsable", "a deployment's .origin file cannot be read or parsed")
    STAGED_UNPARSABLE = Code("staged-unparsable", "the staged-deployment file is not the GVariant ostree writes")
    RUN_FILE_UNREADABLE = Code("run-file-unreadable", "a file under the run directory is not what ostree writes")
    # Default and next entry
    SAVED_ENTRY_MISSING = Code("saved-entry-missing", "the saved default names no existing entry")
    SAVED_ENTRY_IGNORED = Code(
        "saved-entry-ignored", "saved_entry or next_entry is set but the grub.cfg never reads it"
    )
    GRUB_CFG_UNSUPPORTED = Code("grub-cfg-unsupported", "grub.cfg cannot be read or its default cannot be evaluated")
    BOOT_FALLBACK = Code("boot-fallback", "the default was tried and not kept")
    DEFAULT_ENTRY_MOVED = Code("default-entry-moved", "the saved default now boots another deployment than chosen")
    GRUBENV_UNPARSABLE = Code("grubenv-unparsable", "the grubenv is not a valid environment block")
    LOADER_CONF_UNPARSABLE = Code("loader-conf-unparsable", "loader.conf cannot be read or is not UTF-8")
    # The booted host
    BOOTED_UNKNOWN = Code("booted-unknown", "ostree-booted exists but no deployment matches it")
    USR_WRITABLE = Code("usr-writable", "/usr is mounted read-write while the booted deployment is not unlocked")
    BOOT_NOT_MOUNTED = Code("boot-not-mounted", "/boot is not a mount point on a booted host")
    # The mount table
    MOUNTINFO_UNPARSABLE = Code("mountinfo-unparsable", "the mount table cannot be read, or some lines are malformed")
    # Boot records (ostreewatch/boottracker.py, docs/boot-outcome.md)
    FINALIZE_FAILED = Code("finalize-failed", "ostree could not finalize the staged deployment at the last shutdown")
    BOOT_RECORD_CORRUPT = Code("boot-record-corrupt", "the boot records file was torn or altered; set aside")
    BOOT_RECORD_FAILED = Code("boot-record-failed", "the boot id or the boot records cannot be read or written")


# code -> its one-line meaning: the codes Problems may hold (docs/problems.md documents each).
PROBLEM_CODES: dict[str, str] = {c.code: c.description for c in ProblemCode}

# Codes never emitted any more, kept documented (docs/problems.md, "Retired codes") for scripts.
RETIRED_PROBLEM_CODES: dict[str, str] = {
    "booted-not-default": "raised for every pending update; a real fallback is boot-fallback",
}


@frozen
class Snapshot:
    """The whole boot state at one moment; the D-Bus properties, minus Generation and Version."""

    Bootloader: str = "none"
    OstreeBooted: bool = False
    BootedDeployment: str = ""
    DefaultDeployment: str = ""
    RollbackDeployment: str = ""
    StagedDeployment: str = ""
    DefaultEntry: str = ""
    NextEntry: str = ""
    BootedEntry: str = ""
    DefaultEntrySource: str = "none"
    BootedRoot: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs in BOOTED_ROOT_KEYS order
    Deployments: tuple[Deployment, ...] = ()
    BootEntries: tuple[BootEntry, ...] = ()
    Mounts: tuple[Mount, ...] = ()
    Problems: tuple[Problem, ...] = ()
    LastBoot: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs in BOOT_RECORD_KEYS order
    BootHistory: tuple[BootRecord, ...] = ()  # newest first
    BootAssessment: tuple[tuple[str, Any], ...] = ()  # (key, value) pairs in BOOT_ASSESSMENT_KEYS order


@frozen
class Caller:
    """Who called a method, as the bus daemon vouches for it (GetConnectionCredentials)."""

    uid: int = -1  # -1: unknown (then nothing is granted)
    pid: int = -1
    bus_name: str = ""  # the unique name, ":1.42"
    unit: str = ""  # the systemd unit of pid, "" when unknown


# D-Bus signature of each snapshot property: the interface's (dbus/org.ostreewatch1.Manager.xml,
# through the generated _interface.py) less Generation and Version, which the service adds.
PROPERTY_SIGNATURES: dict[str, str] = {
    name: sig for name, sig in _interface.PROPERTIES.items() if name not in ("Generation", "Version")
}


@frozen
class RecordKind:
    """An aa{sv} property: the record class of its items and the D-Bus signature of each key."""

    cls: type[Any]
    keys: dict[str, str]


# The one property -> record map: every aa{sv} property of the interface (service.py and the tests read it).
RECORDS: dict[str, RecordKind] = {
    "Deployments": RecordKind(Deployment, DEPLOYMENT_KEYS),
    "BootEntries": RecordKind(BootEntry, BOOT_ENTRY_KEYS),
    "Mounts": RecordKind(Mount, MOUNT_KEYS),
    "Problems": RecordKind(Problem, PROBLEM_KEYS),
    "BootHistory": RecordKind(BootRecord, BOOT_RECORD_KEYS),
}
# record class -> its keys, derived from RECORDS.
_KEYS_OF: dict[type[Any], dict[str, str]] = {r.cls: r.keys for r in RECORDS.values()}


def record_to_dict(record: Any) -> dict[str, Any]:
    """One Deployment/BootEntry/Mount/Problem as a plain dict of its contract keys."""
    out = {}
    for key in _KEYS_OF[type(record)]:
        value = getattr(record, key)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def snapshot_to_plain(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as {"Property": value}: JSON-ready, the shape of --json output."""
    out: dict[str, Any] = {}
    for name in fields(Snapshot):
        value = getattr(snapshot, name)
        if PROPERTY_SIGNATURES[name] == "a{sv}":
            value = dict(value)
        elif isinstance(value, tuple):
            value = [record_to_dict(item) for item in value]
        out[name] = value
    return out


def booted_root_items(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A BootedRoot dictionary as the snapshot keeps it: known keys only, in BOOTED_ROOT_KEYS order."""
    return tuple((k, values[k]) for k in BOOTED_ROOT_KEYS if k in values)


def dict_items(property_name: str, values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """An a{sv} property's dictionary as the snapshot keeps it: known keys only, in their declared order."""
    return tuple((k, values[k]) for k in key_signatures(property_name) if k in values)


def key_signatures(property_name: str) -> dict[str, str]:
    """The a{sv} key signatures of an aa{sv} (or a{sv}) property."""
    if property_name == "BootedRoot":
        return BOOTED_ROOT_KEYS
    if property_name == "LastBoot":
        return BOOT_RECORD_KEYS
    if property_name == "BootAssessment":
        return BOOT_ASSESSMENT_KEYS
    return RECORDS[property_name].keys


def snapshot_from_plain(props: dict[str, Any]) -> Snapshot:
    """GetAll's plain values back into a Snapshot (unknown keys ignored, missing ones defaulted)."""
    values: dict[str, Any] = {}
    for name in PROPERTY_SIGNATURES:
        if name not in props:
            continue
        value = props[name]
        if PROPERTY_SIGNATURES[name] == "a{sv}":
            value = dict_items(name, value) if isinstance(value, dict) else ()
        elif name in RECORDS:
            cls, keys = RECORDS[name].cls, RECORDS[name].keys
            value = tuple(
                cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in item.items() if k in keys})
                for item in value
            )
        values[name] = value
    return Snapshot(**values)
