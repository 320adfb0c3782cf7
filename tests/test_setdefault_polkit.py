"""SetDefaultDeployment authorized by a REAL polkitd (tests/fixtures/polkit.py): the rule's
user (uid 65534) reorders the deployments, another unprivileged user (uid 1) is refused and nothing moves."""

from __future__ import annotations

import os
from typing import Any

from tests.fixtures.bootwrite import host
from tests.fixtures.polkit import call_as, polkit_dirs, polkitd
from tests.fixtures.sysroots import OstreeSysroot, parse_admin_status


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
