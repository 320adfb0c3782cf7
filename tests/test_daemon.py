"""ostreewatchd as a process: on a real system bus, watching a sysroot built by the real ostree tool.

Every ostree call runs in `unshare --user --map-root-user` with
OSTREE_SYSROOT_DEBUG=mutable-deployments (docs/platform.md says why).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from ostreewatch import service
from ostreewatch.client import Client
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.daemon_sysroot import (
    OSNAME,
    bus,
    deployment_ids,
    entries_dir,
    ostree,
    sysroot,
)
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

TYPED = ("DeploymentsChanged", "BootEntriesChanged", "DefaultEntryChanged", "MountsChanged")


# --- a subscriber that records everything -----------------------------------------------------


class Subscriber:
    """A dbus-next client in a thread of its own, recording every signal of the daemon."""

    def __init__(self, address: str) -> None:
        import threading

        self.address = address
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "subscriber did not connect"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.client = await Client.connect(self.address)
        await self.client.subscribe(self._on)
        self.stop_fut = self.loop.create_future()
        self.ready.set()
        await self.stop_fut
        self.client.close()

    def _on(self, name: str, args: dict[str, Any]) -> None:
        with self.cond:
            self.events.append((name, args))
            self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait_for(self, since: int, pred: Any, timeout: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
        """Events since SINCE once pred(events) holds; AssertionError with the events on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self.events[since:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected signals did not come; got {self.events[since:]}")
                self.cond.wait(left)
            return list(self.events[since:])

    def settle(self, since: int, quiet: float = 1.0) -> list[tuple[str, dict[str, Any]]]:
        """Events since SINCE after QUIET seconds without a new one (a generous wait, not a speed test)."""
        with self.cond:
            n = len(self.events)
            while True:
                self.cond.wait(quiet)
                if len(self.events) == n:
                    return list(self.events[since:])
                n = len(self.events)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.stop_fut.done() or self.stop_fut.set_result(None))
        self.thread.join(10)


