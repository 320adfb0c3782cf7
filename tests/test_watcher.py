"""The watcher against real changes: a sysroot built by the real `ostree` tool,
real deploys, real mount namespaces (tests/fixtures/sysroots.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import pytest

from ostreewatch.watcher import Watcher
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

pytestmark = pytest.mark.timeout(120)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OSNAME = "fedora"  # the OS of tests/fixtures/sysroots.py sysroot_3 (ref fedora/x)


def _ostree_env() -> dict:
    return dict(os.environ, OSTREE_SYSROOT_DEBUG="mutable-deployments")


def _userns(argv: list[str]) -> list[str]:
    return ["unshare", "--user", "--map-root-user"] + argv


@dataclass(frozen=True)
class P:
    """Duck-typed ostreewatch.state.Paths."""

    sysroot: str
    mountinfo: str
    cmdline: str
    run: str


@pytest.fixture
def sysroot(sysroot_3) -> str:
    """A private copy of three real deployments (tests/fixtures/sysroots.py), plus a grubenv."""
    sr = sysroot_3.path
    os.makedirs(os.path.join(sr, "boot", "grub2"))
    subprocess.run(["grub-editenv", os.path.join(sr, "boot", "grub2", "grubenv"), "create"], check=True)
    return sr


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


class Rig:
    """A started watcher and the reasons it reported."""

    def __init__(self, loop: asyncio.AbstractEventLoop, paths: P, **kw) -> None:
        self.loop = loop
        self.paths = paths
        self.reasons: list[str] = []
        self.watcher = Watcher(paths, self.reasons.append, loop, **kw)
        self.watcher.start()

    def run_until(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        async def wait() -> None:
            while not cond():
                await asyncio.sleep(0.01)

        self.loop.run_until_complete(asyncio.wait_for(wait(), timeout))

    def expect(self, reason: str, timeout: float = 10.0) -> None:
        """Wait until `reason` is reported (generous timeout; no speed assert)."""
        try:
            self.run_until(lambda: reason in self.reasons, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {reason!r} within {timeout}s, got {self.reasons}") from None

    def settle(self, seconds: float = 0.2) -> None:
        """Let queued events through, then forget them."""
        self.loop.run_until_complete(asyncio.sleep(seconds))
        self.reasons.clear()

    def collect(self, seconds: float = 0.3) -> list[str]:
        """Run the loop for a while; the reasons reported meanwhile."""
        self.reasons.clear()
        self.loop.run_until_complete(asyncio.sleep(seconds))
        return list(self.reasons)

    def ostree(self, *args: str) -> None:
        """A real ostree call, run while the loop keeps serving events."""

        async def run() -> None:
            proc = await asyncio.create_subprocess_exec(
                *_userns(["ostree", "admin", *args, f"--sysroot={self.paths.sysroot}"]),
                env=_ostree_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()

        self.loop.run_until_complete(asyncio.wait_for(run(), 60))


@pytest.fixture
def rig(loop, sysroot, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    mi = tmp_path / "mountinfo"
    mi.write_text("")
    r = Rig(loop, P(sysroot, str(mi), "/proc/cmdline", str(run)))
    r.settle()
    yield r
    r.watcher.stop()


def _entries(sysroot: str) -> str:
    return os.path.join(sysroot, "boot", "loader", "entries")


def _loader_target(sysroot: str) -> str:
    return os.path.realpath(os.path.join(sysroot, "boot", "loader"))


def _flood(directory: str, events: int) -> None:
    """Queue `events` distinct inotify events cheaply: IN_ATTRIB on two files in turn
    (the kernel merges only identical consecutive events)."""
    files = [os.path.join(directory, f"flood-{i}") for i in range(2)]
    for f in files:
        open(f, "w").close()
    for i in range(events):
        os.utime(files[i % 2])
    for f in files:
        os.unlink(f)


def _ctxt_switches(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


# --- inotify ---------------------------------------------------------------


def test_arms_expected_directories(rig, sysroot):
    armed = rig.watcher.armed_paths()
    loader = _loader_target(sysroot)
    for path in (
        os.path.join(sysroot, "boot"),
        loader,
        os.path.join(loader, "entries"),
        os.path.join(sysroot, "boot", "grub2"),
        os.path.join(sysroot, "ostree"),
        os.path.join(sysroot, "ostree", "deploy"),
        rig.paths.run,
    ):
        assert path in armed, (path, armed)


def test_idle_process_does_not_wake(rig):
    tid = threading.get_native_id()
    before = _ctxt_switches(tid)
    rig.loop.run_until_complete(asyncio.sleep(3))
    after = _ctxt_switches(tid)
    assert rig.reasons == []
    assert rig.watcher.stats["inotify_wakeups"] == 0
    # The sleep itself is one timer wakeup; a poller would show hundreds.
    assert after - before <= 5, after - before


def test_deploy_swaps_loader_and_watch_follows(rig, sysroot):
    before = _loader_target(sysroot)
    rig.ostree("deploy", f"--os={OSNAME}", f"{OSNAME}/x")
    rig.expect("loader-swap")
    rig.expect("deploy-mtime")
    rig.expect("boot-links")
    after = _loader_target(sysroot)
    assert after != before
    rig.settle()
    assert os.path.join(after, "entries") in rig.watcher.armed_paths()
    assert os.path.join(before, "entries") not in rig.watcher.armed_paths()
    # A later edit in the new loader.N/entries is seen.
    with open(os.path.join(_entries(sysroot), "hand-1.conf"), "w") as f:
        f.write("title hand\nlinux /vmlinuz\n")
    rig.expect("entries")


def test_bare_symlink_swap_is_followed(rig, sysroot):
    """The swap alone (old loader.N kept) re-arms: nothing else tells the watcher."""
    boot = os.path.join(sysroot, "boot")
    old = _loader_target(sysroot)
    new = os.path.join(boot, "loader.7")
    os.makedirs(os.path.join(new, "entries"))
    rig.settle()
    os.symlink("loader.7", os.path.join(boot, "loader.tmp"))
    os.rename(os.path.join(boot, "loader.tmp"), os.path.join(boot, "loader"))
    rig.expect("loader-swap")
    rig.settle()
    armed = rig.watcher.armed_paths()
    assert os.path.join(new, "entries") in armed and os.path.join(old, "entries") not in armed, armed
    with open(os.path.join(new, "entries", "n.conf"), "w") as f:
        f.write("title n\n")
    rig.expect("entries")
    rig.settle()
    with open(os.path.join(old, "entries", "stale.conf"), "w") as f:
        f.write("title stale\n")
    assert rig.collect() == []  # the old loader.N is not watched any more


def test_second_swap_back_is_followed_too(rig, sysroot, sysroot_3):
    sysroot_3.commit(f"{OSNAME}/y", version="9", kver="6.1.9")  # a new kernel: new boot config
    rig.ostree("deploy", f"--os={OSNAME}", f"{OSNAME}/y")
    rig.expect("loader-swap")
    rig.settle()
    first = _loader_target(sysroot)
    rig.ostree("deploy", f"--os={OSNAME}", f"{OSNAME}/x")
    rig.expect("loader-swap")
    rig.settle()
    assert _loader_target(sysroot) != first
    os.rename(*(os.path.join(_entries(sysroot), n) for n in (sorted(os.listdir(_entries(sysroot)))[0], "x.conf")))
    rig.expect("entries")


def test_same_boot_config_changes_only_boot_links(rig, sysroot, sysroot_3):
    """Redeploying with an unchanged boot config swaps ostree/boot.N only: /boot is not touched."""
    sysroot_3.commit(f"{OSNAME}/y", version="9", kver="6.1.9")
    rig.ostree("deploy", f"--os={OSNAME}", f"{OSNAME}/y")
    rig.expect("loader-swap")
    rig.settle()
    rig.ostree("deploy", f"--os={OSNAME}", f"{OSNAME}/y")
    rig.expect("boot-links")
    rig.expect("deploy-mtime")


def test_kargs_edit_in_place_is_seen(rig):
    # ostree 2022.7 rewrites the entries in place and does NOT bump the mtime of
    # ostree/deploy here (checked): watching only that, as rpm-ostreed does, misses it.
    rig.ostree("kargs", "edit-in-place", "--append-if-missing=quiet")
    rig.expect("entries")


def test_entry_edit_rename_add_delete(rig, sysroot):
    d = _entries(sysroot)
    name = sorted(os.listdir(d))[0]
    with open(os.path.join(d, name), "a") as f:
        f.write("# edited\n")
    rig.expect("entries")
    rig.settle()
    os.rename(os.path.join(d, name), os.path.join(d, "renamed.conf"))
    rig.expect("entries")
    rig.settle()
    with open(os.path.join(d, "new.conf"), "w") as f:
        f.write("title new\n")
    rig.expect("entries")
    rig.settle()
    os.chmod(os.path.join(d, "new.conf"), 0o600)
    rig.expect("entries")
    rig.settle()
    os.unlink(os.path.join(d, "new.conf"))
    rig.expect("entries")


def test_grubenv_rename_and_in_place(rig, sysroot):
    grub = os.path.join(sysroot, "boot", "grub2")
    with open(os.path.join(grub, "grubenv.new"), "wb") as f:
        f.write(b"# GRUB Environment Block\nsaved_entry=x\n".ljust(1024, b"#"))
    assert "grubenv" not in rig.reasons
    os.rename(os.path.join(grub, "grubenv.new"), os.path.join(grub, "grubenv"))
    rig.expect("grubenv")
    rig.settle()
    # grub-editenv writes in place.
    subprocess.run(["grub-editenv", os.path.join(grub, "grubenv"), "set", "saved_entry=y"], check=True)
    rig.expect("grubenv")


def test_grub_cfg_and_what_it_sources(rig, sysroot):
    """The default is grub.cfg run with the grubenv: a new grub.cfg (bootupd update) or custom.cfg counts."""
    grub = os.path.join(sysroot, "boot", "grub2")
    with open(os.path.join(grub, "grub.cfg.tmp"), "w") as f:
        f.write("load_env\nblscfg\n")
    rig.settle()
    assert "grub.cfg" not in rig.reasons
    os.rename(os.path.join(grub, "grub.cfg.tmp"), os.path.join(grub, "grub.cfg"))
    rig.expect("grub.cfg")
    rig.settle()
    with open(os.path.join(grub, "custom.cfg"), "w") as f:
        f.write('set default="${saved_entry}"\n')
    rig.expect("grub.cfg")


def test_grub_dir_appearing_later_is_watched(rig, sysroot):
    grub = os.path.join(sysroot, "boot", "grub")
    os.mkdir(grub)
    rig.settle()
    assert grub in rig.watcher.armed_paths()
    subprocess.run(["grub-editenv", os.path.join(grub, "grubenv"), "create"], check=True)
    rig.expect("grubenv")


def test_grubenv_symlink_into_esp(rig, sysroot):
    """Fedora on UEFI: boot/grub2/grubenv -> ../efi/EFI/fedora/grubenv; writes land in the ESP."""
    esp = os.path.join(sysroot, "boot", "efi", "EFI", "fedora")
    os.makedirs(esp)
    subprocess.run(["grub-editenv", os.path.join(esp, "grubenv"), "create"], check=True)
    env = os.path.join(sysroot, "boot", "grub2", "grubenv")
    os.unlink(env)
    os.symlink("../efi/EFI/fedora/grubenv", env)
    rig.expect("grubenv")
    rig.settle()
    assert esp in rig.watcher.armed_paths()
    subprocess.run(["grub-editenv", os.path.join(esp, "grubenv"), "set", "saved_entry=z"], check=True)
    rig.expect("grubenv")
    rig.settle()
    open(os.path.join(esp, "unrelated"), "w").close()
    assert rig.collect() == []


def test_loader_conf(rig, sysroot):
    with open(os.path.join(sysroot, "boot", "loader", "loader.conf"), "w") as f:
        f.write("default ostree-1*\n")
    rig.expect("loader.conf")


def test_entries_dir_removed_and_recreated(rig, sysroot):
    d = _entries(sysroot)
    shutil.rmtree(d)
    rig.expect("entries")
    rig.settle()
    assert d not in rig.watcher.armed_paths()
    os.mkdir(d)
    rig.expect("entries")
    rig.settle()
    assert os.path.realpath(d) in rig.watcher.armed_paths()
    with open(os.path.join(d, "back.conf"), "w") as f:
        f.write("title back\n")
    rig.expect("entries")


def test_entries_dir_replaced_by_rename(rig, sysroot):
    d = _entries(sysroot)
    tmp = d + ".new"
    os.mkdir(tmp)
    os.rename(d, d + ".old")
    os.rename(tmp, d)
    rig.expect("entries")
    rig.settle()
    with open(os.path.join(d, "in-new.conf"), "w") as f:
        f.write("title in new\n")
    rig.expect("entries")
    rig.settle()
    # The old directory is no longer watched: writing there reports nothing.
    with open(os.path.join(d + ".old", "stale.conf"), "w") as f:
        f.write("title stale\n")
    assert rig.collect() == []
    assert os.path.realpath(d + ".old") not in rig.watcher.armed_paths()


def test_deploy_dir_mtime_bump(rig, sysroot):
    os.utime(os.path.join(sysroot, "ostree", "deploy"))
    rig.expect("deploy-mtime")


def _deploy_dirs(sysroot: str) -> str:
    return os.path.join(sysroot, "ostree", "deploy", OSNAME, "deploy")


def test_undeploy_reported_after_the_deployment_is_gone(loop, sysroot, sysroot_3, tmp_path):
    """ostree bumps the ostree/deploy mtime BEFORE its cleanup deletes the undeployed
    deployment: a rescan on deploy-mtime alone still sees it (deployment-no-entry).
    A later "deployments" callback must come once the directory is really gone."""
    gone = sysroot_3.deploy_dir(sysroot_3.admin_status()[2])  # the oldest deployment
    seen: list[tuple] = []  # (reason, deployment dir exists at that moment)
    run = tmp_path / "run"
    run.mkdir()
    w = Watcher(
        P(sysroot, str(tmp_path / "no-mountinfo"), "/proc/cmdline", str(run)),
        lambda r: seen.append((r, os.path.exists(gone), os.path.exists(gone + ".origin"))),
        loop,
    )
    w.start()
    rig = Rig.__new__(Rig)
    rig.loop, rig.paths, rig.reasons, rig.watcher = loop, w.paths, [], w
    try:
        assert _deploy_dirs(sysroot) in w.armed_paths()
        assert gone not in w.armed_paths()  # never inside a deployment tree
        rig.ostree("undeploy", "2")
        assert not os.path.exists(gone)
        try:
            rig.run_until(lambda: ("deployments", False, False) in seen)
        except asyncio.TimeoutError:
            raise AssertionError(f"no 'deployments' after the cleanup; (reason, dir, origin exist): {seen}") from None
        loop.run_until_complete(asyncio.sleep(0.2))  # anything still queued
        assert seen[-1][1:] == (False, False), seen  # the last word comes after the cleanup
        assert "deploy-mtime" in [r for r, *_ in seen], seen
    finally:
        w.stop()


def test_deployment_dirs_and_origins_are_reported(rig, sysroot):
    d = _deploy_dirs(sysroot)
    os.mkdir(os.path.join(d, "0" * 64 + ".9"))
    rig.expect("deployments")
    rig.settle()
    with open(os.path.join(d, "0" * 64 + ".9.origin.tmp"), "w") as f:
        f.write("[origin]\nrefspec=fedora/x\n")
    os.rename(os.path.join(d, "0" * 64 + ".9.origin.tmp"), os.path.join(d, "0" * 64 + ".9.origin"))
    rig.expect("deployments")
    rig.settle()
    # Inside a deployment tree nothing is watched: a whole OS lives there.
    inside = os.path.join(sorted(n for n in os.listdir(d) if not n.endswith((".origin", ".9")))[0], "etc")
    open(os.path.join(d, inside, "hostname-test"), "w").close()
    assert rig.collect() == []
    os.unlink(os.path.join(d, "0" * 64 + ".9.origin"))
    rig.expect("deployments")
    rig.settle()
    os.rmdir(os.path.join(d, "0" * 64 + ".9"))
    rig.expect("deployments")


def test_new_stateroot_is_watched(rig, sysroot):
    """`ostree admin os-init` adds ostree/deploy/OTHER (2022.7: only OTHER/var): OTHER stands in
    for the missing OTHER/deploy, which is watched once the first deploy creates it."""
    root = os.path.join(sysroot, "ostree", "deploy", "other")
    d = os.path.join(root, "deploy")
    rig.ostree("os-init", "other")
    rig.settle()
    armed = rig.watcher.armed_paths()
    assert root in armed and d not in armed, armed
    os.mkdir(d)
    rig.expect("deployments")
    rig.settle()
    armed = rig.watcher.armed_paths()
    assert d in armed and root not in armed, armed
    os.mkdir(os.path.join(d, "1" * 64 + ".0"))
    rig.expect("deployments")
    rig.settle()
    # The stateroot removed: its watch goes, nothing breaks; a new one is picked up again.
    shutil.rmtree(root)
    rig.expect("deployments")
    rig.settle()
    assert d not in rig.watcher.armed_paths()
    os.makedirs(d)
    rig.expect("deployments")
    rig.settle()
    assert d in rig.watcher.armed_paths()
    open(os.path.join(d, "x.origin"), "w").close()
    rig.expect("deployments")


def test_run_ostree_appears_and_vanishes(rig):
    run = rig.paths.run
    run_ostree = os.path.join(run, "ostree")
    assert run in rig.watcher.armed_paths()
    os.mkdir(run_ostree)
    rig.settle()
    armed = rig.watcher.armed_paths()
    assert run_ostree in armed and run not in armed, armed  # RUN dropped once RUN/ostree exists
    with open(os.path.join(run_ostree, "staged-deployment"), "wb") as f:
        f.write(b"\0" * 8)
    rig.expect("staged")
    rig.settle()
    open(os.path.join(run_ostree, "staged-deployment-locked"), "w").close()
    rig.expect("staged")
    rig.settle()
    shutil.rmtree(run_ostree)
    rig.expect("staged")
    rig.settle()
    assert run in rig.watcher.armed_paths()  # RUN watched again
    os.mkdir(run_ostree)
    open(os.path.join(run_ostree, "staged-deployment"), "w").close()
    rig.expect("staged")


def test_run_ostree_booted_file(rig):
    booted = os.path.join(rig.paths.run, "ostree-booted")
    with open(booted, "wb") as f:
        f.write(b"")
    rig.expect("booted")
    rig.settle()
    assert booted in rig.watcher.armed_paths()
    with open(booted, "wb") as f:
        f.write(b"\1")
    rig.expect("booted")


def test_missing_sysroot_parts_picked_up_when_they_appear(loop, tmp_path):
    sr = tmp_path / "empty-sysroot"
    sr.mkdir()
    rig = Rig(loop, P(str(sr), str(tmp_path / "no-mountinfo"), "/proc/cmdline", str(tmp_path / "no-run")))
    try:
        assert rig.watcher.armed_paths() == [str(sr)]
        os.makedirs(sr / "boot" / "loader.1" / "entries")
        os.symlink("loader.1", sr / "boot" / "loader")
        rig.settle()
        assert str(sr / "boot" / "loader.1" / "entries") in rig.watcher.armed_paths()
        (sr / "boot" / "loader" / "entries" / "a.conf").write_text("title a\n")
        rig.expect("entries")
    finally:
        rig.watcher.stop()


def test_overflow_is_reported_and_watching_continues(rig, sysroot):
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    d = _entries(sysroot)
    # The loop is not running: events pile up in the kernel queue until it overflows.
    _flood(d, limit + 10)
    rig.expect("overflow")
    assert rig.watcher.stats["overflows"] >= 1
    rig.settle(0.5)
    with open(os.path.join(d, "after.conf"), "w") as f:
        f.write("title after\n")
    rig.expect("entries")


def test_event_flood_never_blocks_the_loop_for_long(rig, sysroot, caplog):
    """asyncio debug mode reports any callback over slow_callback_duration (generous: 0.5 s).

    The events are read in 64 KiB chunks; pyinotify's own Notifier spent
    0.2-0.76 s in one callback for the same flood (measured)."""
    _flood(_entries(sysroot), 8000)
    rig.loop.set_debug(True)
    rig.loop.slow_callback_duration = 0.5
    with caplog.at_level("WARNING", logger="asyncio"):
        rig.expect("entries")
        rig.settle(0.3)
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []
    assert rig.watcher.stats["inotify_wakeups"] >= 2  # really chunked


def test_non_utf8_file_name_does_not_break_the_watcher(rig, sysroot):
    d = _entries(sysroot).encode()
    with open(os.path.join(d, b"bad-\xff.conf"), "wb") as f:
        f.write(b"title bad\n")
    rig.expect("entries")
    rig.settle()
    with open(os.path.join(_entries(sysroot), "good.conf"), "w") as f:
        f.write("title good\n")
    rig.expect("entries")


def test_mountinfo_as_plain_file_uses_inotify(rig):
    assert rig.watcher.mount_watch == "inotify"
    with open(rig.paths.mountinfo + ".tmp", "w") as f:
        f.write("1 0 0:1 / / rw - tmpfs none rw\n")
    os.rename(rig.paths.mountinfo + ".tmp", rig.paths.mountinfo)
    rig.expect("mounts")


def test_on_change_exception_does_not_stop_watching(loop, sysroot, tmp_path):
    seen: list[str] = []

    def bad(reason: str) -> None:
        seen.append(reason)
        raise RuntimeError("caller bug")

    loop.set_exception_handler(lambda _lp, _ctx: None)
    w = Watcher(P(sysroot, "/nonexistent", "/proc/cmdline", str(tmp_path)), bad, loop)
    w.start()
    try:
        for name in ("one.conf", "two.conf"):
            with open(os.path.join(_entries(sysroot), name), "w") as f:
                f.write("title x\n")
            n = len(seen)
            rig = Rig.__new__(Rig)
            rig.loop = loop
            rig.run_until(lambda: len(seen) > n)  # noqa: B023 - called before the loop moves on
    finally:
        w.stop()


def test_stop_releases_everything(loop, sysroot, tmp_path):
    fds_before = set(os.listdir("/proc/self/fd"))
    w = Watcher(P(sysroot, "/proc/self/mountinfo", "/proc/cmdline", str(tmp_path)), lambda r: None, loop)
    w.start()
    assert w.mount_watch == "epoll"
    assert len(os.listdir("/proc/self/fd")) > len(fds_before)
    w.stop()
    w.stop()  # idempotent
    assert set(os.listdir("/proc/self/fd")) == fds_before
    assert w.armed_paths() == []


# --- mountinfo, in a private mount namespace ---------------------------------

_MOUNT_SCRIPT = r"""
import asyncio, ctypes, json, os, subprocess, sys, tempfile, threading, time
from dataclasses import dataclass
from ostreewatch.watcher import Watcher

