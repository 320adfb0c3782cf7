"""The logind bridge: `systemctl reboot --boot-loader-entry=ENTRY` on GRUB OSTree hosts (docs/logind.md).

systemd-logind (src/login/logind-dbus.c, docs/ENVIRONMENT.md) knows boot loader entries from
the ESP, or from /run/boot-loader-entries/loader/entries/*.conf when that directory exists; and
with SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=1 in its environment it writes the chosen entry to
/run/systemd/reboot-to-boot-loader-entry instead of an EFI variable (systemd 252 misspells it
/run/systemd/reboot-boot-to-loader-entry). This module:

- keeps RUNTIME_DIR/boot-loader-entries (a symlink swapped atomically to a complete tree) with
  one ID.conf per entry GRUB offers, the published ids, a sort-key giving GRUB's menu order,
  and symlinks to the kernels and initrds under /boot; /run/boot-loader-entries points at it;
- writes RUNTIME_DIR/logind.env, which an opt-in logind drop-in reads: the variable is 1 only
  where grub.cfg reads next_entry, 0 on other GRUB configs (bootupd's static one), so that
  CanRebootToBootLoaderEntry answers "na" there; nothing on other boot loaders;
- at shutdown (`ostreewatchd --apply-reboot-entry`) turns logind's request file into GRUB's
  one-shot next_entry through BootWriter.set_entry, SetNextEntry's own path, audited with
  the caller systemd-logind.service; refused while a deployment is staged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile

from . import bootplan, bootwrite, errors, model, runfiles, state
from .journal import Journal

ENTRIES_LINK = "boot-loader-entries"  # RUNTIME_DIR/boot-loader-entries -> .ble.XXXX (the tree)
TREE_PREFIX = ".ble."
LOGIND_ENV = "logind.env"
ENV_VAR = "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY"
# Under the run directory: what logind writes (262's name first, then 252's misspelling).
REQUEST_FILES = ("systemd/reboot-to-boot-loader-entry", "systemd/reboot-boot-to-loader-entry")
LOGIND_DIR = "boot-loader-entries"  # RUN/boot-loader-entries, the directory logind reads
LOGIND_UNIT = "systemd-logind.service"
MAX_REQUEST = 4096


# --- what logind is given --------------------------------------------------------------------


def bridge_enabled(sysroot: str, snapshot: model.Snapshot) -> bool | None:
    """True where GRUB reads next_entry, False on other GRUB configs, None on other boot loaders."""
    if snapshot.Bootloader != "grub2":
        return None
    _grub_dir, support = bootplan.grub_support(sysroot)
    return bool(support["next"])


def render_logind_env(enabled: bool | None) -> str:
    """logind.env's text: the variable only on GRUB (never shadowing systemd-boot's own EFI way)."""
    if enabled is None:
        return "# not a GRUB host: logind's own EFI logic applies (ostreewatch, docs/logind.md)\n"
    if enabled:
        return f"# grub.cfg reads next_entry (ostreewatch, docs/logind.md)\n{ENV_VAR}=1\n"
    return (
        "# grub.cfg never reads next_entry (a static config): CanRebootToBootLoaderEntry says na"
        f" (ostreewatch, docs/logind.md)\n{ENV_VAR}=0\n"
    )


def render_entry(entry: model.BootEntry, position: int) -> str:
    """One drop-in for logind: the entry's keys, and a sort-key that keeps GRUB's menu order."""
    lines = [f"title {entry.title or entry.id}"]
    if entry.version:
        lines.append(f"version {entry.version}")
    # systemd sorts entries with a sort-key first, by it: the position in GRUB's menu.
    lines.append(f"sort-key ostreewatch-{position:04d}")
    if entry.machine_id:
        lines.append(f"machine-id {entry.machine_id}")
    if entry.linux:
        lines.append(f"linux {entry.linux}")
    lines.extend(f"initrd {i}" for i in entry.initrd)
    if entry.options:
        lines.append(f"options {entry.options}")
    if entry.devicetree:
        lines.append(f"devicetree {entry.devicetree}")
    if entry.architecture:
        lines.append(f"architecture {entry.architecture}")
    return "\n".join(lines) + "\n"


def render_tree(snapshot: model.Snapshot) -> tuple[dict[str, str], set[str]]:
    """({ID.conf: text}, the top-level names under /boot the entries reference), in menu order."""
    files: dict[str, str] = {}
    tops: set[str] = set()
    for position, entry in enumerate(snapshot.BootEntries):
        name = f"{entry.id}.conf"
        if "/" in entry.id or entry.id in ("", ".", "..") or name in files:
            continue
        files[name] = render_entry(entry, position)
        for path in (entry.linux, *entry.initrd, entry.devicetree):
            top = path.lstrip("/").split("/", 1)[0]
            if top and top not in (".", "..", "loader"):
                tops.add(top)
    return files, tops


def write_tree(runtime_dir: str, files: dict[str, str], tops: set[str], boot_dir: str) -> str:
    """Build a new tree beside the old one and swap RUNTIME_DIR/boot-loader-entries to it; its path."""
    try:
        previous = os.readlink(os.path.join(runtime_dir, ENTRIES_LINK))
    except OSError:
        previous = ""
    tree = tempfile.mkdtemp(prefix=TREE_PREFIX, dir=runtime_dir)
    try:
        os.chmod(tree, 0o755)
        entries = os.path.join(tree, "loader", "entries")
        os.makedirs(entries)
        for d in (os.path.join(tree, "loader"), entries):
            os.chmod(d, 0o755)
        for name, text in files.items():
            with open(os.path.join(entries, name), "x", encoding="utf-8") as f:
                f.write(text)
                os.fchmod(f.fileno(), 0o644)
        for top in sorted(tops):
            # The doc: "the files referenced by the drop-ins ... may be (and are supposed to be) symlinks".
            os.symlink(os.path.join(boot_dir, top), os.path.join(tree, top))
        link_tmp = os.path.join(runtime_dir, f".{ENTRIES_LINK}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link_tmp)
        os.symlink(os.path.basename(tree), link_tmp)
        os.rename(link_tmp, os.path.join(runtime_dir, ENTRIES_LINK))
    except BaseException:
        shutil.rmtree(tree, ignore_errors=True)
        raise
    # The previous tree stays until the next swap: a reader (logind) that resolved the link just
    # before this swap still finds the files it is reading.
    _remove_old_trees(runtime_dir, keep={os.path.basename(tree), previous})
    return tree


def remove_tree(runtime_dir: str) -> None:
    """No entries for logind (the bridge is off on this host)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(runtime_dir, ENTRIES_LINK))
    _remove_old_trees(runtime_dir, keep=set())


