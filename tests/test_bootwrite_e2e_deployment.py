"""SetDefaultDeployment (and SetDefaultEntry on a static grub.cfg) end to end: a real dbus-daemon, a real
ostreewatchd, the real libostree reordering deployments, `ostree admin status` as the oracle.

Sysroots are written by ostree 2022.7 (this host, tests/fixtures/sysroots.py) and by ostree 2025.2 (the
trixie tree, tests/fixtures/trees.py). Every sysroot sits on a tmpfs of its own: the helper runs as real
root here, and ostree's freeze of /boot's filesystem must never reach the machine's root filesystem.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ostreewatch import service, state
from ostreewatch.client import Client
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures import trees
from tests.fixtures.bootwrite import GRUB_CFG_STATIC, wait_signal
from tests.fixtures.ostree_oracles import admin_status, entry_booting
from tests.fixtures.sysroots import OstreeSysroot, parse_admin_status
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = (BUS_NAME, OBJECT_PATH, INTERFACE)
WAIT = 30.0
DAEMON_ENV = {"OSTREE_SYSROOT_DEBUG": "mutable-deployments"}
HELPER = ["/usr/bin/python3", "-m", "ostreewatch._deployhelper"]


class TreeSysroot(OstreeSysroot):
    """A sysroot written by the ostree of a cached newer Debian tree (same builder API)."""

    def __init__(self, base: Path, tree: str) -> None:
        super().__init__(base)
        self.tree = tree

    def run(self, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
        base = str(self.base)
        return trees.run_in_tree(self.tree, ["ostree", *args], binds={base: base}, check=check)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own for one sysroot."""
    with trees.own_tmpfs(tmp_path / "fs") as path:
        yield Path(path)


def static_host(sr: OstreeSysroot) -> tuple[OstreeSysroot, str]:
    """Three deployments of OS "test", a bootupd-style static grub.cfg and its grubenv (greenboot's
    boot_success, and a saved_entry this grub.cfg never reads); returns the grubenv path."""
    sr.build(3, osname="test")
    env = sr.write_grub(cfg=GRUB_CFG_STATIC)
    first = sorted(os.listdir(sr.entries_dir()))[0][: -len(".conf")]
    subprocess.run(["grub-editenv", env, "set", "boot_success=1", f"saved_entry={first}"], check=True)
    return sr, env


def helper_wrapper(tmp_path: Path, tree: str, base: str) -> str:
    """An OSTREEWATCH_DEPLOY_PYTHON that runs the helper with TREE's python3 and libostree, BASE bound in."""
    path = tmp_path / f"python-{tree}"
    path.write_text(f"""#!{sys.executable}
import sys
sys.path.insert(0, {REPO!r})
from tests.fixtures import trees
assert sys.argv[1:] == ["-m", "ostreewatch._deployhelper"], sys.argv
p = trees.run_in_tree({tree!r}, ["python3", "-m", "ostreewatch._deployhelper"],
                      binds={{{REPO!r}: {REPO!r}, {base!r}: {base!r}}}, env={{"PYTHONPATH": {REPO!r}}},
                      passthrough=True, check=False)
sys.exit(p.returncode)
""")
    path.chmod(0o755)
    return str(path)


