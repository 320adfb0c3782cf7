"""Each modern host kind end to end: `ostreewatch status --json` against ostree and the boot loader.

A host is: a sysroot with two deployments written by the ostree of its kind, the boot
loader's configuration, a third commit staged by `ostree admin deploy --stage` while
booted. The boot loader decides which entry boots (GRUB 2.14's grub-emu, or bootctl
for systemd-boot), ostree-prepare-root (2026.4) boots that entry's command line, and
inside the booted host `ostree admin status --json` (2026.4) is the oracle for
booted, staged, pending and rollback.

What is real and what is reconstructed, per host kind:
- fcos-composefs (Fedora CoreOS, RHCOS 4.x with composefs, bootc): real ostree 2026.4
  sysroot and composefs mount, real GRUB 2.14 running bootupd's static grub.cfg
  (reproduced in tests/fixtures/grub_configs.py rig_static, with the parts that
  only find the /boot partition left out); no firmware, no initramfs (see
  tests/test_modern_booted.py for what boot_prepare_root reconstructs).
- rhcos-legacy (RHCOS before composefs): sysroot by ostree 2022.7 with
  `ostree-N-rhcos.conf` names, legacy bind mounts by ostree-prepare-root 2026.4
  (a 2022-era initramfs would have the same mounts: ostree-prepare-root.c's legacy path).
- silverblue-generated (Fedora Atomic desktops with a grub2-mkconfig grub.cfg): ostree
  2026.4 with composefs, GRUB 2.14 on grub_configs.rig_generated (00_header's logic).
  Fedora's grub2 has its own blscfg; upstream's sorts the same way for these names.
- systemd-boot: ostree 2026.4 with composefs; the oracle for order and default is
  bootctl (Debian 12's systemd-boot) on the same boot/ tree. EFI variables
  (LoaderEntryDefault/OneShot) cannot exist here: none is set, as on a host whose
  admin never ran `bootctl set-default`.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from ostreewatch.parse import cmdline
from tests.fixtures import grub_configs as cfgs
from tests.fixtures.modern import ModernSysroot, boot_prepare_root, grub_emu, modern_sysroot
from tests.fixtures.oracles import bootctl_list
from tests.fixtures.sysroots import write_grub

HOSTS: dict[str, dict[str, Any]] = {
    "fcos-composefs": {"version": "2026.4", "osname": "fedora", "composefs": True, "grub": "bootupd-static.cfg"},
    "rhcos-legacy": {"version": "2022.7", "osname": "rhcos", "composefs": False, "grub": "bootupd-static.cfg"},
    "rhcos-2025-legacy": {"version": "2025.2", "osname": "rhcos", "composefs": False, "grub": "bootupd-static.cfg"},
    "silverblue-generated": {"version": "2026.4", "osname": "fedora", "composefs": True, "grub": "generated.cfg"},
    "systemd-boot": {"version": "2026.4", "osname": "fedora", "composefs": True, "grub": None},
}


def _json_id(d: dict[str, Any]) -> str:
    return f"{d['stateroot']}-{d['checksum']}.{d['serial']}"


def ostreewatch_status(sr: ModernSysroot, boot) -> dict[str, Any]:
    """`ostreewatch status --json` (offline) on the captured booted host."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ostreewatch.cli",
            "status",
            "--json",
            "--sysroot",
            sr.path,
            "--mountinfo",
            boot.mountinfo,
            "--cmdline",
            boot.cmdline,
            "--run",
            boot.run,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def boot_host(modern_sysroot, tmp_path, kind: str, stage: bool):
    """Build host KIND, let its boot loader choose, boot that entry, then deploy a third commit while booted.

    STAGE: `ostree admin deploy --stage` (finalized only at shutdown, which never comes
    here); else a plain deploy, which swaps the bootversion under the running host.
    Returns (sysroot, capture, `ostreewatch status --json`, the booted ostree=, the
    boot loader's menu titles).
    """
    host = HOSTS[kind]
    osname = host["osname"]
    sr: ModernSysroot = modern_sysroot(host["version"])
    sr.build(2, osname=osname)
    files = sr.entry_files()
    if host["version"] == "2022.7":
        assert all(f.endswith(f"-{osname}.conf") for f in files), files
    else:
        assert all(not f.endswith(f"-{osname}.conf") for f in files), files

    # The boot loader decides what boots.
    loader_order: list[str]
    if host["grub"]:
        cfg = cfgs.rig_config(host["grub"])
        write_grub(sr.path, cfg, directory="boot/grub2")
        menu = grub_emu(os.path.join(sr.path, "boot"), cfg, grub_dir="grub2")
        assert menu.booted_cmdline
        booted_options = menu.booted_cmdline
        loader_order = menu.titles
    else:
        with open(os.path.join(sr.path, "boot", "loader", "loader.conf"), "w") as f:
            f.write("timeout 3\n")
        entries, default_id = bootctl_list(os.path.join(sr.path, "boot"))
        assert default_id is not None
        chosen = next(e for e in entries if e["id"] == default_id)
        booted_options = chosen["options"]
        loader_order = [e["title"] for e in entries]
    booted_arg = cmdline.get_arg(booted_options, "ostree")
    entry_file = next(f for f in files if booted_arg in pathlib.Path(sr.entries_dir(), f).read_text())

    sr.commit(f"{osname}/x", version="3", kver="6.1.3", osname=osname)
    deploy = f'chroot "$B" ostree admin deploy --retain {"--stage " if stage else ""}--os={osname} {osname}/x'
    boot = boot_prepare_root(
        sr,
        entry_file,
        tmp_path / "boot",
        composefs=host["composefs"],
        osname=osname,
        options=booted_options,
        action=deploy,
    )
    return sr, boot, ostreewatch_status(sr, boot), booted_arg, loader_order


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(HOSTS))
def test_host_kind_with_a_staged_update(modern_sysroot, tmp_path, kind: str) -> None:
    """Booted the boot loader's default; an update staged: all agree, no problem."""
    sr, boot, out, booted_arg, loader_order = boot_host(modern_sysroot, tmp_path, kind, stage=True)
    oracle = boot.status_after
    booted = [_json_id(d) for d in oracle if d["booted"]]
    staged = [_json_id(d) for d in oracle if d["staged"]]
    rollback = [_json_id(d) for d in oracle if d["rollback"]]
    assert len(booted) == len(staged) == len(rollback) == 1
    assert out["BootedDeployment"] == booted[0]
    assert out["StagedDeployment"] == staged[0]
    assert out["RollbackDeployment"] == rollback[0]
    # The entry the boot loader chose is the default, and the one booted.
    by_ostree = {e["ostree"]: e for e in out["BootEntries"]}
    assert out["DefaultEntry"] == by_ostree[booted_arg]["id"]
    assert out["BootedEntry"] == by_ostree[booted_arg]["id"]
    assert out["DefaultDeployment"] == booted[0]
    assert [e["title"] for e in out["BootEntries"]] == loader_order
    assert [d["id"] for d in out["Deployments"]] == [_json_id(d) for d in oracle]
    assert out["Problems"] == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(HOSTS))
