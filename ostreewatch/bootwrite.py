"""SetDefaultEntry / SetNextEntry / SetDefaultDeployment: the daemon's writes (docs/default-entry.md).

Order of a call: validate the id -> find it in the snapshot -> authorize
(the call's authz.Gate: uid 0, or polkit) -> check the boot loader can honour it -> take the asyncio lock and
ostree's sysroot lock (without waiting: Busy) -> re-check the entry on disk ->
compute the new bytes with the pure parsers -> replace the file crash-safely
(ostreewatch._writehelper), in a helper process with a private mount namespace
when the file's filesystem is mounted read-only. SetDefaultDeployment (and
SetDefaultEntry where grub.cfg never reads saved_entry) reorders deployments
through libostree in ostreewatch._deployhelper instead. Every attempt ends in
one journal record. Everything blocking runs in an executor thread (helper
processes are started from there), never on the event loop; a cancelled call
still finishes its write before the sysroot lock is released.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import logging
import os
import re
import struct
import subprocess
import sys
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Callable

from ostreewatch import authz, errors, model, state
from ostreewatch._writehelper import ContentChanged, atomic_replace
from ostreewatch.journal import Journal
from ostreewatch.layout import (
    ENTRIES_DIR,
    GRUB_DIRS,
    GRUB_NEXT_DEPLOYMENT,
    GRUB_SAVED_DEPLOYMENT,
    LOADER_COMMENT,
    LOADER_CONFS,
    take_sysroot_lock,
)
from ostreewatch.parse import grubcfg, grubenv, loaderconf
from ostreewatch.parse.bls import split_boot_counting
from ostreewatch.sysroot import ReadRefused, Root

log = logging.getLogger("ostreewatch.bootwrite")

METHODS = {"default": "SetDefaultEntry", "next": "SetNextEntry"}
MAX_ID_BYTES = 255

EFIVARS = "/sys/firmware/efi/efivars"

# The grubenv variables: (entry variable, recorded deployment variable). The state
# reader (state.py) compares the second with the entry's deployment (problem default-entry-moved).
GRUB_VARS = {
    "default": ("saved_entry", GRUB_SAVED_DEPLOYMENT),
    "next": ("next_entry", GRUB_NEXT_DEPLOYMENT),
}

_MAX_FILE = 1 << 20  # grubenv, loader.conf and grub.cfg are small; refuse anything absurd
_GLOB_CHARS = set("*?[]\\")


@dataclass(frozen=True)
class _Plan:
    """One planned file replacement: path, old bytes (None: absent), new bytes, previous value."""

    path: str
    old: bytes | None
    new: bytes
    previous: str


def _printable(value: Any, limit: int = 256) -> str:
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
    raise errors.NoSuchEntry(f"no boot entry {_printable(stem, 64)!r} (entries: {known})")


# --- paths under the sysroot ----------------------------------------------------------


def resolve_in_sysroot(sysroot: str, rel: str) -> str:
    """Absolute path of REL under SYSROOT, symlinks followed as if SYSROOT were / (never out of it).

    The missing part need not exist. Raises OSError on a loop or a non-directory on the way.
    """
    return Root(os.path.realpath(sysroot)).host_path(rel)


def _read_small(path: str) -> bytes | None:
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
    data = _read_small(path) if path else None
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
    """The grubenv path (resolved inside the sysroot): the first that exists, else beside grub.cfg."""
    for rel in GRUB_DIRS:
        path = resolve_in_sysroot(sysroot, rel + "/grubenv")
        if os.path.lexists(path):
            return path
    return os.path.join(grub_dir, "grubenv") if grub_dir else None


def plan_grub(sysroot: str, which: str, entry_id: str, deployment: str) -> _Plan | None:
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
    old = _read_small(path)
    if old is None and not entry_id:
        return None  # clearing a variable of a grubenv that does not exist
    base = old if old is not None else grubenv.create_grubenv()
    try:
        previous = grubenv.parse_grubenv(base).get(var, "")
        new = grubenv.update_grubenv(base, {var: entry_id or None, dep_var: deployment or None})
    except errors.GrubenvError as e:
        raise errors.WriteFailed(f"{path}: {e}; the file is unchanged") from None
    return _Plan(path, old, new, previous)


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


def plan_loader_conf(sysroot: str, which: str, entry_id: str, deployment: str, efivars: str) -> _Plan | None:
    """The loader.conf rewrite for one call; None when there is nothing to write."""
    # The next boot on systemd-boot is the EFI variable LoaderEntryOneShot (BootWriter._set_oneshot).
    assert which == "default", which
    path = find_loader_conf(sysroot)
    old = _read_small(path)
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
    return _Plan(path, old, new_text.encode("utf-8"), previous)


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


# --- systemd-boot's one-shot entry: the EFI variable LoaderEntryOneShot --------------------

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
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
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


# --- reordering deployments: the helper process around libostree --------------------------

DEPLOY_PYTHON = "/usr/bin/python3"  # has gi and gir1.2-ostree-1.0; the daemon's venv has neither
DEPLOY_TIMEOUT = 300.0
_DEPLOY_ID = re.compile(r"[A-Za-z0-9_.+-]{1,200}-[0-9a-f]{64}\.[0-9]{1,9}")


def validate_deployment_id(value: Any) -> str:
    """OSNAME-CHECKSUM.SERIAL, or InvalidArgs before anything is read."""
    if not isinstance(value, str):
        raise errors.InvalidArgs("the deployment id must be a string")
    if not _DEPLOY_ID.fullmatch(value):
        raise errors.InvalidArgs(
            f"{_printable(value, 80)!r} is not a deployment id (OSNAME-CHECKSUM.SERIAL, as in `ostreewatch status`)"
        )
    return value


def find_deployment(snapshot: model.Snapshot, dep_id: str) -> model.Deployment:
    for dep in snapshot.Deployments:
        if dep.id == dep_id:
            return dep
    known = ", ".join(d.id for d in snapshot.Deployments[:10]) or "none"
    raise errors.NoSuchDeployment(f"no deployment {dep_id!r} (deployments: {known})")


_HELPER_ERRORS = {"busy": errors.Busy, "no-such-deployment": errors.NoSuchDeployment, "staged": errors.NotSupported}


def _run_helper(
    python: str, module: str, request: bytes, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """`PYTHON -m MODULE` from /, REQUEST on its stdin, its output captured (TimeoutExpired, OSError as run's).

    Unlike subprocess.run, a helper that outlives TIMEOUT is never killed: it may be
    in the middle of ostree's write with /boot frozen (ostree's thaw watchdog releases
    it); a thread waits for it and reaps it, and the caller gets TimeoutExpired.
    """
    proc = subprocess.Popen(
        [python, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
    )
    try:
        out, err = proc.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        threading.Thread(target=proc.communicate, name="helper-reaper", daemon=True).start()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_deploy_helper(
    sysroot: str, dep_id: str, python: str = DEPLOY_PYTHON, timeout: float = DEPLOY_TIMEOUT
) -> dict[str, Any]:
    """Run `PYTHON -m ostreewatch._deployhelper` (blocking); its answer, or the named error it maps to."""
    request = json.dumps({"sysroot": os.path.abspath(sysroot), "deployment": dep_id}).encode()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=package_parent)  # the helper needs only this package, not the venv
    try:
        proc = _run_helper(python, "ostreewatch._deployhelper", request, env, timeout)
    except subprocess.TimeoutExpired:
        # Never kill it: it may hold /boot frozen; ostree's thaw watchdog releases it.
        raise errors.WriteFailed(f"the deployment helper did not finish in {timeout:.0f} s") from None
    except OSError as e:
        raise errors.WriteFailed(f"cannot run the deployment helper {python}: {e}") from None
    try:
        answer = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        if not isinstance(answer, dict):
            raise ValueError(answer)
    except (ValueError, IndexError):
        tail = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise errors.WriteFailed(f"the deployment helper exited with {proc.returncode}: {tail}") from None
    if not answer.get("ok"):
        cls = _HELPER_ERRORS.get(str(answer.get("kind")), errors.WriteFailed)
        raise cls(str(answer.get("error", "")))
    return answer


# --- the writer -----------------------------------------------------------------------

Refresh = Callable[[], Awaitable[model.Snapshot]]


class BootWriter:
    """Writes the boot default for the daemon; one call at a time."""

    def __init__(
        self,
        paths: model.Paths,
        journal: Journal,
        *,
        efivars: str = EFIVARS,
        python: str = sys.executable,
        deploy_python: str = DEPLOY_PYTHON,
        refresh: Refresh | None = None,
    ) -> None:
        self._paths = paths
        self._journal = journal
        self._efivars = efivars
        self._python = python
        self._deploy_python = deploy_python
        self._refresh = refresh
        self._lock: asyncio.Lock | None = None  # created on the loop that uses it (Python 3.9)

    def _record(self, method: str, caller: model.Caller, snapshot: model.Snapshot, **extra: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "caller_uid": caller.uid,
            "caller_pid": caller.pid,
            "caller_bus_name": caller.bus_name,
            "caller_unit": caller.unit,
            "method": method,
            "entry": "",
            "deployment": "",
            "previous": "",
            "new": "",
            "bootloader": snapshot.Bootloader,
        }
        record.update(extra)
        return record

    async def _audited(self, record: dict[str, Any], job: Callable[[], Awaitable[Any]]) -> Any:
        """Run JOB; one journal record whatever happens; every failure leaves as a named error."""
        method = record["method"]
        try:
            result = await job()
        except errors.OstreewatchError as e:
            failed = isinstance(e, errors.WriteFailed)
            self._audit(record, "failed" if failed else "refused", e.dbus_name)
            raise
        except Exception as e:  # an unexpected failure is still answered with a named error
            log.exception("%s failed", method)
            self._audit(record, "failed", errors.WriteFailed.dbus_name)
            raise errors.WriteFailed(f"{method} failed: {type(e).__name__}: {e}") from e
        self._audit(record, "granted", "")
        return result

    def _audit(self, record: dict[str, Any], result: str, error: str) -> None:
        try:
            self._journal.write_attempt(**record, result=result, error=error)
        except Exception:  # the audit must never turn a done write into an error
            log.exception("cannot journal the write attempt")

    async def reload(self, gate: authz.Gate, do_reload: Callable[[], Awaitable[int]], snapshot: model.Snapshot) -> int:
        """Reload(): authorized like the writes; only refusals are journaled (a granted Reload changes nothing)."""
        record = self._record("Reload", gate.caller, snapshot)
        try:
            record["authorized_by"] = await gate.check({})
        except errors.OstreewatchError as e:
            self._audit(record, "refused", e.dbus_name)
            raise
        return await do_reload()

    async def set_entry(
        self, which: str, entry_id: str, who: authz.Gate | model.Caller, snapshot: model.Snapshot
    ) -> None:
        """Make ENTRY_ID the default ("default") or the next boot ("next"); "" clears. Audited."""
        method = METHODS.get(which, str(which))
        gate = authz.gate_for(who, method if method in authz.ACTIONS else "SetDefaultEntry")
        record = self._record(method, gate.caller, snapshot, entry=_printable(entry_id))
        await self._audited(record, lambda: self._set_entry(which, entry_id, gate, snapshot, record))

    async def set_deployment(self, dep_id: str, who: authz.Gate | model.Caller, snapshot: model.Snapshot) -> str:
        """SetDefaultDeployment: make DEP_ID the first deployment; the entry id that now boots it. Audited."""
        gate = authz.gate_for(who, "SetDefaultDeployment")
        record = self._record("SetDefaultDeployment", gate.caller, snapshot, deployment=_printable(dep_id))
        return str(await self._audited(record, lambda: self._set_deployment(dep_id, gate, snapshot, record)))

    async def _set_deployment(
        self, dep_id: str, gate: authz.Gate, snapshot: model.Snapshot, record: dict[str, Any]
    ) -> str:
        dep_id = validate_deployment_id(dep_id)
        dep = find_deployment(snapshot, dep_id)
        record["authorized_by"] = await gate.check({"method": "SetDefaultDeployment", "deployment": dep_id})
        if dep.staged:
            raise errors.NotSupported(
                f"deployment {dep_id} is staged: it becomes the default when "
                "ostree-finalize-staged writes it at shutdown"
            )
        return await self._reorder(dep_id, snapshot, record)

    async def _reorder(self, dep_id: str, snapshot: model.Snapshot, record: dict[str, Any]) -> str:
        """Reorder through the helper, then follow a saved_entry a generated grub.cfg reads; the new entry id."""
        record["previous"] = snapshot.DefaultDeployment
        record["new"] = dep_id
        if self._lock is None:
            self._lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        async with self._lock:
            answer = await loop.run_in_executor(
                None, run_deploy_helper, self._paths.sysroot, dep_id, self._deploy_python
            )
            record["changed"] = bool(answer.get("changed"))
            # Read the new state (not yet published) to learn the entry ostree gave the deployment.
            fresh = await loop.run_in_executor(None, _read_snapshot, self._paths)
            entry = next((e.id for e in fresh.BootEntries if e.deployment == dep_id), "")
            if entry and fresh.Bootloader == "grub2":
                # A grub.cfg that reads saved_entry would still boot the entry saved_entry names, and
                # ostree renumbered the entries: keep saved_entry on the requested deployment.
                # Done before publishing, so that the published default moves once.
                await loop.run_in_executor(None, follow_saved_entry, self._paths.sysroot, entry, dep_id, self._python)
            if self._refresh is not None:
                published = await self._refresh()
                entry = next((e.id for e in published.BootEntries if e.deployment == dep_id), entry)
            if not record.get("entry"):  # SetDefaultEntry keeps the entry it was asked for
                record["entry"] = entry
        return entry

    async def _set_entry(
        self, which: str, entry_id: str, gate: authz.Gate, snapshot: model.Snapshot, record: dict[str, Any]
    ) -> None:
        method = record["method"]
        if which not in METHODS:
            raise errors.InvalidArgs(f"unknown write {which!r}")
        stem = validate_id(entry_id)
        bootloader = snapshot.Bootloader
        deployment = ""
        if stem:
            entry = find_entry(snapshot, stem)
            stem, deployment = entry.id, entry.deployment
            record["deployment"] = deployment
            if bootloader == "systemd-boot" and set(stem) & _GLOB_CHARS:
                raise errors.InvalidArgs("a systemd-boot default is a glob: the id must not hold * ? [ ] \\")
        record["new"] = stem
        record["authorized_by"] = await gate.check(
            {"method": method, "entry": stem or "(clear)", "deployment": deployment or "(none)"}
        )
        loop = asyncio.get_running_loop()
        if which == "default" and stem and bootloader == "grub2":
            grub_dir, support = await loop.run_in_executor(None, grub_support, self._paths.sysroot)
            if grub_dir is not None and not support["default"]:
                # grub.cfg never reads saved_entry (bootupd's static config): grub boots the
                # first entry, so the default changes only by reordering deployments.
                if not deployment:
                    raise errors.NotSupported(
                        f"entry {stem!r} boots no ostree deployment, and this boot "
                        "loader boots the first entry: there is nothing to reorder"
                    )
                record["reordered"] = True
                await self._reorder(deployment, snapshot, record)
                return
        if which == "next" and bootloader == "systemd-boot":
            await self._set_oneshot(stem, record)
            return
        if bootloader not in ("grub2", "systemd-boot"):
            raise errors.NotSupported(
                f"boot loader {bootloader!r}: no one-shot entry can be written (grub2 reads grubenv's next_entry, "
                f"systemd-boot the EFI variable {ONESHOT_VAR})"
                if which == "next"
                else f"boot loader {bootloader!r}: no default entry can be written (SetDefaultDeployment "
                "reorders the deployments, which works with every boot loader)"
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            # The whole critical section is one executor job: if the caller's coroutine is
            # cancelled, the thread still finishes the write before the sysroot lock is let go.
            await loop.run_in_executor(
                None,
                locked_write,
                self._paths.sysroot,
                which,
                stem,
                deployment,
                bootloader,
                self._efivars,
                self._python,
                record,
            )

    async def _set_oneshot(self, stem: str, record: dict[str, Any]) -> None:
        efivars = self._efivars
        if not os.path.isdir(efivars):
            raise errors.NotSupported(
                f"on systemd-boot the next boot is chosen by the EFI variable {ONESHOT_VAR}, and "
                f"{efivars} (efivarfs) is not mounted here (not booted with EFI?)"
            )
        record["file"] = os.path.join(efivars, ONESHOT_VAR)
        if not os.access(efivars, os.W_OK) or os.statvfs(efivars).f_flag & os.ST_RDONLY:
            # The shipped unit's ProtectKernelTunables= makes /sys, efivarfs included, read-only,
            # and clearing a variable's immutable flag needs CAP_LINUX_IMMUTABLE, which it lacks.
            raise errors.NotSupported(
                f"on systemd-boot the next boot is chosen by the EFI variable {ONESHOT_VAR}, and "
                f"{efivars} is read-only for ostreewatchd here (its unit keeps /sys read-only); "
                "use: bootctl set-oneshot ID"
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, write_oneshot, efivars, stem + ".conf" if stem else ""
                )
            except OSError as e:
                raise errors.WriteFailed(f"cannot write {record['file']}: {e}") from None


def _read_snapshot(paths: model.Paths) -> model.Snapshot:
    """A fresh offline read (blocking); state is imported here only: nothing else of the writer needs it."""
    from ostreewatch import state

    return state.read_snapshot(paths)


def follow_saved_entry(sysroot: str, entry: str, dep_id: str, python: str) -> None:
    """After a reorder: where grub.cfg reads saved_entry and grubenv sets it, point it at ENTRY (blocking).

    Only an existing saved_entry is rewritten (a grubenv without one already boots
    the first entry, which is now DEP_ID's); a static grub.cfg is left alone.
    """
    grub_dir, support = grub_support(sysroot)
    if not support["default"]:
        return
    path = find_grubenv(sysroot, grub_dir)
    old = _read_small(path) if path else None
    if old is None:
        return
    var, dep_var = GRUB_VARS["default"]
    try:
        values = grubenv.parse_grubenv(old)
    except errors.GrubenvError:
        return  # state.py reports a broken grubenv; never make it worse
    if not values.get(var) or (values[var] == entry and values.get(dep_var, dep_id) == dep_id):
        return
    lock_fd = take_sysroot_lock(sysroot)
    try:
        plan = plan_grub(sysroot, "default", entry, dep_id)
        if plan is not None and plan.new != plan.old:
            replace(plan, python)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def locked_write(
    sysroot: str,
    which: str,
    stem: str,
    deployment: str,
    bootloader: str,
    efivars: str,
    python: str,
    record: dict[str, Any],
) -> None:
    """Under ostree's sysroot lock: re-check the entry, plan, replace the file (blocking: run it in a thread)."""
    lock_fd = take_sysroot_lock(sysroot)
    try:
        if stem and not entry_on_disk(sysroot, stem):
            raise errors.NoSuchEntry(f"boot entry {stem!r} is no longer in {ENTRIES_DIR}")
        if bootloader == "grub2":
            plan = plan_grub(sysroot, which, stem, deployment)
        else:
            plan = plan_loader_conf(sysroot, which, stem, deployment, efivars)
        if plan is None:
            return
        record["previous"] = plan.previous
        if plan.new != plan.old:
            replace(plan, python)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def replace(plan: _Plan, python: str = sys.executable) -> None:
    """Replace the file crash-safely: here, or in the helper process when its filesystem is read-only."""
    try:
        if is_read_only(plan.path):
            replace_in_helper(plan, python)
        else:
            atomic_replace(plan.path, plan.new, plan.old or b"")
    except ContentChanged as e:
        raise errors.Busy(f"{e}; nothing was written, try again") from None
    except OSError as e:
        raise errors.WriteFailed(f"cannot write {plan.path}: {e}") from None


HELPER_TIMEOUT = 60.0


def replace_in_helper(plan: _Plan, python: str = sys.executable) -> None:
    """Write through `python -m ostreewatch._writehelper`: private mount namespace, the mount read-write there."""
    request = json.dumps(
        {
            "path": plan.path,
            "data": base64.b64encode(plan.new).decode(),
            "expect": base64.b64encode(plan.old or b"").decode(),
        }
    ).encode()
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [package_parent] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        ),
    )
    try:
        proc = _run_helper(python, "ostreewatch._writehelper", request, env, HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise errors.WriteFailed(f"the write helper for {plan.path} did not finish in {HELPER_TIMEOUT:.0f} s") from None
    try:
        answer = json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        answer = {
            "ok": False,
            "error": f"helper exited with {proc.returncode}: {proc.stderr.decode('utf-8', 'replace').strip()[-500:]}",
        }
    if not answer.get("ok"):
        if answer.get("changed"):
            raise ContentChanged(answer.get("error", ""))
        raise errors.WriteFailed(f"cannot write {plan.path} (read-only mount, helper process): {answer.get('error')}")