def call(d: Any, method: str, arg: str) -> subprocess.CompletedProcess:
    """dbus-send prints the error name and message (busctl only the message)."""
    return subprocess.run(
        [
            "dbus-send",
            f"--bus={d.address}",
            "--print-reply",
            f"--dest={DEST[0]}",
            DEST[1],
            f"{DEST[2]}.{method}",
            f"string:{arg}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def set_default_over_the_bus(d: Any, method: str, arg: str) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Call METHOD(ARG) with busctl while subscribed; (its reply, the signals up to DefaultDeployment's change)."""
    reply: list[str] = []

    def action() -> None:
        r = d.busctl("call", *DEST, method, "s", arg, timeout=120)
        assert r.returncode == 0, r.stderr
        reply.append(r.stdout.strip())

    seen = asyncio.run(
        wait_signal(d.address, action, lambda n, a: n == "PropertiesChanged" and "DefaultDeployment" in a["changed"])
    )
    return reply[0], seen


def first_default_change(seen: list[tuple[str, dict[str, Any]]]) -> str:
    return next(
        a["changed"]["DefaultDeployment"]
        for n, a in seen
        if n == "PropertiesChanged" and "DefaultDeployment" in a["changed"]
    )


def check_reorder(sr: OstreeSysroot, d: Any, env: str, how: str) -> None:
    """SetDefaultDeployment, SetDefaultEntry and the CLI on one static-grub host, checked against ostree."""
    grubenv_before = read(env)
    before = admin_status(sr)
    second = before[1]
    assert d.get_property("DefaultDeployment") == before[0].id

    # 1. SetDefaultDeployment of the second deployment, over the bus
    reply, seen = set_default_over_the_bus(d, "SetDefaultDeployment", second.id)
    after = admin_status(sr)
    assert [x.id for x in after] == [second.id, before[0].id, before[2].id], how
    assert first_default_change(seen) == second.id  # the first published change already has it
    assert d.get_property("DefaultDeployment") == second.id
    entry = entry_booting(sr.path, after[0])
    assert reply == f's "{entry}"'
    assert d.get_property("DefaultEntry") == entry  # a static grub.cfg boots the first entry
    assert read(env) == grubenv_before  # grub never reads saved_entry here: left alone

    # 2. SetDefaultEntry of the entry that boots the old default: reorders the same way (static grub.cfg)
    old_entry = entry_booting(sr.path, after[1])
    reply, seen = set_default_over_the_bus(d, "SetDefaultEntry", old_entry)
    assert reply == ""
    again = admin_status(sr)
    assert [x.id for x in again] == [before[0].id, second.id, before[2].id], how
    assert first_default_change(seen) == before[0].id
    assert read(env) == grubenv_before

    # 3. the CLI prints the entry that now boots the third deployment
    third = again[2]
    r = subprocess.run(
        [sys.executable, "-m", "ostreewatch.cli", "set-default", "--deployment", third.id, "--bus", d.address],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    final = admin_status(sr)
    assert final[0].id == third.id
    assert r.stdout.strip() == entry_booting(sr.path, final[0])
    assert d.get_property("DefaultDeployment") == third.id

    # 4. the already-default one: nothing written, its entry returned
    loader = os.readlink(os.path.join(sr.path, "boot/loader"))
    r = call(d, "SetDefaultDeployment", third.id)
    assert r.returncode == 0, r.stderr
    assert f'string "{entry_booting(sr.path, final[0])}"' in r.stdout
    assert os.readlink(os.path.join(sr.path, "boot/loader")) == loader

    # 5. named errors, nothing written
    for bad, name in (
        (third.id[:-1] + "9", "NoSuchDeployment"),
        ("not-a-deployment", "InvalidArgs"),
        ("", "InvalidArgs"),
    ):
        r = call(d, "SetDefaultDeployment", bad)
        assert r.returncode != 0 and f"Error.{name}" in r.stderr, r.stderr
    assert [x.id for x in admin_status(sr)] == [x.id for x in final]
    assert os.readlink(os.path.join(sr.path, "boot/loader")) == loader
    assert read(env) == grubenv_before


def test_set_default_deployment_ostree_2022(make_bus: Any, daemon_factory: Any, fs: Path) -> None:
    sr, env = static_host(OstreeSysroot(fs))
    assert sorted(os.listdir(sr.entries_dir())) == ["ostree-1-test.conf", "ostree-2-test.conf", "ostree-3-test.conf"]
    bus = make_bus()
    d = daemon_factory(bus, sr.path, env=DAEMON_ENV)
    d.wait_name(WAIT)
    check_reorder(sr, d, env, "ostree 2022.7")


def test_set_default_deployment_ostree_2025(make_bus: Any, daemon_factory: Any, fs: Path, tmp_path: Path) -> None:
    sr, env = static_host(TreeSysroot(fs, trees.TRIXIE))
    assert trees.ostree_version(trees.TRIXIE).startswith("2025.")
    # ostree >= 2024.5 names entries ostree-N.conf: this sysroot really is the newer ostree's
    assert sorted(os.listdir(sr.entries_dir())) == ["ostree-1.conf", "ostree-2.conf", "ostree-3.conf"]
    bus = make_bus()
    d = daemon_factory(
        bus, sr.path, env=dict(DAEMON_ENV, OSTREEWATCH_DEPLOY_PYTHON=helper_wrapper(tmp_path, trees.TRIXIE, str(fs)))
    )
    d.wait_name(WAIT)
    check_reorder(sr, d, env, "ostree 2025.2")


def test_busy_when_ostree_holds_the_lock(make_bus: Any, daemon_factory: Any, fs: Path) -> None:
    sr, env = static_host(OstreeSysroot(fs))
    before = [x.id for x in admin_status(sr)]
    bus = make_bus()
    d = daemon_factory(bus, sr.path, env=DAEMON_ENV)
    d.wait_name(WAIT)
    # libostree's own lock (an OFD lock on ostree/lock), held by a python process through libostree
    holder = subprocess.Popen(
        [
            "/usr/bin/python3",
            "-c",
            (
                "import gi, sys; gi.require_version('OSTree', '1.0'); from gi.repository import OSTree, Gio\n"
                f"s = OSTree.Sysroot.new(Gio.File.new_for_path({sr.path!r})); s.lock()\n"
                "print('locked', flush=True); sys.stdin.read()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = call(d, "SetDefaultDeployment", before[1])
        assert r.returncode != 0 and "org.ostreewatch1.Error.Busy" in r.stderr, r.stderr
    finally:
        holder.communicate("", timeout=30)
    assert [x.id for x in admin_status(sr)] == before
    r = call(d, "SetDefaultDeployment", before[1])
    assert r.returncode == 0, r.stderr


def test_generated_grub_saved_entry_follows_the_deployment(make_bus: Any, daemon_factory: Any, fs: Path) -> None:
    """Where grub.cfg reads saved_entry and grubenv sets it, the reorder rewrites it to the new entry of the
    requested deployment (ostree renumbered the entries); without it grub would keep booting the old one."""
    sr = OstreeSysroot(fs)
    sr.build(3, osname="test")
    env = sr.write_grub()  # grub2-mkconfig style: reads saved_entry
    bus = make_bus()
    d = daemon_factory(bus, sr.path, env=DAEMON_ENV)
    d.wait_name(WAIT)
    before = admin_status(sr)
    pinned = entry_booting(sr.path, before[1])  # the default: saved_entry names the second deployment's entry
    reply, seen = set_default_over_the_bus(d, "SetDefaultEntry", pinned)  # grubenv saved_entry
    assert first_default_change(seen) == before[1].id
    reply, _ = set_default_over_the_bus(d, "SetDefaultDeployment", before[2].id)
    after = admin_status(sr)
    assert after[0].id == before[2].id
    new_entry = entry_booting(sr.path, after[0])
    assert reply == f's "{new_entry}"'
    listed = dict(
        line.split("=", 1)
        for line in subprocess.run(
            ["grub-editenv", env, "list"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    )
    assert listed["saved_entry"] == new_entry
    assert listed["ostreewatch_saved_deployment"] == before[2].id
    assert d.get_property("DefaultEntry") == new_entry


KILL_POINTS = 40


def test_sigkill_of_the_helper_leaves_ostree_consistent(make_bus: Any, daemon_factory: Any, fs: Path) -> None:
    """SIGKILL the reorder helper at many points of its write (tmpfs sysroot): `ostree admin status` reads
    the sysroot in one of the two orders, and the daemon's published state equals a fresh offline read."""
    sr, env = static_host(OstreeSysroot(fs))
    bus = make_bus()
    d = daemon_factory(bus, sr.path, env=DAEMON_ENV)
    d.wait_name(WAIT)
    paths = state.Paths(
        sysroot=sr.path,
        mountinfo=f"/proc/{d.pid}/mountinfo",
        cmdline=os.path.join(d.tmp, "cmdline"),
        run=os.path.join(d.tmp, "run"),
    )
    helper_env = dict(os.environ, PYTHONPATH=REPO, OSTREEWATCH_DEPLOYHELPER_TRACE="1", **DAEMON_ENV)
    outcomes: set[bool] = set()

    def kill_after(point: int, delay: float) -> None:
        order = [x.id for x in admin_status(sr)]
        swapped = [order[1], order[0]] + order[2:]
        proc = subprocess.Popen(
            HELPER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=helper_env, cwd="/"
        )
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.write(json.dumps({"sysroot": sr.path, "deployment": order[1]}).encode())
        proc.stdin.close()
        assert proc.stderr.readline() == b"locked\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close() if proc.stdout else None
        proc.stderr.close()
        status = sr.admin("status", check=False)
        assert status.returncode == 0, status.stderr
        now = [x.id for x in parse_admin_status(status.stdout)]
        assert now in (order, swapped), (point, now)
        outcomes.add(now == swapped)
        # The published state after a Reload equals what a fresh read of the same files says.
        r = d.busctl("call", *DEST, "Reload")
        assert r.returncode == 0, r.stderr
        published = asyncio.run(_get_all(d.address))
        offline = service.unwrap(service.snapshot_values(state.read_snapshot(paths)))
        for name in ("Deployments", "BootEntries", "DefaultDeployment", "DefaultEntry", "Problems"):
            assert published[name] == offline[name], (point, name)

    # Spread the kills over the write (which takes some ms): 0.25 ms steps from the moment it holds the lock.
    for point in range(KILL_POINTS):
        kill_after(point, point * 0.00025)
    # On a loaded machine the write may outlast every step above (or finish before the first): go on
    # until a kill has landed on each side of the swap, longer delays first missing, then none.
    delay, point = 0.005, KILL_POINTS
    while True not in outcomes and delay < 10:
        kill_after(point, delay)
        delay, point = delay * 2, point + 1
    while False not in outcomes and point < 4 * KILL_POINTS:
        kill_after(point, 0)
        point += 1
    assert outcomes == {False, True}  # some kills came before the swap, some after


async def _get_all(address: str) -> dict[str, Any]:
    client = await Client.connect(address)
    try:
        return await client.get_all()
    finally:
        client.close()


# The daemon in its own mount namespace where the whole sysroot is a read-only bind mount (as /sysroot and
# /boot on a booted Fedora CoreOS host): the helper remounts them read-write in a namespace of its own.
RO_PREFIX = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def test_read_only_sysroot(make_bus: Any, daemon_factory: Any, fs: Path) -> None:
    sr, env = static_host(OstreeSysroot(fs))
    before = admin_status(sr)
    bus = make_bus()
    d = daemon_factory(
        bus,
        sr.path,
        env=DAEMON_ENV,
        prefix=[*PRIVATE_MOUNT_NS, "sh", "-c", RO_PREFIX, sr.path],
    )
    d.wait_name(WAIT)

    def options() -> str:
        with open(f"/proc/{d.pid}/mountinfo") as f:
            return next(line for line in f if line.split()[4] == sr.path).split()[5]

    assert options().startswith("ro")
    reply, seen = set_default_over_the_bus(d, "SetDefaultDeployment", before[1].id)
    after = admin_status(sr)
    assert after[0].id == before[1].id
    assert reply == f's "{entry_booting(sr.path, after[0])}"'
    assert options().startswith("ro")  # the daemon's view stays read-only


def test_staged_deployment_refused_before_any_write(tmp_path: Path) -> None:
    """A staged deployment is written first by ostree-finalize-staged at shutdown: asking for it (or
    reordering around it) is NotSupported, decided from the published state before the helper runs."""
    from ostreewatch import errors, model
    from ostreewatch.bootwrite import BootWriter
    from tests.fixtures.bootwrite import RecordingJournal, make_paths

    staged = model.Deployment(
        id="fedora-" + "a" * 64 + ".0",
        osname="fedora",
        checksum="a" * 64,
        serial=0,
        index=-1,
        path="/ostree/deploy/fedora/deploy/" + "a" * 64 + ".0",
        staged=True,
    )
    snap = model.Snapshot(Bootloader="none", StagedDeployment=staged.id, Deployments=(staged,))
    journal = RecordingJournal()
    # A sysroot that does not exist: had the helper run, it would have failed with WriteFailed instead.
    writer = BootWriter(make_paths(str(tmp_path / "absent")), journal)
    with pytest.raises(errors.NotSupported, match="staged"):
        asyncio.run(writer.set_deployment(staged.id, model.Caller(uid=0, pid=1, bus_name=":1.1"), snap))
    # refused after authorization: "failed" (the audit keeps "refused" for authorization refused)
    assert [(r["result"], r["error"]) for r in journal.records] == [("failed", errors.NotSupported.dbus_name)]
