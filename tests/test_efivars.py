"""SetNextEntry on systemd-boot: the EFI variable LoaderEntryOneShot, and NotSupported where nothing reads it.

This machine has no EFI firmware (no /sys/firmware/efi): a plain directory stands in for efivarfs
(/sys/firmware/efi/efivars). It has efivarfs's file names (NAME-VENDORGUID) and content layout, but not
its semantics (the kernel's immutable flag, the firmware storing the value): a fake, said so here.
"""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from ostreewatch import errors, model
from ostreewatch.bootwrite import BootWriter
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.bootwrite import (
    GRUB_CFG_STATIC,
    RecordingJournal,
    copy_sysroot,
    make_paths,
    seed_grub,
    seed_loader_conf,
    snapshot_of,
    template,
)

ROOT = model.Caller(uid=0, pid=1, bus_name=":1.1")
# systemd's Boot Loader Interface vendor GUID (systemd docs/BOOT_LOADER_INTERFACE.md).
ONESHOT = "LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
DEST = (BUS_NAME, OBJECT_PATH, INTERFACE)


@pytest.fixture
def sysroot(template: str, tmp_path: Any) -> str:
    return copy_sysroot(template, str(tmp_path / "sysroot"))


def expected(entry_file: str) -> bytes:
    # efivarfs: a 32-bit little-endian attribute word (NON_VOLATILE 0x1 | BOOTSERVICE_ACCESS 0x2 |
    # RUNTIME_ACCESS 0x4), then the value: systemd-boot reads a NUL-terminated UTF-16LE string.
    return b"\x07\x00\x00\x00" + "".join(c + "\0" for c in entry_file + "\0").encode("latin-1")


def test_oneshot_written_and_cleared(sysroot: str, tmp_path: Any) -> None:
    conf = seed_loader_conf(sysroot)
    before = pathlib.Path(conf).read_bytes()
    efivars = tmp_path / "efivars"  # stands in for efivarfs, see the module docstring
    efivars.mkdir()
    journal = RecordingJournal()
    writer = BootWriter(make_paths(sysroot), journal, efivars=str(efivars))
    snap = snapshot_of(sysroot, "systemd-boot")
    asyncio.run(writer.set_entry("next", "ostree-2-test", ROOT, snap))
    assert (efivars / ONESHOT).read_bytes() == expected("ostree-2-test.conf")
    asyncio.run(writer.set_entry("next", "ostree-1-test.conf", ROOT, snap))
    assert (efivars / ONESHOT).read_bytes() == expected("ostree-1-test.conf")
    assert pathlib.Path(conf).read_bytes() == before  # loader.conf is the default's, not the one-shot's
    asyncio.run(writer.set_entry("next", "", ROOT, snap))
    assert not (efivars / ONESHOT).exists()
    assert [r["result"] for r in journal.records] == ["granted"] * 3
    assert journal.records[0]["file"] == str(efivars / ONESHOT)
    # an unknown entry: nothing written
    with pytest.raises(errors.NoSuchEntry):
        asyncio.run(writer.set_entry("next", "ostree-9-test", ROOT, snap))
    assert not (efivars / ONESHOT).exists()


def test_oneshot_without_efivarfs_names_the_variable(sysroot: str, tmp_path: Any) -> None:
    seed_loader_conf(sysroot)
    writer = BootWriter(make_paths(sysroot), RecordingJournal(), efivars=str(tmp_path / "absent"))
    with pytest.raises(errors.NotSupported, match=ONESHOT + r".*efivarfs\) is not mounted"):
        asyncio.run(writer.set_entry("next", "ostree-2-test", ROOT, snapshot_of(sysroot, "systemd-boot")))


def test_next_on_static_grub_and_none_names_what_is_needed(sysroot: str) -> None:
    env = seed_grub(sysroot, cfg=GRUB_CFG_STATIC)
    before = pathlib.Path(env).read_bytes()
    writer = BootWriter(make_paths(sysroot), RecordingJournal())
    with pytest.raises(errors.NotSupported, match=r"would need a grub.cfg that reads \$\{next_entry\}"):
        asyncio.run(writer.set_entry("next", "ostree-2-test", ROOT, snapshot_of(sysroot, "grub2")))
    with pytest.raises(errors.NotSupported, match=r"grubenv's next_entry.*LoaderEntryOneShot"):
        asyncio.run(writer.set_entry("next", "ostree-2-test", ROOT, snapshot_of(sysroot, "none")))
    assert pathlib.Path(env).read_bytes() == before


def test_oneshot_over_the_bus(make_bus: Any, daemon_factory: Any, sysroot: str, tmp_path: Any) -> None:
    seed_loader_conf(sysroot)
    efivars = tmp_path / "efivars"  # stands in for efivarfs, see the module docstring
    efivars.mkdir()
    bus = make_bus()
    d = daemon_factory(bus, sysroot, env={"OSTREEWATCH_EFIVARS": str(efivars)})
    d.wait_name(30)
    r = d.busctl("call", *DEST, "SetNextEntry", "s", "ostree-3-test")
    assert r.returncode == 0, r.stderr
    assert (efivars / ONESHOT).read_bytes() == expected("ostree-3-test.conf")


def test_read_only_efivars_is_not_supported(sysroot: str, tmp_path: Any) -> None:
    """As under the shipped unit (ProtectKernelTunables= keeps /sys read-only): NotSupported, nothing written."""
    import subprocess

    seed_loader_conf(sysroot)
    efivars = tmp_path / "efivars"  # stands in for efivarfs, mounted read-only (see the module docstring)
    efivars.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "efivars-test", str(efivars)], check=True)
    try:
        journal = RecordingJournal()
        writer = BootWriter(make_paths(sysroot), journal, efivars=str(efivars))
        with pytest.raises(errors.NotSupported, match="read-only"):
            asyncio.run(writer.set_entry("next", "ostree-2-test", ROOT, snapshot_of(sysroot, "systemd-boot")))
        assert list(efivars.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(efivars)], check=False)
