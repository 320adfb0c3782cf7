"""Planning a boot default write: validate the id, find it, and compute the new file's bytes.

Pure reads (blocking: the writer runs them in an executor): nothing here
writes. Paths are resolved inside the sysroot and files read through
sysroot.Root; the new bytes come from the pure parsers (parse.grubenv,
parse.loaderconf); parse.grubcfg says whether GRUB reads the variable at all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from ostreewatch import errors, model, state
from ostreewatch.layout import (
    ENTRIES_DIR,
    GRUB_NEXT_DEPLOYMENT,
    GRUB_SAVED_DEPLOYMENT,
    LOADER_COMMENT,
    LOADER_CONFS,
    grubenv_location,
)
from ostreewatch.parse import grubcfg, grubenv, loaderconf
from ostreewatch.parse.bls import split_boot_counting
from ostreewatch.sysroot import ReadRefused, Root

MAX_ID_BYTES = 255

# The grubenv variables: (entry variable, recorded deployment variable). The state
# reader (state.py) compares the second with the entry's deployment (problem default-entry-moved).
GRUB_VARS = {
    "default": ("saved_entry", GRUB_SAVED_DEPLOYMENT),
    "next": ("next_entry", GRUB_NEXT_DEPLOYMENT),
}

_MAX_FILE = 1 << 20  # grubenv, loader.conf and grub.cfg are small; refuse anything absurd
GLOB_CHARS = set("*?[]\\")
_DEPLOY_ID = re.compile(r"[A-Za-z0-9_.+-]{1,200}-[0-9a-f]{64}\.[0-9]{1,9}")


@dataclass(frozen=True)
class Plan:
    """One planned file replacement: path, old bytes (None: absent), new bytes, previous value."""

    path: str
    old: bytes | None
    new: bytes
    previous: str


def printable(value: Any, limit: int = 256) -> str:
    """A journal-safe rendering of an untrusted id: control characters escaped, length capped."""
    if not isinstance(value, str):
        return repr(value)[:limit]
    text = value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(value) > limit:
        text += f"...({len(value)} characters)"
    return text


def validate_id(entry_id: Any) -> str:
    """The requested id, less one ".conf"; "" means clear. Raises InvalidArgs before anything is read."""
    if not isinstance(entry_id, str):
        raise errors.InvalidArgs("the entry id must be a string")
    if entry_id == "":
        return ""
    try:
        raw = entry_id.encode("utf-8", "strict")
    except UnicodeEncodeError:
        raise errors.InvalidArgs("the entry id is not valid UTF-8") from None
    if len(raw) > MAX_ID_BYTES:
        raise errors.InvalidArgs(f"the entry id is {len(raw)} bytes long; at most {MAX_ID_BYTES} are allowed")
    for bad, name in (("\n", "a newline"), ("\0", "a NUL byte"), ("=", "'='"), ("/", "'/'")):
        if bad in entry_id:
            raise errors.InvalidArgs(f"the entry id must not contain {name}")
    if ".." in entry_id:
        raise errors.InvalidArgs("the entry id must not contain '..'")
    if any(not c.isprintable() for c in entry_id):
        raise errors.InvalidArgs("the entry id must not contain control characters")
    if entry_id.strip() != entry_id or not entry_id.strip():
        raise errors.InvalidArgs("the entry id must not be blank or start or end with white space")
    stem = entry_id[:-5] if entry_id.endswith(".conf") else entry_id
    if not stem:
        raise errors.InvalidArgs("the entry id is empty once '.conf' is removed")
    return stem


def find_entry(snapshot: model.Snapshot, stem: str) -> model.BootEntry:
    """The published entry with this id (or this file name less .conf); NoSuchEntry otherwise."""
    for entry in snapshot.BootEntries:
        if entry.id == stem:
            return entry
    for entry in snapshot.BootEntries:
        if entry.file in (stem, stem + ".conf"):
            return entry
    known = ", ".join(e.id for e in snapshot.BootEntries[:20]) or "none"
    raise errors.NoSuchEntry(f"no boot entry {printable(stem, 64)!r} (entries: {known})")


def validate_deployment_id(value: Any) -> str:
    """OSNAME-CHECKSUM.SERIAL, or InvalidArgs before anything is read."""
    if not isinstance(value, str):
        raise errors.InvalidArgs("the deployment id must be a string")
    if not _DEPLOY_ID.fullmatch(value):
        raise errors.InvalidArgs(
            f"{printable(value, 80)!r} is not a deployment id (OSNAME-CHECKSUM.SERIAL, as in `ostreewatch status`)"
        )
    return value


def find_deployment(snapshot: model.Snapshot, dep_id: str) -> model.Deployment:
    """The published deployment with this id; NoSuchDeployment otherwise."""
    for dep in snapshot.Deployments:
        if dep.id == dep_id:
            return dep
    known = ", ".join(d.id for d in snapshot.Deployments[:10]) or "none"
    raise errors.NoSuchDeployment(f"no deployment {dep_id!r} (deployments: {known})")


# --- paths under the sysroot ----------------------------------------------------------


def resolve_in_sysroot(sysroot: str, rel: str) -> str:
    """Absolute path of REL under SYSROOT, symlinks followed as if SYSROOT were / (never out of it).

    The missing part need not exist. Raises OSError on a loop or a non-directory on the way.
    """
    return Root(os.path.realpath(sysroot)).host_path(rel)


def read_small(path: str) -> bytes | None:
    """Bytes of a regular file at a path resolve_in_sysroot gave (None when absent); OSError for
    a FIFO, a device, a huge file, or one that became a link since."""
    directory, name = os.path.split(path)
    try:
        return Root(directory).read(name, _MAX_FILE)
    except ReadRefused as e:
        if e.reason == ReadRefused.NOT_FOUND:
            return None
        raise OSError(str(e)) from None
    except errors.SysrootError:  # the directory itself is missing
        return None


# --- per boot loader: what to write ---------------------------------------------------


def grub_support(sysroot: str) -> tuple[str | None, dict[str, bool]]:
    """(grub directory, {"default": reads saved_entry, "next": reads next_entry}) as GRUB would.

    The grub.cfg in use (and what it sources) is run by parse.grubcfg, as the state
    reader runs it for DefaultEntry, with the grubenv as it would be after the write:
    saved_entry set and no one-shot next_entry pending (a pending one shadows it for
    one boot only), or next_entry set. "Reads" means a `default` assignment that GRUB
    runs takes the variable, with the grubenv loaded: a mention in a test or a
    menuentry does not count.
    """
    root = Root(sysroot)
    try:
        found = state.read_grub_config(root)
    except ReadRefused:
        found = None  # state.py publishes grub-cfg-unsupported; nothing is written for it
    if found is None:
        return None, {"default": False, "next": False}
    text, files, rel = found
    grub_dir = resolve_in_sysroot(sysroot, os.path.dirname(rel.lstrip("/")))
    env: dict[str, str] = {}
    path = find_grubenv(sysroot, grub_dir)
    data = read_small(path) if path else None
    if data is not None:
        try:
            env = grubenv.parse_grubenv(data)
        except errors.GrubenvError:
            env = {}
    files = dict(files, grubenv="")  # the write creates it beside grub.cfg when it is missing
    probe = "ostreewatch-probe"
    as_default = {k: v for k, v in env.items() if k != "next_entry"} | {"saved_entry": probe}
    on_default = grubcfg.evaluate(text, files, as_default)
    on_next = grubcfg.evaluate(text, files, dict(env, next_entry=probe))
    return grub_dir, {
        "default": on_default.loads_env and on_default.reads_saved_entry,
        "next": on_next.loads_env and on_next.reads_next_entry,
    }


def find_grubenv(sysroot: str, grub_dir: str | None) -> str | None:
    """The grubenv path (resolved inside the sysroot) by layout.grubenv_location; GRUB_DIR is resolved too."""
    top = os.path.realpath(sysroot)
    rel = grubenv_location(Root(top), os.path.relpath(grub_dir, top) if grub_dir else None)
    return resolve_in_sysroot(sysroot, rel) if rel else None


def plan_grub(sysroot: str, which: str, entry_id: str, deployment: str) -> Plan | None:
    """The grubenv rewrite for one call; None when there is nothing to write."""
    grub_dir, support = grub_support(sysroot)
    var, dep_var = GRUB_VARS[which]
    if entry_id and not support[which]:
        if grub_dir is None:
            raise errors.NotSupported(
                f"no grub.cfg under boot/grub2 or boot/grub: cannot tell whether grub reads {var}, so it is not written"
            )
        raise errors.NotSupported(
            f"{grub_dir}/grub.cfg never reads ${{{var}}} (a static grub configuration such as "
            f"Fedora CoreOS's boots the highest ostree entry): writing {var} would have no effect; "
            f"the boot loader would need a grub.cfg that reads ${{{var}}} (grub2-mkconfig's 00_header does)"
        )
    path = find_grubenv(sysroot, grub_dir)
    if path is None:
        return None  # clearing, and there is no grub directory at all
    old = read_small(path)
    if old is None and not entry_id:
        return None  # clearing a variable of a grubenv that does not exist
    base = old if old is not None else grubenv.create_grubenv()
    try:
        previous = grubenv.parse_grubenv(base).get(var, "")
        new = grubenv.update_grubenv(base, {var: entry_id or None, dep_var: deployment or None})
    except errors.GrubenvError as e:
        raise errors.WriteFailed(f"{path}: {e}; the file is unchanged") from None
    return Plan(path, old, new, previous)


def _with_deployment_comment(text: str, deployment: str) -> str:
    """Drop old '#ostreewatch-deployment' lines; put one before the `default` line when DEPLOYMENT."""
    lines = [
        line
        for line in loaderconf._split_lines(text)
        if not line.startswith(LOADER_COMMENT + " ") and line.rstrip("\r\n") != LOADER_COMMENT
    ]
    if deployment:
        default_idx = [i for i, line in enumerate(lines) if re.match(r"[ \t]*default([ \t]|$)", line)]
        if default_idx:
            i = default_idx[-1]
            ending = "\r\n" if lines[i].endswith("\r\n") else "\n"
            lines.insert(i, f"{LOADER_COMMENT} {deployment}{ending}")
    return "".join(lines)


def find_loader_conf(sysroot: str) -> str:
    """The loader.conf that exists (first of LOADER_CONFS); else where to create it: the ESP's loader/ dir."""
    paths = [resolve_in_sysroot(sysroot, rel) for rel in LOADER_CONFS]
    for path in paths:
        if os.path.lexists(path):
            return path
    for path in paths:
        if os.path.isdir(os.path.dirname(path)):
            return path
    return paths[0]