def typed(events: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [args for n, args in events if n == name]


def generations(events: list[tuple[str, dict[str, Any]]]) -> list[int]:
    return [args["changed"]["Generation"] for n, args in events if n == "PropertiesChanged"]


def union(events: list[dict[str, Any]], key: str) -> set:
    return {x for e in events for x in e[key]}


# --- life cycle ---------------------------------------------------------------------------------


def test_ready_before_the_bus_then_connects_when_it_appears(
    bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    bus.stop()
    d = daemon_factory(bus, sysroot, notify=True)
    ready = d.wait_notify("READY=1")
    assert "STATUS=" in ready or any("STATUS=" in m for m in d.notify_messages())
    assert not d.has_owner()
    assert d.alive()
    bus.start()
    d.wait_name()
    ids = deployment_ids(d)
    assert len(ids) == 2 and all(i.startswith(OSNAME + "-") for i in ids)
    assert d.get_property("Generation") == 1


def test_watchdog_pings_only_when_asked(bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = daemon_factory(bus, sysroot, notify=True, env={"WATCHDOG_USEC": "200000"})
    d.wait_notify("READY=1")
    d.wait_notify("WATCHDOG=1")
    quiet = daemon_factory(bus, sysroot, notify=True)
    quiet.wait_notify("READY=1")
    quiet.notify_messages(timeout=1.0)
    assert not any("WATCHDOG=1" in m for m in quiet.notify_messages())


def test_bus_restart_daemon_owns_its_name_again(
    bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(bus, sysroot)
    d.wait_name()
    before = d.get_property("Deployments")
    bus.stop()
    # change the state while the bus is away: the daemon keeps watching
    ostree("admin", "deploy", f"--sysroot={sysroot}", f"--os={OSNAME}", "--retain", f"{OSNAME}/c")
    bus.start()
    d.wait_name()
    deadline = time.monotonic() + 30
    while len(d.get_property("Deployments")) != 3:
        assert time.monotonic() < deadline, d.stderr_text()
        time.sleep(0.1)
    assert d.get_property("Deployments") != before
    assert d.alive()
    bus.stop()
    bus.start()
    d.wait_name()
    assert len(d.get_property("Deployments")) == 3


def test_sigterm_exits_zero_and_sighup_rescans(
    bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    d = daemon_factory(bus, sysroot, extra_args=["--debounce-ms", "5000"])
    d.wait_name()
    sub = Subscriber(bus.address)
    try:
        mark = sub.mark()
        # a hand-added entry; the 5 s debounce holds the watcher's rescan back, SIGHUP does it now
        with open(os.path.join(entries_dir(sysroot), "zz-hand.conf"), "w") as f:
            f.write("title hand\nlinux /vmlinuz\n")
        d.send_signal(signal.SIGHUP)
        ev = sub.wait_for(mark, lambda ev: typed(ev, "BootEntriesChanged"))
        assert typed(ev, "BootEntriesChanged")[0]["added"] == ["zz-hand"]
    finally:
        sub.close()
    # Reload (root) returns the new Generation; nothing changed -> the same number again
    gen = d.get_property("Generation")
    out = d.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload").stdout
    assert out.strip() == f"t {gen}"
    # something changed, the 5 s debounce still pending: Reload rescans now and returns Generation + 1
    with open(os.path.join(entries_dir(sysroot), "zz-hand2.conf"), "w") as f:
        f.write("title hand 2\nlinux /vmlinuz\n")
    out = d.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload").stdout
    assert out.strip() == f"t {gen + 1}"
    assert "zz-hand2" in [e["id"]["data"] for e in d.get_property("BootEntries")]
    t0 = time.monotonic()
    assert d.stop(timeout=5) == 0
    assert time.monotonic() - t0 < 5  # within the stop() wait: it was not killed


# --- changes made by the real ostree tool ----------------------------------------------------------


class Watched:
    """A daemon on the test sysroot, a dbus-next Subscriber and a `busctl monitor` recording the same signals."""

    def __init__(self, bus: Any, sysroot: str, d: DaemonProcess) -> None:
        self.sysroot = sysroot
        self.d = d
        d.wait_name()
        self.mon = subprocess.Popen(
            ["busctl", "--system", "monitor", "--json=short", service.BUS_NAME],
            env=d.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read_monitor, daemon=True)
        self.reader.start()
        self.sub = Subscriber(bus.address)
        time.sleep(0.5)  # busctl monitor is a monitor by now

    def _read_monitor(self) -> None:
        assert self.mon.stdout is not None
        for line in self.mon.stdout:
            if line.startswith("{"):
                member = json.loads(line).get("member")
                if member in TYPED + ("PropertiesChanged",):
                    self.seen.append(member)

    def deploy_c(self) -> list[str]:
        """A further deploy (testos/c), waited for until the daemon publishes it; the new deployment ids."""
        mark = self.sub.mark()
        ostree("admin", "deploy", f"--sysroot={self.sysroot}", f"--os={OSNAME}", "--retain", f"{OSNAME}/c")
        self.sub.wait_for(mark, lambda ev: union(typed(ev, "DeploymentsChanged"), "added"))
        self.sub.settle(mark)
        return deployment_ids(self.d)

    def assert_monitor_saw_the_same(self) -> None:
        """busctl monitor saw the same signals, in the same order, as the dbus-next subscriber."""
        deadline = time.monotonic() + 30
        while len(self.seen) < len(self.sub.events) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.seen == [n for n, _ in self.sub.events]

    def close(self) -> None:
        self.sub.close()
        self.mon.terminate()
        self.mon.wait(10)
        self.reader.join(10)
        if self.mon.stdout:
            self.mon.stdout.close()


@pytest.fixture
def watched(bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]) -> Iterator[Watched]:
    w = Watched(bus, sysroot, daemon_factory(bus, sysroot))
    try:
        yield w
    finally:
        w.close()


# The changes real ostree makes, one test each: every one starts from the two-deployment sysroot.


def test_a_further_deploy_adds_one_deployment_and_moves_the_default(watched: Watched) -> None:
    d, sub, sysroot = watched.d, watched.sub, watched.sysroot
    old_ids = deployment_ids(d)
    mark = sub.mark()
    ostree("admin", "deploy", f"--sysroot={sysroot}", f"--os={OSNAME}", "--retain", f"{OSNAME}/c")
    ev = sub.wait_for(mark, lambda ev: union(typed(ev, "DeploymentsChanged"), "added"))
    ev = sub.settle(mark)
    new_ids = deployment_ids(d)
    assert len(new_ids) == 3 and set(old_ids) < set(new_ids)
    added = (set(new_ids) - set(old_ids)).pop()
    # exactly one published change (the rescan waits for ostree to release its sysroot lock)
    assert [n for n, _ in ev] == [
        "PropertiesChanged",
        "DeploymentsChanged",
        "BootEntriesChanged",
        "DefaultEntryChanged",
    ], ev
    assert typed(ev, "DeploymentsChanged") == [{"added": [added], "removed": []}]
    entries = {e["id"]["data"]: e for e in d.get_property("BootEntries")}
    new_entry = [i for i, e in entries.items() if e["deployment"]["data"] == added]
    assert typed(ev, "BootEntriesChanged") == [
        {"added": new_entry, "removed": [], "modified": sorted(set(entries) - set(new_entry))}
    ]
    assert typed(ev, "DefaultEntryChanged")[0]["current"] == new_entry[0] == d.get_property("DefaultEntry")
    assert d.get_property("DefaultDeployment") == added
    gens = generations(ev)
    assert gens == list(range(gens[0], gens[0] + len(gens)))  # one PropertiesChanged per change
    watched.assert_monitor_saw_the_same()


def test_an_undeploy_removes_that_deployment(watched: Watched) -> None:
    d, sub, sysroot = watched.d, watched.sub, watched.sysroot
    new_ids = watched.deploy_c()
    mark = sub.mark()
    victim = new_ids[2]
    ostree("admin", "undeploy", f"--sysroot={sysroot}", "2")
    ev = sub.wait_for(mark, lambda ev: union(typed(ev, "DeploymentsChanged"), "removed"))
    ev = sub.settle(mark)
    assert union(typed(ev, "DeploymentsChanged"), "removed") == {victim}
    assert union(typed(ev, "DeploymentsChanged"), "added") == set()
    assert victim not in deployment_ids(d)
    watched.assert_monitor_saw_the_same()


def test_a_pin_changes_only_the_deployments_property(watched: Watched) -> None:
    """Pin index 1: only Deployments changes (pinned), no typed signal but PropertiesChanged."""
    d, sub, sysroot = watched.d, watched.sub, watched.sysroot
    mark = sub.mark()
    ostree("admin", "pin", f"--sysroot={sysroot}", "1")
    ev = sub.wait_for(mark, lambda ev: any(n == "PropertiesChanged" and "Deployments" in a["changed"] for n, a in ev))
    ev = sub.settle(mark)
    deps = d.get_property("Deployments")
    assert deps[1]["pinned"]["data"] is True and deps[0]["pinned"]["data"] is False
    assert not any(n in TYPED for n, _ in ev), ev
    watched.assert_monitor_saw_the_same()


def test_kargs_edit_in_place_modifies_every_entry(watched: Watched) -> None:
    """Nothing added or removed."""
    d, sub, sysroot = watched.d, watched.sub, watched.sysroot
    mark = sub.mark()
    ostree("admin", "kargs", "edit-in-place", f"--sysroot={sysroot}", "--append-if-missing=owtest=1")
    ev = sub.wait_for(mark, lambda ev: typed(ev, "BootEntriesChanged"))
    ev = sub.settle(mark)
    changes = typed(ev, "BootEntriesChanged")
    entries = d.get_property("BootEntries")
    assert union(changes, "modified") == {e["id"]["data"] for e in entries}
    assert union(changes, "added") == set() and union(changes, "removed") == set()
    assert all("owtest=1" in e["options"]["data"] for e in entries)
    assert not typed(ev, "DeploymentsChanged")
    watched.assert_monitor_saw_the_same()


def test_a_hand_added_entry_then_a_malformed_one(watched: Watched) -> None:
    """The malformed entry is a problem; the daemon stays up."""
    d, sub, sysroot = watched.d, watched.sub, watched.sysroot
    mark = sub.mark()
    with open(os.path.join(entries_dir(sysroot), "hand.conf"), "w") as f:
        f.write("title Hand-added\nversion 99\nlinux /vmlinuz-hand\noptions rw\n")
    ev = sub.wait_for(mark, lambda ev: typed(ev, "BootEntriesChanged"))
    ev = sub.settle(mark)
    assert typed(ev, "BootEntriesChanged") == [{"added": ["hand"], "removed": [], "modified": []}]
    problems_before = d.get_property("Problems")
    mark = sub.mark()
    with open(os.path.join(entries_dir(sysroot), "bad.conf"), "wb") as f:
        f.write(b"\xff\xfe\x00garbage\nlinux\n")
    ev = sub.wait_for(mark, lambda ev: any(n == "PropertiesChanged" for n, _ in ev))
    ev = sub.settle(mark)
    assert d.alive()
    assert d.get_property("Problems") != problems_before
    assert not typed(ev, "DeploymentsChanged")
    watched.assert_monitor_saw_the_same()


def test_the_entries_directory_removed_then_recreated(watched: Watched) -> None:
    """Recreated with the same files: the same entries come back."""
    d, sub, sysroot = watched.d, watched.sub, watched.sysroot
    saved = tempfile.mkdtemp(prefix="ow-entries-")
    try:
        for name in os.listdir(entries_dir(sysroot)):
            shutil.copy2(os.path.join(entries_dir(sysroot), name), saved)
        ids_before = {e["id"]["data"] for e in d.get_property("BootEntries")}
        mark = sub.mark()
        shutil.rmtree(entries_dir(sysroot))
        sub.wait_for(mark, lambda ev: union(typed(ev, "BootEntriesChanged"), "removed") >= ids_before)
        sub.settle(mark)
        assert d.get_property("BootEntries") == []
        mark = sub.mark()
        os.mkdir(entries_dir(sysroot))
        for name in os.listdir(saved):
            shutil.copy2(os.path.join(saved, name), entries_dir(sysroot))
        sub.wait_for(mark, lambda ev: union(typed(ev, "BootEntriesChanged"), "added") >= ids_before)
        sub.settle(mark)
        assert {e["id"]["data"] for e in d.get_property("BootEntries")} == ids_before
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    assert d.alive()
    watched.assert_monitor_saw_the_same()


# --- mounts --------------------------------------------------------------------------------------

_STORM = r"""
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
base = sys.argv[1]
os.makedirs(base, exist_ok=True)
for i in range(int(sys.argv[2])):
    if libc.mount(b"none", base.encode(), b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
    if libc.umount2(base.encode(), 0) != 0:
        raise OSError(ctypes.get_errno(), "umount")
"""


def test_mounts_in_a_private_namespace(bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = daemon_factory(bus, sysroot, mountinfo="/proc/self/mountinfo", prefix=[*PRIVATE_MOUNT_NS])
    d.wait_name()
    sub = Subscriber(bus.address)
    scratch = tempfile.mkdtemp(prefix="ow-mnt-")
    try:
        nsenter = ["nsenter", "--mount", "--target", str(d.pid)]
        usr_before = [m for m in d.get_property("Mounts") if m["mount_point"]["data"] == "/usr"]

        # 2,000 unrelated tmpfs mounts and unmounts: nothing is published
        mark = sub.mark()
        gen = d.get_property("Generation")
        subprocess.run(
            nsenter + [sys.executable, "-c", _STORM, os.path.join(scratch, "storm"), "2000"], check=True, timeout=120
        )
        ev = sub.settle(mark, quiet=1.5)
        assert ev == []
        assert d.get_property("Generation") == gen

        # a bind mount onto /usr: Mounts changes, MountsChanged(["/usr"])
        mark = sub.mark()
        subprocess.run(nsenter + ["mount", "--bind", scratch, "/usr"], check=True, timeout=30)
        ev = sub.wait_for(mark, lambda ev: typed(ev, "MountsChanged"))
        ev = sub.settle(mark)
        assert typed(ev, "MountsChanged") == [{"mount_points": ["/usr"]}]
        usr = [m for m in d.get_property("Mounts") if m["mount_point"]["data"] == "/usr"]
        assert len(usr) == 1 and usr != usr_before
        # the host's /usr is untouched
        host = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/usr"], capture_output=True, text=True)
        assert scratch not in host.stdout
    finally:
        sub.close()
        d.stop()
        shutil.rmtree(scratch, ignore_errors=True)


# Mounts and unmounts a tmpfs for argv[2] seconds.
_CHURN = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
base = sys.argv[1]
os.makedirs(base, exist_ok=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    if libc.mount(b"none", base.encode(), b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")
    if libc.umount2(base.encode(), 0) != 0:
        raise OSError(ctypes.get_errno(), "umount")
"""


def test_relevant_mount_in_the_middle_of_a_storm(
    bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A bind mount onto /usr while thousands of unrelated mounts churn: published once, nothing else."""
    d = daemon_factory(bus, sysroot, mountinfo="/proc/self/mountinfo", prefix=[*PRIVATE_MOUNT_NS])
    d.wait_name()
    sub = Subscriber(bus.address)
    scratch = tempfile.mkdtemp(prefix="ow-mnt-")
    nsenter = ["nsenter", "--mount", "--target", str(d.pid)]
    storm = subprocess.Popen(nsenter + [sys.executable, "-c", _CHURN, os.path.join(scratch, "storm"), "3"])
    try:
        gen = d.get_property("Generation")
        mark = sub.mark()
        time.sleep(1.0)  # well inside the 3 s storm
        assert storm.poll() is None, "the storm ended before the relevant change"
        subprocess.run(nsenter + ["mount", "--bind", scratch, "/usr"], check=True, timeout=30)
        sub.wait_for(mark, lambda ev: typed(ev, "MountsChanged"))
        assert storm.wait(120) == 0
        ev = sub.settle(mark, quiet=1.5)
        assert typed(ev, "MountsChanged") == [{"mount_points": ["/usr"]}]
        assert [name for name, _ in ev if name in TYPED] == ["MountsChanged"]
        assert d.get_property("Generation") == gen + 1
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait(10)
        sub.close()
        d.stop()
        shutil.rmtree(scratch, ignore_errors=True)


# --- ostree's sysroot lock -------------------------------------------------------------------

# Holds an OFD write lock on ostree/lock, as ostree does for a whole operation, until a line
# arrives on stdin; then closes the file (IN_CLOSE_WRITE), as ostree does when it unlocks.
_LOCK_HOLDER = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhxxxxqqixxxx", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
sys.stdin.readline()
os.close(fd)
"""


def test_a_change_under_ostrees_lock_waits_for_its_release(
    bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    """A half-written sysroot is not published: the rescan waits for ostree's unlock."""
    d = daemon_factory(bus, sysroot)
    d.wait_name()
    sub = Subscriber(bus.address)
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, os.path.join(sysroot, "ostree", "lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        mark = sub.mark()
        entries = os.path.join(sysroot, "boot", "loader", "entries")
        tmp = os.path.join(sysroot, "boot", "loader", "hand-added.conf.tmp")
        with open(tmp, "w") as f:
            f.write("title hand added\nversion 99\nlinux /vmlinuz\n")
        os.rename(tmp, os.path.join(entries, "hand-added.conf"))
        # Well inside the daemon's 2 s cap on waiting for the lock: nothing is published.
        assert sub.settle(mark, quiet=0.8) == []
        holder.stdin.write("\n")
        holder.stdin.flush()
        ev = sub.wait_for(mark, lambda ev: typed(ev, "BootEntriesChanged"))
        ev = sub.settle(mark)
        assert typed(ev, "BootEntriesChanged") == [{"added": ["hand-added"], "removed": [], "modified": []}]
        assert [n for n, _ in ev].count("PropertiesChanged") == 1
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        sub.close()


# --- the event loop never blocks ------------------------------------------------------------


def test_nothing_blocks_the_event_loop(bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = daemon_factory(bus, sysroot, env={"OSTREEWATCH_ASYNCIO_DEBUG": "1"}, extra_args=["--debounce-ms", "0"])
    d.wait_name()
    sub = Subscriber(bus.address)
    try:
        # load: 5 bursts of 10 new entries (a busy host has a handful), GetAll calls meanwhile
        for round_ in range(5):
            mark = sub.mark()
            for i in range(10):
                with open(os.path.join(entries_dir(sysroot), f"load-{round_}-{i}.conf"), "w") as f:
                    f.write(f"title load {i}\nversion {i}\nlinux /vmlinuz-{i}\noptions rw quiet\n")
            for _ in range(5):
                d.busctl("call", BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", INTERFACE)
            sub.wait_for(mark, lambda ev: len(union(typed(ev, "BootEntriesChanged"), "added")) >= 10)
        sub.settle(sub.mark())
    finally:
        sub.close()
    assert d.stop() == 0
    err = d.stderr_text()
    assert "Executing" not in err or " took " not in err, err
    assert "Traceback" not in err, err


# --- bad input at start: a one-line error and exit 1, never a traceback --------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--sysroot", "/nonexistent-ow"],
        ["--bus", "not-an-address"],
        ["--debounce-ms", "soon"],
    ],
)
def test_bad_arguments_exit_1_with_one_line(args: list[str], tmp_path: Any) -> None:
    base = ["--sysroot", str(tmp_path), "--bus", "unix:path=" + str(tmp_path / "nobus")]
    r = subprocess.run(
        [sys.executable, "-m", "ostreewatch.daemon", *base, *args], capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("ostreewatchd: "), r.stderr
    if r.returncode == 2:  # argparse: usage, then the one error line
        assert "usage:" in r.stderr
    else:
        assert r.returncode == 1 and len(lines) == 1, r.stderr
