"""The polkit path with a REAL polkitd: a rule grants uid 65534, another user stays refused.

polkitd (Debian's polkitd 122) reads its actions and rules from fixed paths, so
it runs in a private mount namespace where those two directories are temp
copies holding packaging/org.ostreewatch1.policy and a test rule. It starts as
root and switches to the `polkitd` user itself; the test bus includes Debian's
org.freedesktop.PolicyKit1.conf so that user may own the name. The daemon asks
it over D-Bus (CheckAuthorization for the caller's unique name).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Any, Iterator, Tuple

import pytest

from tests.test_bootwrite_support import copy_sysroot, grubenv_list, seed_grub, template  # noqa: F401 (template: fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICY = os.path.join(REPO, "packaging", "org.ostreewatch1.policy")
POLKITD = "/usr/lib/polkit-1/polkitd"
HOST_ACTIONS = "/usr/share/polkit-1/actions"
POLKIT_BUS_CONF = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
DEST = ("org.ostreewatch1", "/org/ostreewatch1", "org.ostreewatch1.Manager")
WAIT = 30.0

RULE = """
polkit.addRule(function(action, subject) {
    if (action.id == "org.ostreewatch1.set-default" && subject.user == "nobody" &&
        action.lookup("method") != "SetNextEntry") {
        return polkit.Result.YES;
    }
});
"""
BIND_ACTIONS = 'mount --bind "$0" /usr/share/polkit-1/actions && exec "$@"'
BIND_BOTH = ('mount --bind "$0" /usr/share/polkit-1/actions && mount --bind "$1" /etc/polkit-1/rules.d '
             '&& exec /usr/lib/polkit-1/polkitd --no-debug')


@pytest.fixture
def polkit_dirs(tmp_path: Any) -> Tuple[str, str]:
    actions = tmp_path / "actions"
    rules = tmp_path / "rules"
    shutil.copytree(HOST_ACTIONS, str(actions))
    shutil.copy(POLICY, str(actions))
    rules.mkdir()
    (rules / "10-ostreewatch-test.rules").write_text(RULE)
    for d in (tmp_path, actions, rules):
        os.chmod(str(d), 0o755)
    for f in list(actions.iterdir()) + list(rules.iterdir()):
        os.chmod(str(f), 0o644)
    return str(actions), str(rules)


@pytest.fixture
def polkitd(make_bus: Any, polkit_dirs: Tuple[str, str]) -> Iterator[Any]:
    bus = make_bus(relaxed_policy=True, extra_includes=[POLKIT_BUS_CONF])
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address)
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", BIND_BOTH, *polkit_dirs],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            r = subprocess.run(["busctl", "--system", "status", "org.freedesktop.PolicyKit1"], env=env,
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "polkitd exited"
            assert time.monotonic() < deadline, "polkitd never took its name"
            time.sleep(0.05)
        yield bus
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def grub_sysroot(template: str, tmp_path: Any) -> Tuple[str, str]:
    sysroot = copy_sysroot(template, str(tmp_path / "sysroot"))
    return sysroot, seed_grub(sysroot)


def call_as(uid: int, bus: Any, method: str, entry: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "dbus-send", "--system", "--print-reply", f"--dest={DEST[0]}", DEST[1],
                           f"{DEST[2]}.{method}", f"string:{entry}"],
                          env=bus.env(), capture_output=True, text=True, timeout=60)


def test_polkit_rule_grants_nobody_only(polkitd: Any, daemon_factory: Any, grub_sysroot: Tuple[str, str]) -> None:
    bus = polkitd
    sysroot, env = grub_sysroot
    d = daemon_factory(bus, sysroot, env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address})
    d.wait_name(WAIT)
    before = open(env, "rb").read()

    # uid 1 (daemon): polkitd says no (defaults: auth_admin for active sessions only; it has none)
    r = call_as(1, bus, "SetDefaultEntry", "ostree-1-test")
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr and "polkit said no" in r.stderr, r.stderr
    assert "org.ostreewatch1.set-default" in r.stderr
    # nobody, but the rule does not grant SetNextEntry (details reach the rule): refused
    r = call_as(65534, bus, "SetNextEntry", "ostree-1-test")
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr and "polkit said no" in r.stderr, r.stderr
    # Reload is another action, which the rule does not grant
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "dbus-send", "--system",
                        "--print-reply", f"--dest={DEST[0]}", DEST[1], f"{DEST[2]}.Reload"],
                       env=bus.env(), capture_output=True, text=True, timeout=60)
    assert "AccessDenied" in r.stderr and "org.ostreewatch1.reload" in r.stderr, r.stderr
    # hostile ids are refused before polkit is even asked
    r = call_as(65534, bus, "SetDefaultEntry", "../x")
    assert "org.freedesktop.DBus.Error.InvalidArgs" in r.stderr, r.stderr
    assert open(env, "rb").read() == before

    # nobody, SetDefaultEntry: polkitd answers yes
    r = call_as(65534, bus, "SetDefaultEntry", "ostree-1-test")
    assert r.returncode == 0, r.stderr
    assert grubenv_list(env)["saved_entry"] == "ostree-1-test"
