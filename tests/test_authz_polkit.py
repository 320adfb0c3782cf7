"""authz.py's polkit path with a REAL polkitd: a rule grants uid 65534, another user stays refused
(SetDefaultEntry, SetNextEntry and Reload on a grub sysroot; SetDefaultDeployment reordering a real one).

polkitd (Debian's polkitd 122) reads its actions and rules from fixed paths, so
it runs in a private mount namespace where those two directories are temp
copies holding packaging/org.ostreewatch1.policy and a test rule. It starts as
root and switches to the `polkitd` user itself; the test bus includes Debian's
org.freedesktop.PolicyKit1.conf so that user may own the name. The daemon asks
it over D-Bus (CheckAuthorization for the caller's unique name).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from typing import Any

import pytest

from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.bootwrite import copy_sysroot, grubenv_list, host, seed_grub, template
from tests.fixtures.polkit import call_as, polkit_dirs, polkitd
from tests.fixtures.published import dbus_send, setpriv
from tests.fixtures.sysroots import OstreeSysroot, parse_admin_status

DEST = (BUS_NAME, OBJECT_PATH, INTERFACE)
WAIT = 30.0


@pytest.fixture
def grub_sysroot(template: str, tmp_path: Any) -> tuple[str, str]:
    sysroot = copy_sysroot(template, str(tmp_path / "sysroot"))
    return sysroot, seed_grub(sysroot)


def test_polkit_rule_grants_nobody_only(polkitd: Any, daemon_factory: Any, grub_sysroot: tuple[str, str]) -> None:
    bus = polkitd
    sysroot, env = grub_sysroot
    d = daemon_factory(bus, sysroot, env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
    d.wait_name(WAIT)
    before = pathlib.Path(env).read_bytes()

    # uid 1 (daemon): polkitd says no (defaults: auth_admin for active sessions only; it has none)
    r = call_as(1, bus, "SetDefaultEntry", "ostree-1-test")
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr and "polkit said no" in r.stderr, r.stderr
    assert "org.ostreewatch1.set-default" in r.stderr
    # nobody, but the rule does not grant SetNextEntry (details reach the rule): refused
    r = call_as(65534, bus, "SetNextEntry", "ostree-1-test")
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr and "polkit said no" in r.stderr, r.stderr
    # Reload is another action, which the rule does not grant
    r = subprocess.run(
        [
            *setpriv(65534),
            *dbus_send(),
            f"{DEST[2]}.Reload",
        ],
        env=bus.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "AccessDenied" in r.stderr and "org.ostreewatch1.reload" in r.stderr, r.stderr
    # hostile ids are refused before polkit is even asked
    r = call_as(65534, bus, "SetDefaultEntry", "../x")
    assert "org.freedesktop.DBus.Error.InvalidArgs" in r.stderr, r.stderr
    assert pathlib.Path(env).read_bytes() == before

    # nobody, SetDefaultEntry: polkitd answers yes
    r = call_as(65534, bus, "SetDefaultEntry", "ostree-1-test")
    assert r.returncode == 0, r.stderr
    assert grubenv_list(env)["saved_entry"] == "ostree-1-test"


def test_polkit_granted_user_reorders_the_other_is_refused(
    polkitd: Any, daemon_factory: Any, host: OstreeSysroot
) -> None:
    bus = polkitd
    d = daemon_factory(bus, host.path, env={"OSTREE_SYSROOT_DEBUG": "mutable-deployments"})
    d.wait_name(30)
    order = [x.id for x in parse_admin_status(host.admin("status").stdout)]
    r = call_as(1, bus, "SetDefaultDeployment", order[1], timeout=120)
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr and "polkit said no" in r.stderr, r.stderr
    assert [x.id for x in parse_admin_status(host.admin("status").stdout)] == order
    r = call_as(65534, bus, "SetDefaultDeployment", order[1], timeout=120)
    assert r.returncode == 0, r.stderr
    assert [x.id for x in parse_admin_status(host.admin("status").stdout)] == [order[1], order[0], order[2]]
    assert os.path.basename(r.stdout.split('"')[1]) == d.get_property("DefaultEntry")
