"""The logind bridge with systemd as PID 1 (systemd-nspawn on the cached Debian trees).

Debian 12 (systemd 252): ostreewatch.service and contrib/logind's units installed and enabled
as docs/logind.md says, on a sysroot built by the real ostree: logind's
CanRebootToBootLoaderEntry answers yes, `systemctl reboot --boot-loader-entry=help` lists the
daemon's entries in GRUB's order, and `systemctl reboot --boot-loader-entry=ENTRY` shuts the
container down with next_entry=ENTRY in the grubenv (read on the host with grub-editenv).
With bootupd's static grub.cfg logind answers "na". sid (systemd 262; its tree has no
python3-dbus-next, so the daemon cannot run there): logind 262 given the files the bridge
writes (made on the host by the same code) answers yes, lists them and writes its request
under the name the shutdown step reads. A real reboot of a VM is the VM rig's (not here).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ostreewatch import model, rebootentry, state
from tests.fixtures import grub_configs
from tests.fixtures import nspawn as nspawn_fixture
from tests.fixtures.nspawn import Container, build_sysroot, grubenv_list
from tests.fixtures.trees import SID, tree_root

pytestmark = [pytest.mark.nspawn, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
LOGIND = ROOT / "contrib" / "logind"
LOGIN1 = ["org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.login1.Manager"]


def with_bridge_units(monkeypatch: pytest.MonkeyPatch, extra: dict[Path, str] | None = None) -> None:
    """Add the opt-in units to the container's binds, enabled as docs/logind.md says."""
    original = nspawn_fixture.stage_install

    def stage(stage_dir: Path) -> list[str]:
        options = original(stage_dir)
        dropins = stage_dir / "systemd-logind.service.d"
        dropins.mkdir()
        shutil.copy(LOGIND / "ostreewatch.conf.example", dropins / "ostreewatch.conf")
        # Stands for `systemctl enable` (WantedBy=multi-user.target) without touching the tree's
        # multi-user.target.wants: the unit's own Before=systemd-logind.service orders it.
        (dropins / "zz-test-enable.conf").write_text("[Unit]\nWants=ostreewatch-reboot-entry.service\n")
        # The test installs the package as a bind mount at /opt/ostreewatch (tests/fixtures/nspawn.py):
        # like the program (the unit's RequiresMountsFor=), it must outlive ExecStop=.
        unitd = stage_dir / "ostreewatch-reboot-entry.service.d"
        unitd.mkdir()
        (unitd / "zz-test-package.conf").write_text(
            "[Unit]\nRequiresMountsFor=/opt/ostreewatch/ostreewatch\n"
            "[Service]\nStandardError=journal+console\n"  # what ExecStop= says, in the container's log
        )
        binds = {
            LOGIND / "ostreewatch-reboot-entry.service": "/etc/systemd/system/ostreewatch-reboot-entry.service",
            unitd: "/etc/systemd/system/ostreewatch-reboot-entry.service.d",
            dropins: "/etc/systemd/system/systemd-logind.service.d",
            **(extra or {}),
        }
        return options + [f"--bind-ro={src}:{dst}" for src, dst in binds.items()]

    monkeypatch.setattr(nspawn_fixture, "stage_install", stage)


