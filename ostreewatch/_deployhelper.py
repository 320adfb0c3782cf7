"""The deployment reorder helper: make one deployment the first (the default) through libostree itself.

Run by bootwrite as `PYTHON -m ostreewatch._deployhelper` with the system
python (it needs `gi.repository.OSTree`, which the daemon's venv lacks and
which costs ~120 ms to import: never in the daemon). Standard library, gi,
ostreewatch.errors and ostreewatch._writehelper only, so it also runs with
another tree's python and libostree (tests/fixtures/trees.py).

What it does is what `ostree admin set-default` does (ostree
src/ostree/ot-admin-builtin-set-default.c in ostreedev/ostree): lock the
sysroot, load it, put the chosen deployment first, and hand the new list to
`ostree_sysroot_write_deployments_with_options()`; ostree writes the new
boot version, swaps boot/loader and the boot links, and renumbers the
entries. No entry is written by hand.

On a booted host /sysroot (and often /boot) are mounted read-only: the helper
first enters a private mount namespace and remounts them read-write there only
(ostreewatch._writehelper's code), then tells libostree with
`Sysroot.set_mount_namespace_in_use()`.

Request on stdin (one JSON line): {"sysroot": ABS, "deployment": "OSNAME-CHECKSUM.SERIAL"}.
Answer on stdout (one JSON line; ostreewatch.helperproc runs it): {"ok": true, "changed": BOOL, "order": [ids]} or
{"ok": false, "kind": "busy"|"no-such-deployment"|"staged"|"failed", "error": TEXT}.
After an ok answer it keeps holding ostree's sysroot lock until its stdin ends: the daemon
reads the new state and follows saved_entry in that window (ostreewatch.bootwrite).
Before writing, every deployment's tree must hold a kernel (libostree would fail half-way); a
write that fails anyway has the boot/loader.N and ostree/boot.N.M it left removed, so the
sysroot is as it was. OSTREEWATCH_DEPLOYHELPER_NO_PRECHECK=1 (tests only) skips the check.
With OSTREEWATCH_DEPLOYHELPER_TRACE=1 it prints "locked" on stderr once it holds the lock (tests kill it then).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from typing import Any

from ostreewatch.errors import OstreewatchError


class HelperError(OstreewatchError):
    """A refusal with a kind the daemon maps to a named error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def deployment_id(d: Any) -> str:
    """rpm-ostree's id form, as the daemon publishes it: OSNAME-CHECKSUM.SERIAL."""
    return f"{d.get_osname()}-{d.get_csum()}.{d.get_deployserial()}"


def _writable_dirs(sysroot: str) -> list[str]:
    """The directories ostree writes (its repo and deploy dirs, /boot) whose mount is read-only."""
    out = []
    for rel in ("ostree", "boot"):
        path = os.path.realpath(os.path.join(sysroot, rel))
        if os.path.isdir(path) and os.statvfs(path).f_flag & os.ST_RDONLY:
            out.append(path)
    return out


def kernel_in_tree(deploy_dir: str) -> bool:
    """Whether a deployment's tree holds a kernel where libostree looks for one.

    As ostree's get_kernel_from_tree (src/libostree/ostree-sysroot-deploy.c): first
    usr/lib/modules/KVER/vmlinuz, then a vmlinuz-* in usr/lib/ostree-boot or boot.
    The initramfs is optional there, so it is not required here either.
    """
    modules = os.path.join(deploy_dir, "usr/lib/modules")
    try:
        for kver in os.listdir(modules):
            if os.path.isfile(os.path.join(modules, kver, "vmlinuz")):
                return True
    except OSError:
        pass
    for rel in ("usr/lib/ostree-boot", "boot"):
        try:
            names = os.listdir(os.path.join(deploy_dir, rel))
        except OSError:
            continue
        if any(n.startswith("vmlinuz-") and os.path.isfile(os.path.join(deploy_dir, rel, n)) for n in names):
            return True
    return False


# What ostree writes before it swaps the boot/loader link and ostree/boot.N: a failure leaves them behind.
_BOOT_VERSION_DIRS = (("boot", re.compile(r"loader\.[01]")), ("ostree", re.compile(r"boot\.[01](\.[01])?")))


def boot_version_dirs(sysroot: str) -> set[str]:
    """The boot/loader.N and ostree/boot.N(.M) entries of SYSROOT, relative to it."""
    found: set[str] = set()
    for parent, pattern in _BOOT_VERSION_DIRS:
        try:
            names = os.listdir(os.path.join(sysroot, parent))
        except OSError:
            continue
        found.update(f"{parent}/{n}" for n in names if pattern.fullmatch(n))
    return found


def remove_new_boot_version_dirs(sysroot: str, before: set[str]) -> list[str]:
    """After a failed write: remove the boot version entries that were not there before; what was removed."""
    removed = []
    for rel in sorted(boot_version_dirs(sysroot) - before):
        path = os.path.join(sysroot, rel)
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
        removed.append(rel)
    return removed


