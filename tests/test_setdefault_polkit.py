"""SetDefaultDeployment authorized by a REAL polkitd (tests/test_bootwrite_polkit.py's fixtures): the rule's
user (uid 65534) reorders the deployments, another unprivileged user (uid 1) is refused and nothing moves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures import trees
from tests.fixtures.sysroots import OstreeSysroot, parse_admin_status
from tests.fixtures.polkit import polkit_dirs, polkitd  # noqa: F401 (fixtures)
from tests.fixtures.bootwrite import GRUB_CFG_STATIC

DEST = (BUS_NAME, OBJECT_PATH, INTERFACE)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[OstreeSysroot]:
    with trees.own_tmpfs(tmp_path / "fs") as path:
        sr = OstreeSysroot(Path(path))
        sr.build(3, osname="test")
        sr.write_grub(cfg=GRUB_CFG_STATIC)
        yield sr


def call_as(uid: int, bus: Any, deployment: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "dbus-send", "--system", "--print-reply", f"--dest={DEST[0]}", DEST[1],
                           f"{DEST[2]}.SetDefaultDeployment", f"string:{deployment}"],
                          env=bus.env(), capture_output=True, text=True, timeout=120, cwd="/")


def test_polkit_granted_user_reorders_the_other_is_refused(polkitd: Any, daemon_factory: Any,
                                                           host: OstreeSysroot) -> None:
    bus = polkitd
    d = daemon_factory(bus, host.path, env={"OSTREE_SYSROOT_DEBUG": "mutable-deployments"})
    d.wait_name(30)
    order = [x.id for x in parse_admin_status(host.admin("status").stdout)]
    r = call_as(1, bus, order[1])
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr and "polkit said no" in r.stderr, r.stderr
    assert [x.id for x in parse_admin_status(host.admin("status").stdout)] == order
    r = call_as(65534, bus, order[1])
    assert r.returncode == 0, r.stderr
    assert [x.id for x in parse_admin_status(host.admin("status").stdout)] == [order[1], order[0], order[2]]
    assert os.path.basename(r.stdout.split('"')[1]) == d.get_property("DefaultEntry")
