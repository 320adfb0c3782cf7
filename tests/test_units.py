"""units/ostreewatch.service: ordering like ostree-remount, no cycle, hardening score."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.units import UNIT, parse_unit, verify_copy

ROOT = Path(__file__).resolve().parent.parent
HARDENING_DOC = ROOT / "docs" / "hardening.md"
# Best of systemd's own daemons on Debian 12 (systemd-hostnamed 1.5, timedated 2.4);
# ours runs as root with CAP_SYS_ADMIN for the /boot remount, so a little above.
MAX_EXPOSURE = 2.0


def words(values: list[str]) -> list[str]:
    return [w for v in values for w in v.split()]


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def test_ordered_like_ostree_remount(unit: dict[str, dict[str, list[str]]]) -> None:
    u = unit["Unit"]
    assert u["DefaultDependencies"] == ["no"]
    assert u["ConditionKernelCommandLine"] == ["ostree"]
    after = words(u["After"])
    for name in ("-.mount", "var.mount", "systemd-remount-fs.service", "ostree-remount.service"):
        assert name in after, name
    before = set(words(u["Before"]))
    assert "umount.target" in before
    assert words(u["Conflicts"]) == ["umount.target"]
    # Read before what changes the boot's evidence; stopped after what writes at shutdown.
    assert {"ostree-boot-complete.service", "boot-complete.target", "ostree-finalize-staged.service"} <= before
    # Nothing mounted waits for it: local-fs.target (and so every boot) never waits for a Python start.
    assert not {"local-fs.target", "sysinit.target", "basic.target"} & before
    # Never after the bus: the daemon joins it when its socket appears.
    assert not {"dbus.socket", "dbus.service", "basic.target", "sysinit.target"} & set(after)
    assert "Requires" not in u and "Wants" not in u


def test_service_section(unit: dict[str, dict[str, list[str]]]) -> None:
    s = unit["Service"]
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["Restart"] == ["on-failure"]
    assert s["ExecStart"] == ["/usr/libexec/ostreewatchd"]
    assert s["ExecReload"] == ["""/bin/sh -c 'kill -HUP "$MAINPID"'"""]
    # Alone, BusName= implies Type=dbus (ready once the name is on the bus): the units
    # ordered after it would wait for the bus. Activation uses SystemdService=.
    assert "BusName" not in s
    assert unit["Install"]["WantedBy"] == ["local-fs.target"]


def test_hardening_options(unit: dict[str, dict[str, list[str]]]) -> None:
    s = unit["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateNetwork": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_SYS_ADMIN",
        "SystemCallArchitectures": "native",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "mnt",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], key
    filters = words(s["SystemCallFilter"])
    assert "@system-service" in filters and "mount" in filters
    assert "@mount" not in filters  # mount(2) only: no chroot, pivot_root, move_mount
    assert "~@resources" in filters
    assert "/boot" in [w.lstrip("-") for w in words(s["ReadWritePaths"])]
    # Each protection left out says why, in a comment.
    comments = "\n".join(ln for ln in UNIT.read_text().splitlines() if ln.lstrip().startswith("#"))
    for left_out in ("PrivateTmp", "ProtectProc", "ProcSubset", "PrivateUsers", "BusName"):
        assert left_out in comments, left_out
        assert left_out not in s, left_out


def test_verify_has_no_cycle_and_no_warning(tmp_path: Path) -> None:
    out = verify_copy(tmp_path, UNIT.read_text())
    assert "ordering cycle" not in out.lower(), out
    assert "Found" not in out, out
    # verify prints nothing for a clean unit: any line is a warning or an error.
    assert out.strip() == "", out


@pytest.mark.parametrize(
    "bad",
    [
        # Waiting for what it must be read before.
        [("[Unit]", "After=boot-complete.target")],
        # The ordering before local-fs.target this unit left out (issue 21), with PrivateTmp=,
        # which pulls in After=systemd-tmpfiles-setup.service, itself after local-fs.target.
        [("[Unit]", "Before=local-fs.target"), ("[Service]", "PrivateTmp=yes")],
        # The same ordering with a wait for the bus (dbus.socket comes after sysinit.target).
        [("[Unit]", "Before=local-fs.target"), ("[Unit]", "After=dbus.socket")],
    ],
)
def test_verify_sees_a_cycle_when_there_is_one(tmp_path: Path, bad: list[tuple[str, str]]) -> None:
    """The check above can fail: these lines close an ordering cycle."""
    text = UNIT.read_text()
    for section, line in bad:
        text = text.replace(section, f"{section}\n{line}", 1)
    out = verify_copy(tmp_path, text)
    assert "ordering cycle" in out.lower(), out


def exposure(path: Path) -> float:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert m, out
    return float(m.group(1))


def test_security_score_is_low_and_documented() -> None:
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE, score
    doc = HARDENING_DOC.read_text()
    assert f"{score:.1f}" in doc, f"docs/hardening.md must report the measured score {score:.1f}"
