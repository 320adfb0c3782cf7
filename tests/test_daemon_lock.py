"""ostreewatchd holds back what it reads while ostree's sysroot lock is held (issue 17).

A real daemon on a real system bus, watching sysroots written by the real ostree
(2022.7, and 2026.4 from the cached sid tree for `ostree admin deploy --stage`).
ostree takes its lock (an OFD write lock on ostree/lock) before it writes anything
and unlinks the file, then closes it, when it is done: in between, a sysroot is
half-written (a deployment without its entry, a loader.N beside the loader link's
target), and publishing that would be publishing problems that are not real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from ostreewatch import layout, state
from ostreewatch.daemon import LOCK_WAIT_MAX, lock_wait_max
from ostreewatch.sysroot import Root
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.daemon_sysroot import OSNAME, bus, entries_dir, sysroot
from tests.fixtures.modern import ModernSysroot, boot_prepare_root, modern_sysroot
from tests.test_daemon import Subscriber, typed

__all__ = ["bus", "modern_sysroot", "sysroot"]  # fixtures

FALSE_CODES = {"deployment-no-entry", "stale-boot-dir", "stale-loader-dir"}

# Holds ostree's lock as libglnx does (glnx_make_lock_file: open O_RDWR|O_CREAT, F_OFD_SETLK
# write lock) until a line arrives on stdin; then releases it as glnx_release_lock_file does:
# unlink, then close. The lock file path is argv[1].
_LOCK_HOLDER = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
sys.stdin.readline()
os.unlink(sys.argv[1])
os.close(fd)
"""


class LockHolder:
    """A separate process holding ostree/lock of a sysroot until release()."""

    def __init__(self, sysroot: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, os.path.join(sysroot, "ostree", "lock")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def holder_factory() -> Iterator[Callable[[str], LockHolder]]:
    made: list[LockHolder] = []

    def make(sysroot: str) -> LockHolder:
        h = LockHolder(sysroot)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


# --- the probe: through the confined reader, never blocking ---------------------------------------


def test_the_lock_probe_follows_a_booted_hosts_ostree_link_inside_the_sysroot(
    tmp_path: Path, holder_factory: Callable[[str], LockHolder]
) -> None:
    """On a booted host the sysroot is / and `ostree` is a link to sysroot/ostree (absolute here,
    which must resolve inside the sysroot as under chroot, never on the machine's own /sysroot)."""
    root = tmp_path / "root"
    (root / "sysroot" / "ostree").mkdir(parents=True)
    os.symlink("/sysroot/ostree", root / "ostree")
    assert not layout.sysroot_locked(str(root))  # no lock file: ostree unlinked it, nobody holds it
    holder = holder_factory(str(root / "sysroot"))
    assert layout.sysroot_locked(str(root))
    assert layout.sysroot_locked(Root(str(root)))
    holder.release()
    assert not layout.sysroot_locked(str(root))


def test_the_lock_probe_refuses_what_is_not_a_regular_file_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "ostree").mkdir()
    os.mkfifo(tmp_path / "ostree" / "lock")  # opening a FIFO for reading would wait for a writer
    assert not layout.sysroot_locked(str(tmp_path))
    os.unlink(tmp_path / "ostree" / "lock")
    os.symlink("/etc/hostname", tmp_path / "ostree" / "lock")  # resolved inside: a missing file
    assert not layout.sysroot_locked(str(tmp_path))
    assert not layout.sysroot_locked(str(tmp_path / "missing"))


def test_lock_wait_max_from_the_environment() -> None:
    env = "OSTREEWATCH_LOCK_WAIT_MAX"
    assert lock_wait_max({}) == LOCK_WAIT_MAX == 300
    assert lock_wait_max({env: "2.5"}) == 2.5
    assert lock_wait_max({env: "0"}) == 0
    for bad in ("soon", "-1", "nan", "inf"):
        assert lock_wait_max({env: bad}) == LOCK_WAIT_MAX


# --- the daemon ----------------------------------------------------------------------------------


def published_problems(events: list[tuple[str, dict[str, Any]]]) -> list[set[str]]:
    """The problem codes of every PropertiesChanged that carried Problems, in order."""
    return [
        {p["code"] for p in args["changed"]["Problems"]}
        for args in typed(events, "PropertiesChanged")
        if "Problems" in args["changed"]
    ]


def codes(d: DaemonProcess) -> set[str]:
    return {p["code"]["data"] for p in d.get_property("Problems")}