def login1(c: Container, *args: str) -> str:
    r = c.run(["busctl", "--system", *args], timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def sysroot(tmp_path: Path) -> Iterator[dict[str, Any]]:
    arg = build_sysroot(tmp_path / "sysroot")
    yield {"path": tmp_path / "sysroot", "ostree_arg": arg}


def published_ids(sysroot: Path) -> list[str]:
    return [e.id for e in state.read_snapshot(model.Paths(sysroot=str(sysroot))).BootEntries]


def test_systemd_252_reboot_to_entry_end_to_end(
    tmp_path: Path, sysroot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_bridge_units(monkeypatch)
    ids = published_ids(sysroot["path"])
    assert len(ids) == 2
    target = ids[1]  # the rollback: not the default
    c = Container(tmp_path / "guest", sysroot["path"], [sysroot["ostree_arg"]])
    try:
        c.start()
        s = c.show("ostreewatch-reboot-entry.service", "ActiveState", "Result")
        assert s["ActiveState"] == "active", (s, c.run(["journalctl", "-u", "ostreewatch-reboot-entry"]).stdout)
        # The shipped unit's RuntimeDirectory=: status.json (issue 22 item 2) under a real PID 1,
        # readable by an unprivileged user.
        st = c.run(["stat", "-c", "%a %U", "/run/ostreewatch", "/run/ostreewatch/status.json"]).stdout.split("\n")
        assert st[:2] == ["755 root", "644 root"], st
        doc = c.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", "/run/ostreewatch/status.json"]
        )
        assert doc.returncode == 0 and json.loads(doc.stdout)["Generation"] >= 1, doc
        env = c.run(["cat", "/run/ostreewatch/logind.env"]).stdout
        assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=1" in env.splitlines()
        logind_env = c.run(["sh", "-c", "tr '\\0' '\\n' </proc/$(pidof systemd-logind)/environ"]).stdout
        assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=1" in logind_env.splitlines()  # read at its start
        c.wait_for(
            "the entries tree", lambda: c.run(["test", "-d", "/run/boot-loader-entries/loader/entries"]).returncode == 0
        )
        assert login1(c, "call", *LOGIN1, "CanRebootToBootLoaderEntry") == 's "yes"'
        listed = c.run(["systemctl", "reboot", "--boot-loader-entry=help"], timeout=60)
        assert listed.returncode == 0, listed.stderr
        names = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
        # systemd lists them in its order, which the sort-key makes GRUB's menu order.
        assert [n.removesuffix(".conf") for n in names if n.removesuffix(".conf") in ids] == ids, listed.stdout
        # The reboot itself: logind writes its request (252: the misspelt name), the shutdown
        # stops ostreewatch-reboot-entry.service before /boot goes, its ExecStop= writes next_entry.
        assert "next_entry" not in grubenv_list(sysroot["path"])
        c.run(["systemctl", "reboot", f"--boot-loader-entry={target}"], timeout=60)
        assert c.proc is not None
        c.proc.wait(timeout=120)
    finally:
        c.stop()
    env_after = grubenv_list(sysroot["path"])
    assert env_after.get("next_entry") == target, (env_after, c.log_path.read_text(errors="replace")[-3000:])
    assert "saved_entry" not in env_after  # the default is left alone: one shot


def test_systemd_252_static_grub_cfg_answers_na(
    tmp_path: Path, sysroot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_bridge_units(monkeypatch)
    with open(sysroot["path"] / "boot/grub2/grub.cfg", "w") as f:
        f.write(grub_configs.bootupd_static())
    with Container(tmp_path / "guest", sysroot["path"], [sysroot["ostree_arg"]]) as c:
        assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=0" in c.run(["cat", "/run/ostreewatch/logind.env"]).stdout
        assert login1(c, "call", *LOGIN1, "CanRebootToBootLoaderEntry") == 's "na"'
        r = c.run(["systemctl", "reboot", "--boot-loader-entry=ostree-1-testos"], timeout=60)
        assert r.returncode != 0  # refused before any reboot
    assert "next_entry" not in grubenv_list(sysroot["path"])


def test_systemd_262_logind_reads_the_bridge_files(
    tmp_path: Path, sysroot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files the bridge writes, made on the host by its own code, as the guest sees /boot.
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    runtime.chmod(0o755)
    snap = state.read_snapshot(model.Paths(sysroot=str(sysroot["path"])))
    assert rebootentry.bridge_enabled(str(sysroot["path"]), snap) is True
    rebootentry.write_logind_env(str(runtime), True)
    files, tops = rebootentry.render_tree(snap)
    rebootentry.write_tree(str(runtime), files, tops, "/boot")
    with_bridge_units(monkeypatch, {runtime: "/run/ostreewatch"})
    # A missing tree fails (with the command that builds it), never skips.
    monkeypatch.setattr(nspawn_fixture, "DEBIAN_TREE", Path(tree_root(SID)))
    # systemd 262 refuses cgroup v1 as PID 1; this host has v1: nspawn gives the guest cgroup2.
    monkeypatch.setenv("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
    ids = [e.id for e in snap.BootEntries]
    # No ostree= on init's command line: ostreewatch.service (no python3-dbus-next in sid's tree)
    # and the bridge's unit are skipped by their condition; logind alone is under test.
    with Container(tmp_path / "guest", sysroot["path"], []) as c:
        assert "262" in c.run(["systemctl", "--version"]).stdout.splitlines()[0]
        c.run(["ln", "-s", "/run/ostreewatch/boot-loader-entries", "/run/boot-loader-entries"], check=True)
        assert login1(c, "call", *LOGIN1, "CanRebootToBootLoaderEntry") == 's "yes"'
        listed = c.run(["systemctl", "reboot", "--boot-loader-entry=help"], timeout=60)
        assert listed.returncode == 0, listed.stderr
        names = [line.strip().removesuffix(".conf") for line in listed.stdout.splitlines() if line.strip()]
        assert [n for n in names if n in ids] == ids, listed.stdout
        login1(c, "call", *LOGIN1, "SetRebootToBootLoaderEntry", "s", ids[1])
        request = c.run(["cat", "/run/systemd/reboot-to-boot-loader-entry"])
        assert request.returncode == 0 and request.stdout.strip() == ids[1]  # 262: the right name
        assert c.run(["test", "-e", "/run/systemd/reboot-boot-to-loader-entry"]).returncode != 0
    # What the shutdown step makes of it: tests/test_logind_bridge.py (both names).
    assert os.path.isdir(runtime)