def plan_loader_conf(sysroot: str, which: str, entry_id: str, deployment: str, efivars: str) -> Plan | None:
    """The loader.conf rewrite for one call; None when there is nothing to write."""
    # The next boot on systemd-boot is the EFI variable LoaderEntryOneShot (BootWriter._set_oneshot).
    assert which == "default", which
    path = find_loader_conf(sysroot)
    old = read_small(path)
    if old is None and not entry_id:
        return None
    try:
        text = (old or b"").decode("utf-8", "strict")
        previous = loaderconf.parse_loader_conf(text).default or ""
        # systemd-boot ids keep ".conf": the glob must match "ID.conf".
        value = entry_id + ".conf" if entry_id else None
        new_text = _with_deployment_comment(loaderconf.set_default(text, value), deployment if entry_id else "")
    except (UnicodeDecodeError, errors.LoaderConfError) as e:
        raise errors.WriteFailed(f"{path}: {e}; the file is unchanged") from None
    previous = previous[:-5] if previous.endswith(".conf") else previous
    return Plan(path, old, new_text.encode("utf-8"), previous)


def entry_on_disk(sysroot: str, entry_id: str) -> bool:
    """True when boot/loader/entries still holds a file with this id (checked under the lock)."""
    directory = resolve_in_sysroot(sysroot, ENTRIES_DIR)
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return any(name.endswith(".conf") and split_boot_counting(name)[0] == entry_id for name in names)


def is_read_only(path: str) -> bool:
    """True when the filesystem holding PATH's directory is mounted read-only (per mount or superblock)."""
    return bool(os.statvfs(os.path.dirname(path)).f_flag & os.ST_RDONLY)
