"""A write tells the truth (issue 20 point 4): the reorder and the follow of saved_entry are one hold of
ostree's sysroot lock, and when the follow fails the error says what stands.

Real libostree (the system python's gi) reorders a sysroot written by ostree 2022.7, on a tmpfs of its
own (the helper runs as real root, and ostree freezes /boot's filesystem); `ostree admin status` and
grub-editenv are the oracles. The window between the reorder and the follow is made real: the test wraps
bootwrite.follow_saved_entry (the real one still runs) to start, right there, an ostree process that asks
libostree for the sysroot lock.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ostreewatch import bootwrite, errors, layout, model, sample, state
from ostreewatch.bootwrite import BootWriter
from tests.fixtures import trees
from tests.fixtures.bootwrite import RecordingJournal, grub_editenv, grubenv_list
from tests.fixtures.ostree_oracles import admin_status, entry_booting
from tests.fixtures.sysroots import OstreeSysroot

ROOT = model.Caller(uid=0, pid=1, bus_name=":1.1")

# An ostree process: libostree's try_lock (prints busy/acquired), then its blocking lock; once it holds
# the lock it prints the grubenv's saved_entry line as it finds it then.
HOLDER = """
import sys, gi
gi.require_version("OSTree", "1.0")
from gi.repository import Gio, OSTree
s = OSTree.Sysroot.new(Gio.File.new_for_path(sys.argv[1]))
_, got = s.try_lock()
print("acquired" if got else "busy", flush=True)
if not got:
    s.lock()
with open(sys.argv[2]) as f:
    print(next((l for l in f.read().splitlines() if l.startswith("saved_entry=")), ""), flush=True)
s.unlock()
"""


@pytest.fixture
def sr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OstreeSysroot]:
    """Three deployments of OS "test" on a tmpfs of their own, a generated grub.cfg (reads saved_entry)."""
    monkeypatch.setenv("OSTREE_SYSROOT_DEBUG", "mutable-deployments")  # the helper inherits it
    with trees.own_tmpfs(tmp_path / "fs") as path:
        sysroot = OstreeSysroot(path)
        sysroot.build(3, osname="test")
        yield sysroot


def pin_second(sr: OstreeSysroot) -> tuple[str, str]:
    """saved_entry on the second deployment's entry (the default grub boots); (grubenv path, that entry)."""
    env = sr.write_grub()
    pinned = entry_booting(sr.path, admin_status(sr)[1])
    assert grub_editenv(env, "set", f"saved_entry={pinned}").returncode == 0
    return env, pinned


