"""Every write attempt reaches a real systemd-journald with its fields (granted, refused, failed)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from ostreewatch.journal import MESSAGE_ID_WRITE_ATTEMPT
from tests.fixtures.bootwrite import copy_sysroot, seed_grub, template

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside journald's mount namespace, so systemd-python talks to that journald.
ATTEMPTS = r"""
import asyncio, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ostreewatch import errors, model
from ostreewatch.bootwrite import BootWriter
from ostreewatch.journal import Journal
from tests.fixtures.bootwrite import make_paths, snapshot_of
sysroot, env = sys.argv[2], sys.argv[3]
writer = BootWriter(make_paths(sysroot), Journal(identifier="ostreewatch-bwtest"))
snap = snapshot_of(sysroot, "grub2")
root = model.Caller(uid=0, pid=1234, bus_name=":1.7", unit="sshd.service")
def attempt(which, entry, caller=root, snapshot=snap):
    try:
        asyncio.run(writer.set_entry(which, entry, caller, snapshot))
        print("ok")
    except errors.OstreewatchError as e:
        print(e.dbus_name)
attempt("default", "ostree-2-test")                                        # granted
attempt("next", "ostree-1-test", model.Caller(uid=65534, pid=99, bus_name=":1.8"))  # refused: AccessDenied
attempt("default", "evil\nMESSAGE_ID=forged")                              # invalid: InvalidArgs
attempt("default", "ostree-2-test", root, model.Snapshot(Bootloader="none", BootEntries=snap.BootEntries))
data = open(env, "rb").read()
free = len(data) - len(data.rstrip(b"#"))
subprocess.run(["grub-editenv", env, "set", "filler=" + "x" * (free - 12)], check=True)
attempt("next", "ostree-3-test")                                           # failed: overflow
"""


@pytest.fixture
def sysroot(template: str, tmp_path: Any) -> str:
    return copy_sysroot(template, str(tmp_path / "sysroot"))


def test_every_attempt_journaled(journald: Any, sysroot: str) -> None:
    env = seed_grub(sysroot)
    out = subprocess.run(
        [*journald.prefix(), sys.executable, "-c", ATTEMPTS, REPO, sysroot, env],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "ok",
        "org.freedesktop.DBus.Error.AccessDenied",
        "org.freedesktop.DBus.Error.InvalidArgs",
        "org.ostreewatch1.Error.NotSupported",
        "org.ostreewatch1.Error.WriteFailed",
    ]
    records = journald.wait_for(
        lambda r: len(journald.read(MESSAGE_ID=MESSAGE_ID_WRITE_ATTEMPT)) >= 5, MESSAGE_ID=MESSAGE_ID_WRITE_ATTEMPT
    )
    records = [r for r in records if r.get("SYSLOG_IDENTIFIER") == "ostreewatch-bwtest"]
    assert len(records) == 5

    def field(r: dict, name: str) -> str:
        return r.get("OSTREEWATCH_" + name, "")

    granted, denied, invalid, unsupported, failed = records
    snapdep = field(granted, "DEPLOYMENT")
    assert snapdep.startswith("test-") and snapdep.endswith(".1")
    assert [
        field(granted, k)
        for k in (
            "CALLER_UID",
            "CALLER_PID",
            "CALLER_BUS_NAME",
            "CALLER_UNIT",
            "METHOD",
            "ENTRY",
            "PREVIOUS",
            "NEW",
            "BOOTLOADER",
            "RESULT",
        )
    ] == [
        "0",
        "1234",
        ":1.7",
        "sshd.service",
        "SetDefaultEntry",
        "ostree-2-test",
        "",
        "ostree-2-test",
        "grub2",
        "granted",
    ]
    assert field(granted, "ERROR") == ""
    assert [field(denied, k) for k in ("CALLER_UID", "METHOD", "RESULT", "ERROR")] == [
        "65534",
        "SetNextEntry",
        "refused",
        "org.freedesktop.DBus.Error.AccessDenied",
    ]
    assert (field(invalid, "RESULT"), field(invalid, "ERROR")) == ("invalid", "org.freedesktop.DBus.Error.InvalidArgs")
    # the hostile id is recorded escaped: no second line, no forged field
    assert "\n" not in field(invalid, "ENTRY") and invalid["MESSAGE_ID"] == MESSAGE_ID_WRITE_ATTEMPT
    assert (field(unsupported, "BOOTLOADER"), field(unsupported, "RESULT"), field(unsupported, "ERROR")) == (
        "none",
        "failed",  # after authorization
        "org.ostreewatch1.Error.NotSupported",
    )
    assert [field(failed, k) for k in ("METHOD", "ENTRY", "RESULT", "ERROR")] == [
        "SetNextEntry",
        "ostree-3-test",
        "failed",
        "org.ostreewatch1.Error.WriteFailed",
    ]
    assert [r["PRIORITY"] for r in records] == ["5", "4", "4", "4", "4"]  # notice when granted, else warning
