"""ostreewatchd on a CoreOS-style host (bootupd's static grub.cfg): the published default follows
grub.cfg plus grubenv, and changes of either are seen without a Reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tests.fixtures import grub_configs as cfgs
from tests.fixtures.procs import wait
from tests.fixtures.sysroots import OstreeSysroot


def codes(d: Any) -> list:
    return sorted(p["code"]["data"] for p in d.get_property("Problems"))


def test_daemon_publishes_what_grub_boots(sysroot_3: OstreeSysroot, system_bus: Any, daemon_factory: Any) -> None:
    env = sysroot_3.write_grub(cfgs.bootupd_static())
    d = daemon_factory(system_bus, sysroot_3.paths())
    d.wait_name()
    assert d.get_property("DefaultEntry") == "ostree-3-fedora"
    assert d.get_property("DefaultEntrySource") == "first-entry"
    assert d.get_property("BootedRoot") == {}
    # grub2-set-default on this host: GRUB ignores it, and the daemon says so.
    subprocess.run(["grub-editenv", env, "set", "saved_entry=ostree-1-fedora"], check=True)
    wait("saved-entry-ignored", lambda: codes(d) == ["saved-entry-ignored"])
    assert d.get_property("DefaultEntry") == "ostree-3-fedora"
    # The admin makes grub.cfg read it (custom.cfg, sourced by bootupd's 41_custom.cfg): now it is the default.
    Path(env).with_name("custom.cfg").write_text('set default="${saved_entry}"\n')
    wait("the saved entry honoured", lambda: d.get_property("DefaultEntry") == "ostree-1-fedora")
    assert d.get_property("DefaultEntrySource") == "saved_entry"
    assert codes(d) == []
    # The CLI asks the daemon: the new properties are in its JSON.
    p = subprocess.run(
        [sys.executable, "-m", "ostreewatch.cli", "status", "--json", "--bus", d.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=d.env(),
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["DefaultEntrySource"] == "saved_entry" and out["BootedRoot"] == {}
