"""The logind bridge (ostreewatch/rebootentry.py, docs/logind.md) on ostree-built sysroots.

Oracles: systemd's own boot loader spec reader (`bootctl --esp-path=TREE list --json`, which
reads a tree as logind reads /run/boot-loader-entries), grub-editenv for the one-shot write,
and the real grub.cfg kinds (grub2-mkconfig's reads next_entry, bootupd's static one does not).
logind itself, as PID 1's service in a booted tree, is tests/test_logind_nspawn.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ostreewatch import rebootentry, state
from tests.fixtures import grub_configs
from tests.fixtures.fleet_servers import wait_until
from tests.fixtures.sysroots import OstreeSysroot
from tests.fixtures.units import parse_unit

ROOT = Path(__file__).resolve().parent.parent
LOGIND = ROOT / "contrib" / "logind"
DAEMON = [sys.executable, "-m", "ostreewatch.daemon"]


@pytest.fixture
def runtime_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ow-bridge-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def bootctl_list(tree: str) -> list[dict[str, Any]]:
    """systemd's reading of a boot loader entries tree (the ESP checks relaxed; a mount root, as it wants)."""
    real = os.path.realpath(tree)
    r = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount --bind "$1" "$1" && exec bootctl --esp-path="$1" --no-variables list --no-pager --json=short',
            "sh",
            real,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SYSTEMD_RELAX_ESP_CHECKS="1"),
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def grubenv(sr: OstreeSysroot) -> dict[str, str]:
    r = subprocess.run(
        ["grub-editenv", os.path.join(sr.path, "boot/grub2/grubenv"), "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


# --- logind.env: the variable only where GRUB reads next_entry ----------------------------------


def test_logind_env_follows_what_grub_cfg_reads(sysroot_3: OstreeSysroot, runtime_dir: str) -> None:
    paths = sysroot_3.paths()
    assert rebootentry.bridge_enabled(paths.sysroot, state.read_snapshot(paths)) in (None, False)
    sysroot_3.write_grub()  # grub2-mkconfig's 00_header: next_entry, then saved_entry
    snap = state.read_snapshot(paths)
    assert snap.Bootloader == "grub2"
    assert rebootentry.bridge_enabled(paths.sysroot, snap) is True
    said = rebootentry.prepare_logind(paths, runtime_dir)
    assert "=1" in said
    assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=1" in Path(runtime_dir, "logind.env").read_text().splitlines()
    link = Path(paths.run, "boot-loader-entries")
    assert os.readlink(link) == os.path.join(runtime_dir, "boot-loader-entries")
    # bootupd's static config never reads next_entry: logind must answer "na", so the variable is 0.
    sysroot_3.write_grub(grub_configs.bootupd_static())
    snap = state.read_snapshot(paths)
    assert rebootentry.bridge_enabled(paths.sysroot, snap) is False
    rebootentry.prepare_logind(paths, runtime_dir)
    assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=0" in Path(runtime_dir, "logind.env").read_text().splitlines()
    assert not link.is_symlink()  # no entries offered where none can be chosen


def test_logind_env_is_silent_off_grub() -> None:
    text = rebootentry.render_logind_env(None)
    assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY" not in "".join(
        line for line in text.splitlines() if not line.startswith("#")
    )


# --- the entries tree, in step with the published entries ----------------------------------------


def test_daemon_keeps_the_entries_in_menu_order_and_in_step(
    system_bus: Any, sysroot_3: OstreeSysroot, runtime_dir: str, daemon_factory: Any
) -> None:
    sysroot_3.write_grub()
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--runtime-dir", runtime_dir])
    d.wait_name()
    tree = os.path.join(runtime_dir, "boot-loader-entries")
    wait_until(lambda: os.path.isdir(os.path.join(tree, "loader", "entries")), 30, "the entries tree")
    published = [e["id"]["data"] for e in d.get_property("BootEntries")]
    listed = bootctl_list(tree)
    # systemd's order (sort-key) is GRUB's menu order, with the ids the daemon publishes.
    assert [e["id"] for e in listed] == [f"{i}.conf" for i in published]
    snap = state.read_snapshot(sysroot_3.paths())
    for item, entry in zip(listed, snap.BootEntries):
        assert item["title"] == entry.title and item["linux"] == entry.linux
        assert item["options"] == entry.options
        # The kernel is reachable below the tree, as logind's doc asks (through a symlink to /boot).
        assert os.path.isfile(os.path.join(tree, entry.linux.lstrip("/")))
    # A new entry appears in the tree once published; the old tree is gone.
    with open(os.path.join(sysroot_3.entries_dir(), "hand.conf"), "w") as f:
        f.write("title Hand\nversion 9\nlinux /vmlinuz-hand\n")
    wait_until(
        lambda: os.path.exists(os.path.join(tree, "loader", "entries", "hand.conf")), 30, "hand.conf in the tree"
    )
    assert any(e["id"] == "hand.conf" for e in bootctl_list(tree))
    # The tree before stays for a reader that resolved the link just before the swap; no older one.
    assert len([n for n in os.listdir(runtime_dir) if n.startswith(".ble.")]) <= 2
    # The static config: logind.env says 0 and the tree goes.
    sysroot_3.write_grub(grub_configs.bootupd_static())
    d.busctl("call", "org.ostreewatch1", "/org/ostreewatch1", "org.ostreewatch1.Manager", "Reload")
    wait_until(
        lambda: "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=0" in Path(runtime_dir, "logind.env").read_text(),
        30,
        "logind.env 0",
    )
    wait_until(lambda: not os.path.lexists(tree), 30, "the tree removed")
    assert d.stop() == 0
    assert sorted(os.listdir(runtime_dir)) == []  # a clean stop leaves nothing behind


# --- at shutdown: logind's request becomes next_entry, audited, through SetNextEntry's path ------


def apply(sr: OstreeSysroot, *extra: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    p = sr.paths()
    return subprocess.run(
        [*prefix, *DAEMON, "--sysroot", p.sysroot, "--mountinfo", p.mountinfo, "--cmdline", p.cmdline, "--run", p.run]
        + ["--apply-reboot-entry", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


@pytest.mark.parametrize("name", ["reboot-to-boot-loader-entry", "reboot-boot-to-loader-entry"])
def test_apply_writes_next_entry_once(sysroot_3: OstreeSysroot, name: str) -> None:
    sysroot_3.write_grub()
    run_systemd = Path(sysroot_3.paths().run, "systemd")
    run_systemd.mkdir()
    # What `systemctl reboot --boot-loader-entry=` passes: an id as bootctl lists it (ID.conf).
    (run_systemd / name).write_text("ostree-2-fedora.conf")
    r = apply(sysroot_3)
    assert r.returncode == 0, r.stderr
    assert "ostree-2-fedora" in r.stderr and "systemd-logind" in r.stderr
    env = grubenv(sysroot_3)
    assert env.get("next_entry") == "ostree-2-fedora"
    assert "saved_entry" not in env  # the default is untouched
    assert not (run_systemd / name).exists()  # consumed: a second stop writes nothing
    r = apply(sysroot_3)
    assert r.returncode == 0 and "no boot loader entry was requested" in r.stderr


def test_apply_refuses_an_unknown_entry_and_a_staged_deployment(sysroot_3: OstreeSysroot, journald: Any) -> None:
    from ostreewatch import errors, journal
    from tests.fixtures.oracles import glib_serialize

    sysroot_3.write_grub()
    paths = sysroot_3.paths()
    request = Path(paths.run, "systemd", "reboot-to-boot-loader-entry")
    request.parent.mkdir()
    request.write_text("no-such-entry")
    r = apply(sysroot_3, prefix=tuple(journald.prefix()))
    assert r.returncode == 1 and "no-such-entry" in r.stderr, r.stderr
    assert "next_entry" not in grubenv(sysroot_3)
    # A staged deployment: ostree renumbers the entries at this shutdown; nothing is written.
    csum = "ab" * 32
    d = Path(sysroot_3.path, "ostree", "deploy", "fedora", "deploy", f"{csum}.0")
    (d / "usr" / "lib").mkdir(parents=True)
    (d / "usr" / "lib" / "os-release").write_text("VERSION=9\n")
    Path(paths.run, "ostree").mkdir()
    Path(paths.run, "ostree", "staged-deployment").write_bytes(
        glib_serialize(
            "a{sv}", f"{{'target': V('a{{sv}}', {{'name': V('s', '{csum}.0'), 'osname': V('s', 'fedora')}})}}"
        )
    )
    request.write_text("ostree-2-fedora")
    r = apply(sysroot_3, prefix=tuple(journald.prefix()))
    assert r.returncode == 1 and "staged" in r.stderr, r.stderr
    assert "next_entry" not in grubenv(sysroot_3)
    # Both audited through audit.py, as SetNextEntry's calls are: the unknown entry refused before
    # authorization (invalid), the staged deployment after it (failed; logind's request is root's).
    # Both processes have ended: journald.read's sync has their records.
    unknown, staged = journald.read(MESSAGE_ID=journal.MESSAGE_ID_WRITE_ATTEMPT)
    assert (unknown["OSTREEWATCH_RESULT"], unknown["OSTREEWATCH_ENTRY"]) == ("invalid", "no-such-entry")
    assert staged["OSTREEWATCH_RESULT"] == "failed" and staged["OSTREEWATCH_ENTRY"] == "ostree-2-fedora"
    assert staged["OSTREEWATCH_ERROR"] == errors.NotSupported.dbus_name
    assert staged["OSTREEWATCH_AUTHORIZED_BY"] == "uid 0"
    for rec in (unknown, staged):
        assert rec["OSTREEWATCH_METHOD"] == "SetNextEntry" and rec["OSTREEWATCH_CALLER_UNIT"] == rebootentry.LOGIND_UNIT
    fields = {k for k in staged if k.startswith("OSTREEWATCH_")}
    assert fields == {k for k in unknown if k.startswith("OSTREEWATCH_")} | {"OSTREEWATCH_AUTHORIZED_BY"}


def test_entry_ids_match_as_logind_matches() -> None:
    from ostreewatch import model

    snap = model.Snapshot(BootEntries=(model.BootEntry(id="ostree-2", file="ostree-2+1-0.conf"),))
    assert rebootentry.entry_for_request(snap, "ostree-2.conf") == "ostree-2"
    assert rebootentry.entry_for_request(snap, "OSTREE-2") == "ostree-2"
    assert rebootentry.entry_for_request(snap, "other") == "other"


# --- the units ---------------------------------------------------------------------------------


def test_units_order_the_steps_and_verify(tmp_path: Path) -> None:
    unit = parse_unit((LOGIND / "ostreewatch-reboot-entry.service").read_text())
    after = " ".join(unit["Unit"]["After"]).split()
    assert "boot.mount" in after and "ostreewatch.service" in after  # ExecStop before /boot is unmounted
    assert unit["Unit"]["Before"][0] == "systemd-logind.service"  # logind.env before logind reads it
    assert unit["Service"]["ExecStop"] == [
        "/usr/libexec/ostreewatchd --runtime-dir=/run/ostreewatch --apply-reboot-entry"
    ]
    dropin = parse_unit((LOGIND / "ostreewatch.conf.example").read_text())
    assert dropin["Service"]["EnvironmentFile"] == ["-/run/ostreewatch/logind.env"]
    text = (LOGIND / "ostreewatch-reboot-entry.service").read_text()
    # verify wants programs that exist: this Python for the installed path (test_rpm checks that one).
    text = re.sub(r"(?m)^(Exec\w+)=/usr/libexec/ostreewatchd", rf"\1={sys.executable} -m ostreewatch.daemon", text)
    (tmp_path / "ostreewatch-reboot-entry.service").write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "ostreewatch-reboot-entry.service")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.stdout + out.stderr).strip() == "", out.stdout + out.stderr