def test_no_ostree_process_runs_between_the_reorder_and_the_follow(
    sr: OstreeSysroot, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, pinned = pin_second(sr)
    before = admin_status(sr)
    paths = sr.paths()
    seen: dict[str, Any] = {}
    real_follow = bootwrite.follow_saved_entry

    def follow_with_a_holder(sysroot: str, entry: str, dep_id: str, python: str) -> None:
        proc = subprocess.Popen(
            ["/usr/bin/python3", "-c", HOLDER, sr.path, env], stdout=subprocess.PIPE, text=True, cwd="/"
        )
        assert proc.stdout is not None
        seen["proc"], seen["try"] = proc, proc.stdout.readline().strip()
        real_follow(sysroot, entry, dep_id, python)

    monkeypatch.setattr(bootwrite, "follow_saved_entry", follow_with_a_holder)
    journal = RecordingJournal()
    entry = asyncio.run(BootWriter(paths, journal).set_deployment(before[2].id, ROOT, state.read_snapshot(paths)))
    out, _ = seen["proc"].communicate(timeout=60)
    after = admin_status(sr)
    assert after[0].id == before[2].id
    assert entry == entry_booting(sr.path, after[0]) != pinned
    # The holder found the lock taken (the helper still held it) and got it only once saved_entry followed.
    assert seen["try"] == "busy"
    assert out.strip() == f"saved_entry={entry}"
    assert grubenv_list(env)["saved_entry"] == entry
    assert [(r["result"], r["entry"], r.get("changed")) for r in journal.records] == [("granted", entry, True)]


def test_a_follow_that_fails_says_what_stands(sr: OstreeSysroot) -> None:
    """A grubenv too full for the new saved_entry: the reorder stands and the error says so; grubenv is
    unchanged, the lock is released, the audit says failed."""
    env, pinned = pin_second(sr)
    # Fill the 1024-byte block so that ostreewatch_saved_deployment=ID cannot be added.
    used = len(Path(env).read_bytes().rstrip(b"#"))
    assert grub_editenv(env, "set", "filler=" + "x" * (1024 - used - len("filler=\n") - 40)).returncode == 0
    grubenv_before = Path(env).read_bytes()
    before = admin_status(sr)
    paths = sr.paths()
    journal = RecordingJournal()
    with pytest.raises(errors.WriteFailed) as failed:
        asyncio.run(BootWriter(paths, journal).set_deployment(before[2].id, ROOT, state.read_snapshot(paths)))
    message = str(failed.value)
    assert message.startswith(f"{before[2].id} is now the first deployment (the default), but grubenv's saved_entry")
    assert admin_status(sr)[0].id == before[2].id  # what the error says stands
    assert Path(env).read_bytes() == grubenv_before
    assert grubenv_list(env)["saved_entry"] == pinned
    fd = layout.take_sysroot_lock(sr.path)  # the helper let go of ostree's lock
    assert fd is not None
    os.close(fd)
    assert [(r["result"], r["error"]) for r in journal.records] == [("failed", errors.WriteFailed.dbus_name)]


# --- a failed write leaves the sysroot as it was (issue 20 point 5) ---------------------------------------


def tree_listing(root: str) -> dict[str, str]:
    """Every path under ROOT: a link's target, a file's bytes' length and mtime, or "dir".

    Less ostree/repo/tmp: the repository's scratch directory, which opening the repo creates.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel == "ostree/repo/tmp" or rel.startswith("ostree/repo/tmp/"):
                continue
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                out[rel] = "dir"
            else:
                st = os.stat(path)
                out[rel] = f"{st.st_size} {st.st_mtime_ns}"
    return out


@pytest.fixture
def tmpfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("OSTREE_SYSROOT_DEBUG", "mutable-deployments")
    with trees.own_tmpfs(tmp_path / "fs") as path:
        yield path


def reorder_sample(name: str, dest: str) -> tuple[str, dict[str, str], pytest.ExceptionInfo[errors.WriteFailed]]:
    """SetDefaultDeployment of the sample's second deployment; (its id, the tree before, the error)."""
    paths = sample.materialize(dest, name)
    snap = state.read_snapshot(paths)
    assert not [p.code for p in snap.Problems if p.code == "stale-loader-dir"]
    before = tree_listing(paths.sysroot)
    second = snap.Deployments[1].id
    journal = RecordingJournal()
    with pytest.raises(errors.WriteFailed) as failed:
        asyncio.run(BootWriter(paths, journal).set_deployment(second, ROOT, snap))
    assert [(r["result"], r["error"]) for r in journal.records] == [("failed", errors.WriteFailed.dbus_name)]
    assert tree_listing(paths.sysroot) == before
    assert "stale-loader-dir" not in [p.code for p in state.read_snapshot(paths).Problems]
    return second, before, failed


@pytest.mark.parametrize("name", sample.NAMES)
def test_no_kernel_is_found_before_anything_is_written(tmpfs: str, name: str) -> None:
    """The bundled samples' deployments have no kernel: refused before libostree writes half of the boot."""
    _, _, failed = reorder_sample(name, tmpfs)
    message = str(failed.value)
    assert re.fullmatch(
        r"deployment \S+ has no kernel in its tree \(usr/lib/modules/\*/vmlinuz\), so ostree cannot write "
        r"its boot entry; the deployment order is unchanged",
        message,
    ), message


@pytest.mark.parametrize("name", sample.NAMES)
def test_what_a_failed_libostree_write_leaves_is_removed(
    tmpfs: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the pre-check, libostree fails half-way ("Failed to find kernel") and leaves boot/loader.N:
    the helper removes it, and says so in the admin's words before libostree's."""
    monkeypatch.setenv("OSTREEWATCH_DEPLOYHELPER_NO_PRECHECK", "1")
    _, _, failed = reorder_sample(name, tmpfs)
    message = str(failed.value)
    assert message.startswith(
        "ostree could not write the new boot entries; the deployment order is unchanged (removed what it left: "
    ), message
    assert re.search(r"removed what it left: [^)]*boot/loader\.[01]", message), message
    assert "). libostree: " in message and "Failed to find kernel" in message, message