def test_host_kind_with_a_pending_update(modern_sysroot, tmp_path, kind: str) -> None:
    """Booted the default; a plain deploy while booted makes a pending update and swaps boot.0/boot.1.

    ostree: the new deployment is pending (the default), the booted one keeps running
    from links that no longer exist. BootedEntry is the booted deployment's entry now;
    a pending update is no problem (issue 9 D and E: fails before the reader change).
    """
    sr, boot, out, booted_arg, _ = boot_host(modern_sysroot, tmp_path, kind, stage=False)
    oracle = boot.status_after
    booted = [_json_id(d) for d in oracle if d["booted"]]
    pending = [_json_id(d) for d in oracle if d["pending"]]
    rollback = [_json_id(d) for d in oracle if d["rollback"]]
    assert len(booted) == len(pending) == len(rollback) == 1
    assert not os.path.exists(sr.path + booted_arg)  # the running kernel's ostree= is gone
    assert out["BootedDeployment"] == booted[0]
    assert out["DefaultDeployment"] == pending[0]
    assert out["RollbackDeployment"] == rollback[0]
    assert out["StagedDeployment"] == ""
    assert [d["id"] for d in out["Deployments"]] == [_json_id(d) for d in oracle]
    booted_entries = [e["id"] for e in out["BootEntries"] if e["deployment"] == booted[0]]
    assert len(booted_entries) == 1
    assert out["BootedEntry"] == booted_entries[0]
    assert out["Problems"] == []