def reorder(sysroot: str, wanted: str) -> tuple[bool, list[str], Any]:
    """Make WANTED the first deployment of SYSROOT; (changed, new order of ids, the sysroot still locked).

    The caller unlocks it (after its answer was read: main()); on an error it is unlocked here.
    """
    read_only = _writable_dirs(sysroot)
    if read_only:
        from ostreewatch._writehelper import remount_rw, unshare_private

        unshare_private()
        for path in read_only:
            remount_rw(path)

    import gi

    gi.require_version("OSTree", "1.0")
    from gi.repository import Gio, GLib, OSTree

    s = OSTree.Sysroot.new(Gio.File.new_for_path(sysroot))
    if read_only:
        s.set_mount_namespace_in_use()
    try:
        _, acquired = s.try_lock()
    except GLib.Error as e:
        raise HelperError("failed", f"cannot take the sysroot lock: {e.message}") from None
    if not acquired:
        raise HelperError("busy", "another process holds the ostree sysroot lock")
    try:
        changed, order = _reorder_locked(s, sysroot, wanted)
    except BaseException:
        s.unlock()
        raise
    return changed, order, s


def _reorder_locked(s: Any, sysroot: str, wanted: str) -> tuple[bool, list[str]]:
    """The reorder itself, with S (an OSTree.Sysroot) locked; (changed, new order of ids)."""
    from gi.repository import GLib, OSTree

    if os.environ.get("OSTREEWATCH_DEPLOYHELPER_TRACE") == "1":
        sys.stderr.write("locked\n")
        sys.stderr.flush()
    s.load(None)
    deployments = list(s.get_deployments())
    ids = [deployment_id(d) for d in deployments]
    staged = s.get_staged_deployment()
    if staged is not None:
        # A staged deployment is written into the boot entries by ostree-finalize-staged at
        # shutdown and must stay first; reordering now would drop or displace it.
        raise HelperError(
            "staged",
            f"deployment {deployment_id(staged)} is staged (pending until "
            "shutdown); the default cannot change while one is staged",
        )
    if wanted not in ids:
        raise HelperError(
            "no-such-deployment", f"no deployment {wanted!r} in {sysroot} (deployments: {', '.join(ids) or 'none'})"
        )
    index = ids.index(wanted)
    if index == 0:
        return False, ids
    new = [deployments[index]] + deployments[:index] + deployments[index + 1 :]
    unchanged = "the deployment order is unchanged"
    if os.environ.get("OSTREEWATCH_DEPLOYHELPER_NO_PRECHECK") != "1":  # tests: reach the cleanup below
        # libostree writes every deployment's boot entry, and fails half-way without a kernel.
        for d in new:
            if not kernel_in_tree(s.get_deployment_directory(d).get_path()):
                raise HelperError(
                    "failed",
                    f"deployment {deployment_id(d)} has no kernel in its tree (usr/lib/modules/*/vmlinuz), "
                    f"so ostree cannot write its boot entry; {unchanged}",
                )
    before = boot_version_dirs(sysroot)
    opts = OSTree.SysrootWriteDeploymentsOpts()
    opts.do_postclean = True
    try:
        s.write_deployments_with_options(new, opts, None)
    except GLib.Error as e:
        removed = remove_new_boot_version_dirs(sysroot, before)
        left = f" (removed what it left: {', '.join(removed)})" if removed else ""
        raise HelperError(
            "failed", f"ostree could not write the new boot entries; {unchanged}{left}. libostree: {e.message}"
        ) from None
    s.load(None)
    return True, [deployment_id(d) for d in s.get_deployments()]


def main() -> int:
    """One request on stdin, one answer on stdout."""
    answer: dict[str, Any]
    locked: Any = None
    try:
        request = json.loads(sys.stdin.buffer.readline(1 << 16))
        sysroot, wanted = request["sysroot"], request["deployment"]
        if not isinstance(sysroot, str) or not os.path.isabs(sysroot) or not isinstance(wanted, str):
            raise HelperError("failed", "bad request: sysroot must be an absolute path, deployment a string")
        changed, order, locked = reorder(sysroot, wanted)
        answer = {"ok": True, "changed": changed, "order": order}
    except HelperError as e:
        answer = {"ok": False, "kind": e.kind, "error": str(e)}
    except Exception as e:  # noqa: BLE001 - the parent maps every other failure to WriteFailed with this text
        answer = {"ok": False, "kind": "failed", "error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    if locked is not None:
        # The daemon reads the new state and follows saved_entry while this process still
        # holds ostree's lock, so that no other ostree process runs in between; it closes
        # our stdin when done (or dies, which closes it too).
        try:
            sys.stdin.buffer.read()
        finally:
            locked.unlock()
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