def make_false_state(sysroot: str) -> list[str]:
    """What a deploy or a finalize shows half-way: a deployment directory without an entry, a
    loader.N beside the loader link's target and the boot links of the other subbootversion
    beside ostree/boot.N's; the paths made (to undo)."""
    boot = os.path.join(sysroot, "boot")
    current = os.readlink(os.path.join(boot, "loader"))  # loader.N
    other = "loader.0" if current.endswith("1") else "loader.1"
    stale = os.path.join(boot, other)
    shutil.copytree(os.path.join(boot, current), stale, symlinks=True)
    links = os.path.join(sysroot, "ostree")
    sub = os.readlink(os.path.join(links, f"boot.{current[-1]}"))  # boot.N.M
    stale_links = os.path.join(links, sub[:-1] + ("0" if sub.endswith("1") else "1"))
    shutil.copytree(os.path.join(links, sub), stale_links, symlinks=True)
    deploy = os.path.join(sysroot, "ostree", "deploy", OSNAME, "deploy", "ab" * 32 + ".0")
    os.mkdir(deploy)
    return [stale, stale_links, deploy]


def test_a_false_state_under_the_lock_is_never_published_and_the_release_publishes_once(
    bus: Any,
    sysroot: str,
    daemon_factory: Callable[..., DaemonProcess],
    holder_factory: Callable[[str], LockHolder],
) -> None:
    d = daemon_factory(bus, sysroot)
    d.wait_name()
    assert codes(d) == set()
    gen = d.get_property("Generation")
    sub = Subscriber(bus.address)
    try:
        mark = sub.mark()
        holder = holder_factory(sysroot)
        made = make_false_state(sysroot)
        # The real change of the operation, then the false state undone, all under the lock.
        with open(os.path.join(entries_dir(sysroot), "hand-added.conf"), "w") as f:
            f.write("title hand added\nversion 99\nlinux /vmlinuz\n")
        # Nothing is published while the lock is held, however long the quiet time:
        # a generous wait for a signal that must not come (no speed is measured).
        assert sub.settle(mark, quiet=2.0) == []
        # A Reload() while the lock is held does not publish the half-written state either.
        assert d.busctl("call", "org.ostreewatch1", "/org/ostreewatch1", "org.ostreewatch1.Manager", "Reload").stdout
        assert d.get_property("Generation") == gen and codes(d) == set()
        for path in made:
            shutil.rmtree(path)
        holder.release()
        ev = sub.wait_for(mark, lambda ev: typed(ev, "BootEntriesChanged"))
        ev = sub.settle(mark)
    finally:
        sub.close()
    # One change, the operation's own: the new entry; no problem was ever published.
    assert [n for n, _ in ev].count("PropertiesChanged") == 1, ev
    assert typed(ev, "BootEntriesChanged") == [{"added": ["hand-added"], "removed": [], "modified": []}]
    assert published_problems(ev) == []
    assert d.get_property("Generation") == gen + 1
    assert codes(d) == set()


def test_a_lock_held_past_the_wait_max_publishes_with_sysroot_lock_held(
    bus: Any,
    sysroot: str,
    daemon_factory: Callable[..., DaemonProcess],
    holder_factory: Callable[[str], LockHolder],
) -> None:
    d = daemon_factory(bus, sysroot, env={"OSTREEWATCH_LOCK_WAIT_MAX": "1"})
    d.wait_name()
    sub = Subscriber(bus.address)
    try:
        mark = sub.mark()
        holder = holder_factory(sysroot)
        made = make_false_state(sysroot)
        # Past the limit, what is there is published, saying why it may be half-written.
        ev = sub.wait_for(mark, lambda ev: any("sysroot-lock-held" in c for c in published_problems(ev)))
        assert published_problems(ev)[-1] == FALSE_CODES | {"sysroot-lock-held"}
        problem = next(p for p in d.get_property("Problems") if p["code"]["data"] == "sysroot-lock-held")
        assert problem["subject"]["data"] == "/ostree/lock"
        # Still held: the rechecks publish nothing new (the problem's text does not count seconds).
        mark2 = sub.mark()
        assert sub.settle(mark2, quiet=6.0) == []
        for path in made:
            shutil.rmtree(path)
        holder.release()
        ev = sub.wait_for(mark2, lambda ev: published_problems(ev) == [set()])
    finally:
        sub.close()
    assert codes(d) == set()
    assert "Traceback" not in d.stderr_text()


def test_a_lock_held_at_start_publishes_the_first_read_then_the_state_after_release(
    bus: Any,
    sysroot: str,
    daemon_factory: Callable[..., DaemonProcess],
    holder_factory: Callable[[str], LockHolder],
) -> None:
    """The first read is never held back (READY=1 cannot wait for ostree); the release is published."""
    holder = holder_factory(sysroot)
    made = make_false_state(sysroot)
    d = daemon_factory(bus, sysroot, notify=True)
    d.wait_notify("READY=1")
    d.wait_name()
    assert codes(d) == FALSE_CODES
    sub = Subscriber(bus.address)
    try:
        mark = sub.mark()
        for path in made:
            shutil.rmtree(path)
        holder.release()
        sub.wait_for(mark, lambda ev: published_problems(ev) == [set()])
    finally:
        sub.close()
    assert codes(d) == set()