def _remove_old_trees(runtime_dir: str, keep: set[str]) -> None:
    for name in os.listdir(runtime_dir):
        if name.startswith(TREE_PREFIX) and name not in keep:
            shutil.rmtree(os.path.join(runtime_dir, name), ignore_errors=True)


class Bridge:
    """Keeps the runtime directory's logind files in step with the published snapshots (one thread)."""

    def __init__(self, paths: model.Paths, runtime_dir: str) -> None:
        self.paths = paths
        self.runtime_dir = runtime_dir
        self._last: tuple[bool | None, dict[str, str], set[str]] | None = None

    def sync(self, snapshot: model.Snapshot) -> None:
        """Write logind.env and the entries tree when they differ from the last written; raises OSError."""
        enabled = bridge_enabled(self.paths.sysroot, snapshot)
        files, tops = render_tree(snapshot) if enabled else ({}, set())
        now = (enabled, files, tops)
        if now == self._last:
            return
        self._last = None  # a failure below makes the next call write again
        write_logind_env(self.runtime_dir, enabled)
        if enabled:
            boot_dir = os.path.join(self.paths.sysroot, "boot")
            write_tree(self.runtime_dir, files, tops, boot_dir)
        else:
            remove_tree(self.runtime_dir)
        self._last = now

    def clear(self) -> None:
        """At a clean stop: logind.env and the tree go (systemd removes the runtime directory too)."""
        runfiles.remove(self.runtime_dir, LOGIND_ENV)
        remove_tree(self.runtime_dir)
        self._last = None


def write_logind_env(runtime_dir: str, enabled: bool | None) -> str:
    """Replace RUNTIME_DIR/logind.env atomically; its path. Raises OSError."""
    return runfiles.replace(runtime_dir, LOGIND_ENV, render_logind_env(enabled).encode())


