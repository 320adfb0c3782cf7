"""SetDefaultEntry / SetNextEntry end to end: a real dbus-daemon, a real ostreewatchd, busctl and the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.bootwrite import (
    bootctl_default,
    copy_sysroot,
    grubenv_list,
    seed_grub,
    seed_loader_conf,
    template,
    wait_signal,
)
from tests.fixtures.published import dbus_send
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = (BUS_NAME, OBJECT_PATH, INTERFACE)
WAIT = 30.0


@pytest.fixture
def grub_sysroot(template: str, tmp_path: Any) -> tuple[str, str]:
    sysroot = copy_sysroot(template, str(tmp_path / "sysroot"))
    os.chmod(str(tmp_path), 0o755)
    return sysroot, seed_grub(sysroot)


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_root_sets_default_and_next_over_the_bus(
    make_bus: Any, daemon_factory: Any, grub_sysroot: tuple[str, str]
) -> None:
    sysroot, env = grub_sysroot
    bus = make_bus()
    d = daemon_factory(bus, sysroot)
    d.wait_name(WAIT)
    assert d.get_property("Bootloader") == "grub2"
    before = d.get_property("DefaultEntry")
    assert before == "ostree-3-test"  # no saved_entry: the first entry

    def call_default() -> None:
        r = d.busctl("call", *DEST, "SetDefaultEntry", "s", "ostree-1-test")
        assert r.returncode == 0, r.stderr

    seen = asyncio.run(
        wait_signal(
            bus.address, call_default, lambda n, a: n == "DefaultEntryChanged" and a["current"] == "ostree-1-test"
        )
    )
    assert ("DefaultEntryChanged", {"previous": "ostree-3-test", "current": "ostree-1-test"}) in seen
    assert grubenv_list(env)["saved_entry"] == "ostree-1-test"
    assert d.get_property("DefaultEntry") == "ostree-1-test"

    # the CLI, through client.Client: set-next, then --clear
    cli = [sys.executable, "-m", "ostreewatch.cli"]
    r = subprocess.run(
        [*cli, "set-next", "ostree-2-test.conf", "--bus", bus.address],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert grubenv_list(env)["next_entry"] == "ostree-2-test"
    r = subprocess.run(
        [*cli, "set-default", "nope", "--bus", bus.address], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert r.returncode == 1 and "org.ostreewatch1.Error.NoSuchEntry" in r.stderr
    r = subprocess.run(
        [*cli, "set-default", "--clear", "--bus", bus.address], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert r.returncode == 0, r.stderr
    assert "saved_entry" not in grubenv_list(env)

    # hostile ids over the bus get the named errors; the file does not move
    now = read(env)
    for bad, name in (
        ("a/b", "InvalidArgs"),
        ("x=y", "InvalidArgs"),
        ("x" * 65536, "InvalidArgs"),
        ("ostree-9-test", "NoSuchEntry"),
    ):
        # dbus-send prints the error name (busctl only the message)
        r = subprocess.run(
            [
                *dbus_send(f"--bus={bus.address}"),
                f"{DEST[2]}.SetDefaultEntry",
                f"string:{bad}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and f"Error.{name}" in r.stderr, r.stderr
    assert read(env) == now


def nobody_call(method: str) -> list[str]:
    """dbus-send prints the D-Bus error name and message (busctl only an errno)."""
    return [
        *dbus_send(),
        f"{DEST[2]}.{method}",
        "string:ostree-1-test",
    ]


def test_nobody_refused_by_the_daemon_not_the_bus(
    make_bus: Any, daemon_factory: Any, grub_sysroot: tuple[str, str]
) -> None:
    # The project's bus policy lets everyone call the Manager's methods; the daemon decides
    # (uid 0 or polkit; no polkitd on this bus) so that the refusal is its own and journaled.
    sysroot, env = grub_sysroot
    before = read(env)
    bus = make_bus()
    d = daemon_factory(bus, sysroot)
    d.wait_name(WAIT)
    for method in ("SetDefaultEntry", "SetNextEntry"):
        r = bus.run_as_nobody(nobody_call(method))
        assert r.returncode != 0
        assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr, r.stderr
        assert "Rejected send message" not in r.stderr, r.stderr
        assert "needs root or the polkit action org.ostreewatch1.set-default" in r.stderr, r.stderr
        assert "uid 65534" in r.stderr, r.stderr
    # busctl as nobody too (it prints only the errno of an AccessDenied)
    r = bus.run_as_nobody(["busctl", "--system", "call", *DEST, "SetDefaultEntry", "s", "ostree-1-test"])
    assert r.returncode != 0 and "Access denied" in r.stderr, r.stderr
    assert read(env) == before
    assert d.alive()


def test_systemd_boot_default_over_the_bus(make_bus: Any, daemon_factory: Any, template: str, tmp_path: Any) -> None:
    sysroot = copy_sysroot(template, str(tmp_path / "sysroot"))
    conf = seed_loader_conf(sysroot)
    bus = make_bus()
    d = daemon_factory(bus, sysroot)
    d.wait_name(WAIT)
    assert d.get_property("Bootloader") == "systemd-boot"
    assert d.get_property("DefaultEntry") == "ostree-3-test"

    def call() -> None:
        r = d.busctl("call", *DEST, "SetDefaultEntry", "s", "ostree-2-test")
        assert r.returncode == 0, r.stderr

    seen = asyncio.run(
        wait_signal(bus.address, call, lambda n, a: n == "DefaultEntryChanged" and a["current"] == "ostree-2-test")
    )
    assert ("DefaultEntryChanged", {"previous": "ostree-3-test", "current": "ostree-2-test"}) in seen
    assert bootctl_default(os.path.join(sysroot, "boot")) == "ostree-2-test.conf"
    assert "timeout 5\n" in read(conf).decode()
    # the one-shot is an EFI variable: NotSupported here, and said why
    r = subprocess.run(
        [
            *dbus_send(f"--bus={bus.address}"),
            f"{DEST[2]}.SetNextEntry",
            "string:ostree-1-test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "org.ostreewatch1.Error.NotSupported" in r.stderr and "LoaderEntryOneShot" in r.stderr, r.stderr


# The daemon in its own mount namespace where /boot is a read-only bind mount (as on Fedora CoreOS).
RO_BOOT_PREFIX = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def test_read_only_boot_daemon(make_bus: Any, daemon_factory: Any, grub_sysroot: tuple[str, str]) -> None:
    sysroot, env = grub_sysroot
    boot = os.path.join(sysroot, "boot")
    bus = make_bus()
    d = daemon_factory(bus, sysroot, prefix=[*PRIVATE_MOUNT_NS, "sh", "-c", RO_BOOT_PREFIX, boot])
    d.wait_name(WAIT)

    def boot_options() -> str:
        with open(f"/proc/{d.pid}/mountinfo") as f:
            line = next(line for line in f if line.split()[4] == boot)
        return line.split()[5]

    assert boot_options().startswith("ro")
    r = d.busctl("call", *DEST, "SetDefaultEntry", "s", "ostree-2-test")
    assert r.returncode == 0, r.stderr
    assert grubenv_list(env)["saved_entry"] == "ostree-2-test"  # written (the host sees the same directory)
    assert boot_options().startswith("ro")  # and the daemon's /boot is still read-only