libc = ctypes.CDLL(None, use_errno=True)
def mount(src, dst, fstype):
    if libc.mount(src.encode(), dst.encode(), fstype.encode(), 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount " + dst)
def umount(dst):
    if libc.umount2(dst.encode(), 0) != 0:
        raise OSError(ctypes.get_errno(), "umount " + dst)

@dataclass(frozen=True)
class P:
    sysroot: str; mountinfo: str; cmdline: str; run: str

work = sys.argv[1]
storm_n = int(sys.argv[2])
sr = os.path.join(work, "sr"); run = os.path.join(work, "run"); mnt = os.path.join(work, "mnt")
for d in (sr + "/boot", run, mnt): os.makedirs(d, exist_ok=True)
out = {}
loop = asyncio.new_event_loop()
calls = []
w = Watcher(P(sr, "/proc/self/mountinfo", "/proc/cmdline", run), lambda r: calls.append((time.monotonic(), r)), loop)

def boot_fs(tag):
    # A separate /boot, as on Fedora CoreOS, with an ostree-like loader link.
    mount("tmpfs", sr + "/boot", "tmpfs")
    os.makedirs(sr + "/boot/loader.0/entries")
    os.symlink("loader.0", sr + "/boot/loader")
    open(sr + "/boot/loader/entries/" + tag + ".conf", "w").write("title " + tag + "\n")

def wait(cond, timeout=10.0):
    async def w_():
        while not cond(): await asyncio.sleep(0.01)
    loop.run_until_complete(asyncio.wait_for(w_(), timeout))

def settle(s=0.3):
    loop.run_until_complete(asyncio.sleep(s)); calls.clear()

boot_fs("first")
w.start()
settle()
tid = threading.get_native_id()
def csw():
    for line in open(f"/proc/self/task/{tid}/status"):
        if line.startswith("voluntary_ctxt_switches:"): return int(line.split()[1])

# 1. one tmpfs mount elsewhere fires nothing (no watched mount point changed);
#    one on the sysroot's boot/efi fires "mounts" (a watched point changed)
mount("tmpfs", mnt, "tmpfs")
loop.run_until_complete(asyncio.sleep(0.3))
out["unrelated_mount"] = [r for _, r in calls]
settle()
umount(mnt)
os.makedirs(sr + "/boot/efi", exist_ok=True)
mount("tmpfs", sr + "/boot/efi", "tmpfs")
wait(lambda: any(r == "mounts" for _, r in calls))
out["single_mount"] = [r for _, r in calls]
settle()
umount(sr + "/boot/efi")
wait(lambda: any(r == "mounts" for _, r in calls))
settle()

# 2. /boot unmounted and mounted again: the inotify watches follow
umount(sr + "/boot")
wait(lambda: any(r == "mounts" for _, r in calls))
settle()
boot_fs("second")
wait(lambda: any(r == "mounts" for _, r in calls))
settle()
out["armed_after_remount"] = w.armed_paths()
open(sr + "/boot/loader/entries/later.conf", "w").write("title later\n")
wait(lambda: any(r == "entries" for _, r in calls))
out["after_remount"] = sorted({r for _, r in calls})
settle()

# 3. a storm of mounts/unmounts in another process of this namespace
storm = (
    "import ctypes, os, sys, time\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "base, n, churn = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n"
    "dirs = [os.path.join(base, 'm%d' % i).encode() for i in range(n)]\n"
    "for d in dirs: os.makedirs(d, exist_ok=True)\n"
    "for d in dirs: assert libc.mount(b'tmpfs', d, b'tmpfs', 0, None) == 0\n"
    "x = os.path.join(base, 'x').encode(); os.makedirs(x, exist_ok=True)\n"
    "end = time.monotonic() + churn\n"
    "while time.monotonic() < end:\n"
    "    assert libc.mount(b'tmpfs', x, b'tmpfs', 0, None) == 0\n"
    "    assert libc.umount2(x, 0) == 0\n"
    "    time.sleep(0.001)\n"
    "for d in dirs: assert libc.umount2(d, 0) == 0\n"
    "efi = sys.argv[4].encode(); os.makedirs(efi, exist_ok=True)\n"
    "assert libc.mount(b'tmpfs', efi, b'tmpfs', 0, None) == 0\n"
)
stats0 = dict(w.stats); csw0 = csw(); cpu0 = time.process_time()
async def run_storm():
    t0 = time.monotonic()
    p = await asyncio.create_subprocess_exec(sys.executable, "-c", storm, mnt, str(storm_n), sys.argv[4],
                                             sr + "/boot/efi")
    assert await p.wait() == 0
    t1 = time.monotonic()
    await asyncio.sleep(0.6)  # let the trailing callback land
    return t0, t1
t0, t1 = loop.run_until_complete(run_storm())
out["storm_seconds"] = t1 - t0
out["storm_callbacks"] = sum(1 for t, r in calls if r == "mounts")
out["storm_last_callback_after_end"] = max(t for t, r in calls if r == "mounts") >= t1 - 0.25
out["storm_wakeups"] = w.stats["mount_wakeups"] - stats0["mount_wakeups"]
out["storm_ctxt_switches"] = csw() - csw0
out["storm_cpu_seconds"] = time.process_time() - cpu0
calls.clear()

# 4. idle again: nothing wakes the loop thread
c0 = csw()
loop.run_until_complete(asyncio.sleep(float(sys.argv[3])))
out["idle_ctxt_switches"] = csw() - c0
out["idle_calls"] = len(calls)
w.stop()
loop.close()
umount(sr + "/boot/efi")  # the storm's last, relevant mount
umount(sr + "/boot")
print(json.dumps(out))
"""


def _run_mount_script(tmp_path, storm_n: int = 2000, idle_s: float = 2.0, churn_s: float = 1.5) -> dict:
    r = subprocess.run(
        [
            *PRIVATE_MOUNT_NS,
            sys.executable,
            "-c",
            _MOUNT_SCRIPT,
            str(tmp_path),
            str(storm_n),
            str(idle_s),
            str(churn_s),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_mountinfo_in_private_namespace(tmp_path):
    out = _run_mount_script(tmp_path)
    assert out["unrelated_mount"] == []
    assert out["single_mount"] == ["mounts"]
    # /boot mounted again: the entries directory of the new /boot is watched.
    assert str(tmp_path / "sr" / "boot" / "loader.0" / "entries") in out["armed_after_remount"]
    assert "entries" in out["after_remount"]
    # 2,000 mounts, churn, 2,000 unmounts, then one mount on a watched point: wakeups bounded
    # by the rate limit, the unrelated ones report nothing, and the last, relevant change is
    # never lost (a trailing callback after the storm).
    bound = out["storm_seconds"] / Watcher.__init__.__kwdefaults__["mount_min_interval"] + 2
    assert 1 <= out["storm_callbacks"] <= 2, out
    assert out["storm_last_callback_after_end"], out
    assert out["storm_wakeups"] <= 2 * bound + 2, out
    # Idle: no wakeups, no callbacks.
    assert out["idle_calls"] == 0
    assert out["idle_ctxt_switches"] <= 5, out


_POLL_FACT = r"""
import ctypes, os, select, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
d = tempfile.mkdtemp().encode()
f = open("/proc/self/mountinfo", "rb", buffering=0)
ep = select.epoll(); ep.register(f.fileno(), select.EPOLLPRI | select.EPOLLERR)
out = {"idle": ep.poll(0) != []}
assert libc.mount(b"tmpfs", d, b"tmpfs", 0, None) == 0
f.seek(0); f.read()                       # a full read from the start ...
out["after_read"] = ep.poll(0) != []      # ... leaves the change pending
out["after_poll"] = ep.poll(0) != []      # the poll itself consumed it
assert libc.umount2(d, 0) == 0
os.rmdir(d)
print(out)
"""


def test_kernel_clears_mountinfo_change_on_poll_not_on_read():
    """The fact the rate limiter relies on (checked, kernel 6.x mounts_poll): the per-file
    "seen" state is updated by poll, so the watcher drains its epoll and never reads the file."""
    r = subprocess.run(
        [*PRIVATE_MOUNT_NS, sys.executable, "-c", _POLL_FACT],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{'idle': False, 'after_read': True, 'after_poll': False}"
