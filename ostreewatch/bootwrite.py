"""SetDefaultEntry / SetNextEntry / SetDefaultDeployment: the daemon's writes (docs/default-entry.md).

Order of a call: validate the id -> find it in the snapshot (bootplan) ->
authorize (the call's authz.Gate: uid 0, or polkit) -> check the boot loader
can honour it -> take the asyncio lock and ostree's sysroot lock (without
waiting: Busy) -> re-check the entry on disk -> compute the new bytes
(bootplan) -> replace the file crash-safely (ostreewatch._writehelper), in a
helper process (helperproc) with a private mount namespace when the file's
filesystem is mounted read-only. SetDefaultDeployment (and SetDefaultEntry
where grub.cfg never reads saved_entry) reorders deployments through libostree
in ostreewatch._deployhelper instead; LoaderEntryOneShot is written by efivars.
Every attempt ends in one journal record (audit). Everything blocking runs in
an executor thread, never on the event loop; a cancelled call still finishes
its write before the sysroot lock is released. The writer returns what it did;
the daemon publishes the new state after it (Daemon._refresh_after).
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Awaitable
from typing import Any, Callable

from ostreewatch import audit, authz, errors, helperproc, model
from ostreewatch import efivars as efi
from ostreewatch._writehelper import ContentChanged, atomic_replace
from ostreewatch.bootplan import (
    GLOB_CHARS,
    GRUB_VARS,
    Plan,
    entry_on_disk,
    find_deployment,
    find_entry,
    find_grubenv,
    grub_support,
    is_read_only,
    plan_grub,
    plan_loader_conf,
    printable,
    read_small,
    validate_deployment_id,
    validate_id,
)
from ostreewatch.journal import Journal
from ostreewatch.layout import ENTRIES_DIR, take_sysroot_lock
from ostreewatch.parse import grubenv

METHODS = {"default": "SetDefaultEntry", "next": "SetNextEntry"}

EFIVARS = efi.EFIVARS
DEPLOY_PYTHON = "/usr/bin/python3"  # has gi and gir1.2-ostree-1.0; the daemon's venv has neither
DEPLOY_TIMEOUT = 300.0
HELPER_TIMEOUT = 60.0


class BootWriter:
    """Writes the boot default for the daemon; one call at a time."""

    def __init__(
        self,
        paths: model.Paths,
        journal: Journal,
        *,
        efivars: str = efi.EFIVARS,
        python: str = sys.executable,
        deploy_python: str = DEPLOY_PYTHON,
    ) -> None:
        self._paths = paths
        self._audit = audit.Audit(journal)
        self._efivars = efivars
        self._python = python
        self._deploy_python = deploy_python
        self._lock: asyncio.Lock | None = None  # created on the loop that uses it (Python 3.9)

    async def reload(self, gate: authz.Gate, do_reload: Callable[[], Awaitable[int]], snapshot: model.Snapshot) -> int:
        """Reload(): authorized like the writes; only refusals are journaled (a granted Reload changes nothing)."""
        record = audit.record("Reload", gate.caller, snapshot)
        try:
            record["authorized_by"] = await gate.check({})
        except errors.OstreewatchError as e:
            self._audit.write(record, "refused", e.dbus_name)
            raise
        return await do_reload()

    async def set_entry(
        self, which: str, entry_id: str, who: authz.Gate | model.Caller, snapshot: model.Snapshot
    ) -> None:
        """Make ENTRY_ID the default ("default") or the next boot ("next"); "" clears. Audited."""
        method = METHODS.get(which, str(which))
        gate = authz.gate_for(who, method if method in authz.ACTIONS else "SetDefaultEntry")
        record = audit.record(method, gate.caller, snapshot, entry=printable(entry_id))
        await self._audit.audited(record, gate, lambda: self._set_entry(which, entry_id, gate, snapshot, record))

    async def set_deployment(self, dep_id: str, who: authz.Gate | model.Caller, snapshot: model.Snapshot) -> str:
        """SetDefaultDeployment: make DEP_ID the first deployment; the entry id that now boots it. Audited."""
        gate = authz.gate_for(who, "SetDefaultDeployment")
        record = audit.record("SetDefaultDeployment", gate.caller, snapshot, deployment=printable(dep_id))
        return str(
            await self._audit.audited(record, gate, lambda: self._set_deployment(dep_id, gate, snapshot, record))
        )

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
        """Reorder through the helper and follow saved_entry under its lock; the entry that boots DEP_ID."""
        record["previous"] = snapshot.DefaultDeployment
        record["new"] = dep_id
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            # One executor job: a cancelled caller still lets it finish and unlock.
            entry = await asyncio.get_running_loop().run_in_executor(
                None, reorder_and_follow, self._paths, dep_id, self._deploy_python, self._python, record
            )
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
            if bootloader == "systemd-boot" and set(stem) & GLOB_CHARS:
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
                f"systemd-boot the EFI variable {efi.ONESHOT_VAR})"
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
                f"on systemd-boot the next boot is chosen by the EFI variable {efi.ONESHOT_VAR}, and "
                f"{efivars} (efivarfs) is not mounted here (not booted with EFI?)"
            )
        record["file"] = os.path.join(efivars, efi.ONESHOT_VAR)
        if not os.access(efivars, os.W_OK) or os.statvfs(efivars).f_flag & os.ST_RDONLY:
            # The shipped unit's ProtectKernelTunables= makes /sys, efivarfs included, read-only,
            # and clearing a variable's immutable flag needs CAP_LINUX_IMMUTABLE, which it lacks.
            raise errors.NotSupported(
                f"on systemd-boot the next boot is chosen by the EFI variable {efi.ONESHOT_VAR}, and "
                f"{efivars} is read-only for ostreewatchd here (its unit keeps /sys read-only); "
                "use: bootctl set-oneshot ID"
            )
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, efi.write_oneshot, efivars, stem + ".conf" if stem else ""
                )
            except OSError as e:
                raise errors.WriteFailed(f"cannot write {record['file']}: {e}") from None


def reorder_and_follow(paths: model.Paths, dep_id: str, deploy_python: str, python: str, record: dict[str, Any]) -> str:
    """Make DEP_ID the first deployment and keep saved_entry on it, in one hold of ostree's lock (blocking).

    The deploy helper answers while it still holds the sysroot lock: here the new
    state is read and saved_entry followed in that window, then the helper's stdin
    is closed and it unlocks. So no ostree process runs between the reorder and the
    follow; when the follow fails, WriteFailed says what stands. The entry id that
    now boots DEP_ID.
    """
    from ostreewatch import state  # the writer needs the reader only here

    request = {"sysroot": os.path.abspath(paths.sysroot), "deployment": dep_id}
    with helperproc.Helper(deploy_python, "ostreewatch._deployhelper", "the deployment helper") as helper:
        answer = helperproc.check(helper.ask(request, DEPLOY_TIMEOUT))
        record["changed"] = changed = bool(answer.get("changed"))
        stands = (
            f"{dep_id} is now the first deployment (the default)"
            if changed
            else f"{dep_id} was already the first deployment"
        )
        try:
            # The new state (not yet published) names the entry ostree gave the deployment.
            fresh = state.read_snapshot(paths)
        except (errors.OstreewatchError, OSError) as e:
            raise errors.WriteFailed(f"{stands}, but the new state could not be read to follow it: {e}") from None
        entry = next((e.id for e in fresh.BootEntries if e.deployment == dep_id), "")
        if entry and fresh.Bootloader == "grub2":
            # A grub.cfg that reads saved_entry would still boot the entry saved_entry names, and
            # ostree renumbered the entries: keep saved_entry on the requested deployment.
            try:
                follow_saved_entry(paths.sysroot, entry, dep_id, python)
            except (errors.OstreewatchError, OSError) as e:
                raise errors.WriteFailed(f"{stands}, but grubenv's saved_entry could not follow it: {e}") from None
        try:
            helper.release()
        except errors.WriteFailed as e:
            raise errors.WriteFailed(f"{stands}, but {e}") from None
    return entry


def follow_saved_entry(sysroot: str, entry: str, dep_id: str, python: str) -> None:
    """After a reorder, under the deploy helper's hold of the sysroot lock: where grub.cfg reads
    saved_entry and grubenv sets it, point it at ENTRY (blocking).

    Only an existing saved_entry is rewritten (a grubenv without one already boots
    the first entry, which is now DEP_ID's); a static grub.cfg is left alone.
    """
    grub_dir, support = grub_support(sysroot)
    if not support["default"]:
        return
    path = find_grubenv(sysroot, grub_dir)
    old = read_small(path) if path else None
    if old is None:
        return
    var, dep_var = GRUB_VARS["default"]
    try:
        values = grubenv.parse_grubenv(old)
    except errors.GrubenvError:
        return  # state.py reports a broken grubenv; never make it worse
    if not values.get(var) or (values[var] == entry and values.get(dep_var, dep_id) == dep_id):
        return
    plan = plan_grub(sysroot, "default", entry, dep_id)
    if plan is not None and plan.new != plan.old:
        replace(plan, python)


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


def replace(plan: Plan, python: str = sys.executable) -> None:
    """Replace the file crash-safely: here, or in the helper process when its filesystem is read-only."""
    try:
        if is_read_only(plan.path):
            request = {
                "path": plan.path,
                "data": base64.b64encode(plan.new).decode(),
                "expect": base64.b64encode(plan.old or b"").decode(),
            }
            answer = helperproc.run(
                python, "ostreewatch._writehelper", f"the write helper for {plan.path}", request, HELPER_TIMEOUT
            )
            helperproc.check(answer, f"cannot write {plan.path} (read-only mount, helper process)")
        else:
            atomic_replace(plan.path, plan.new, plan.old or b"")
    except ContentChanged as e:
        raise errors.Busy(f"{e}; nothing was written, try again") from None
    except OSError as e:
        raise errors.WriteFailed(f"cannot write {plan.path}: {e}") from None