def test_a_real_staged_deploy_beside_the_daemon_publishes_no_false_problem(
    bus: Any,
    modern_sysroot: Callable[..., ModernSysroot],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """`ostree admin deploy --stage` (2026.4) in a booted host while the daemon watches its sysroot.

    The host is booted by ostree-prepare-root (tests/fixtures/modern.py); its /run/ostree
    is a bind of a directory the daemon watches as RUN/ostree, so the daemon sees the
    staged-deployment file appear as on a host. ostree creates the deployment directory
    under its lock and writes the staged-deployment file last: in between the new
    deployment has no entry and is not yet staged.
    """
    sr = modern_sysroot("2026.4")
    sr.build(2)
    entry = state.read_snapshot(sr.paths()).BootEntries[0]
    sr.commit("fedora/x", version="3", kver="6.1.3")
    host_run = tmp_path / "host-run"
    (host_run / "ostree").mkdir(parents=True)
    d = daemon_factory(bus, sr.paths(run=str(host_run)))
    d.wait_name()
    before = [dep["id"]["data"] for dep in d.get_property("Deployments")]
    assert codes(d) == set()
    sub = Subscriber(bus.address)
    try:
        mark = sub.mark()
        action = (
            f'cp -a "$B/run/ostree/." {host_run}/ostree/ && mount --bind {host_run}/ostree "$B/run/ostree" && '
            'chroot "$B" ostree admin deploy --stage fedora/x'
        )
        boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=False, action=action)
        staged = [f"{x['stateroot']}-{x['checksum']}.{x['serial']}" for x in boot.status_after if x["staged"]]
        assert len(staged) == 1 and staged[0] not in before
        ev = sub.wait_for(mark, lambda ev: d.get_property("StagedDeployment") == staged[0])
        ev = sub.settle(mark)
    finally:
        sub.close()
    assert all("deployment-no-entry" not in c for c in published_problems(ev)), ev
    # The staged deployment came in one change, already staged: never a deployment without its state.
    carrying = [a["changed"] for a in typed(ev, "PropertiesChanged") if "Deployments" in a["changed"]]
    assert len(carrying) == 1, carrying
    assert carrying[0].get("StagedDeployment") == staged[0]
    assert codes(d) == set()


def test_a_real_finalize_staged_beside_the_daemon_publishes_no_false_problem(
    bus: Any,
    modern_sysroot: Callable[..., ModernSysroot],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    """`ostree admin finalize-staged` (2026.4, what ostree-finalize-staged.service runs at shutdown).

    Under its lock ostree deletes RUN/ostree/staged-deployment first (the deployment is then
    without an entry and no longer staged), writes the new boot version's loader.N beside the
    current one, swaps the loader link, then removes the old one.
    """
    sr = modern_sysroot("2026.4")
    sr.build(2)
    entry = state.read_snapshot(sr.paths()).BootEntries[0]
    sr.commit("fedora/x", version="3", kver="6.1.3")
    host_run = tmp_path / "host-run"
    (host_run / "ostree").mkdir(parents=True)
    d = daemon_factory(bus, sr.paths(run=str(host_run)))
    d.wait_name()
    sub = Subscriber(bus.address)
    try:
        mark = sub.mark()
        action = (
            f'cp -a "$B/run/ostree/." {host_run}/ostree/ && mount --bind {host_run}/ostree "$B/run/ostree" && '
            'chroot "$B" ostree admin deploy --stage fedora/x && chroot "$B" ostree admin finalize-staged'
        )
        boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=False, action=action)
        assert not any(x["staged"] for x in boot.status_after)
        new_default = f"{boot.status_after[0]['stateroot']}-{boot.status_after[0]['checksum']}"
        new_default += f".{boot.status_after[0]['serial']}"
        sub.wait_for(mark, lambda ev: d.get_property("DefaultDeployment") == new_default)
        ev = sub.settle(mark)
    finally:
        sub.close()
    assert all(not (c & FALSE_CODES) for c in published_problems(ev)), ev
    assert d.get_property("StagedDeployment") == ""
    ids = [dep["id"]["data"] for dep in d.get_property("Deployments")]
    assert ids == [f"{x['stateroot']}-{x['checksum']}.{x['serial']}" for x in boot.status_after]
    assert codes(d) == set()