def prepare_logind(paths: model.Paths, runtime_dir: str) -> str:
    """Before logind starts: logind.env, and RUN/boot-loader-entries where the bridge is on; a sentence.

    The daemon keeps the tree the link points at; until it has written it, the link leads
    nowhere and logind finds no entries (it reads them on demand, not at its start).
    """
    snapshot = state.read_snapshot(paths)
    enabled = bridge_enabled(paths.sysroot, snapshot)
    runfiles.ensure_dir(runtime_dir)
    write_logind_env(runtime_dir, enabled)
    if enabled:
        link = link_logind_dir(paths.run, runtime_dir)
        return f"{ENV_VAR}=1 (grub.cfg reads next_entry); {link} -> {os.path.join(runtime_dir, ENTRIES_LINK)}"
    unlink_logind_dir(paths.run, runtime_dir)
    if enabled is None:
        return f"boot loader {snapshot.Bootloader!r}: {ENV_VAR} left to logind's default"
    return f"{ENV_VAR}=0: this grub.cfg never reads next_entry (a static config)"


def link_logind_dir(run_dir: str, runtime_dir: str) -> str:
    """RUN/boot-loader-entries -> RUNTIME_DIR/boot-loader-entries (ExecStart= of ostreewatch-reboot-entry)."""
    link = os.path.join(run_dir, LOGIND_DIR)
    target = os.path.join(runtime_dir, ENTRIES_LINK)
    tmp = f"{link}.ostreewatch-{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.rename(tmp, link)  # a directory there (another tool's) makes this fail: left alone
    return link


def unlink_logind_dir(run_dir: str, runtime_dir: str) -> None:
    """Remove RUN/boot-loader-entries when it is our link."""
    link = os.path.join(run_dir, LOGIND_DIR)
    with contextlib.suppress(OSError):
        if os.readlink(link) == os.path.join(runtime_dir, ENTRIES_LINK):
            os.unlink(link)


# --- at shutdown: logind's request -> next_entry -------------------------------------------


def read_request(run_dir: str) -> tuple[str, str] | None:
    """(file, entry) logind left under RUN/systemd, or None; the entry as written, stripped."""
    for rel in REQUEST_FILES:
        path = os.path.join(run_dir, rel)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_REQUEST + 1)
        except FileNotFoundError:
            continue
        if len(data) > MAX_REQUEST:
            raise errors.InvalidArgs(f"{path}: longer than {MAX_REQUEST} bytes")
        try:
            return path, data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise errors.InvalidArgs(f"{path}: not UTF-8") from None
    return None


def entry_for_request(snapshot: model.Snapshot, value: str) -> str:
    """The published id logind's value names: ids are compared as logind does (case, .conf)."""
    stem = value[:-5] if value.lower().endswith(".conf") else value
    for entry in snapshot.BootEntries:
        if entry.id.lower() == stem.lower():
            return entry.id
    return stem  # the writer refuses it with NoSuchEntry, audited


LOGIND_CALLER = model.Caller(uid=0, pid=-1, bus_name="", unit=LOGIND_UNIT)


async def apply_request(paths: model.Paths, journal: Journal, efivars: str = bootwrite.EFIVARS) -> str:
    """Turn logind's request into the one-shot next_entry; a sentence saying what happened.

    Raises an OstreewatchError (after the audit record) when the write is refused or fails.
    """
    found = read_request(paths.run)
    if found is None:
        return "no boot loader entry was requested"
    path, value = found
    loop = asyncio.get_running_loop()
    snapshot = await loop.run_in_executor(None, state.read_snapshot, paths)
    entry = entry_for_request(snapshot, value)
    if snapshot.StagedDeployment:
        # ostree-finalize-staged rewrites and renumbers the entries at this same shutdown: an
        # entry named now could boot another deployment. The audit record the writer makes for an
        # error after authorization (logind's request is root's): failed.
        error = errors.NotSupported(
            f"deployment {snapshot.StagedDeployment} is staged: ostree renumbers the entries when it "
            f"finalizes it at this shutdown, so {entry!r} is not set for the next boot"
        )
        journal.write_attempt(
            caller_uid=LOGIND_CALLER.uid,
            caller_pid=LOGIND_CALLER.pid,
            caller_bus_name="",
            caller_unit=LOGIND_UNIT,
            method=bootwrite.METHODS["next"],
            entry=entry,
            deployment="",
            previous="",
            new="",
            bootloader=snapshot.Bootloader,
            result="failed",
            error=error.dbus_name,
        )
        raise error
    writer = bootwrite.BootWriter(paths, journal, efivars=efivars)
    await writer.set_entry("next", entry, LOGIND_CALLER, snapshot)
    # One shot: a second stop of the unit (or a daemon restart) must not write it again.
    for rel in REQUEST_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(paths.run, rel))
    return f"next boot: entry {entry} (requested through systemd-logind in {path})"
