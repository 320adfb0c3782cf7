"""The test infrastructure itself: the private system bus and its policy, journald, the scripts.

The bus policy tests use a tiny stand-in service (STANDIN below, dbus-next)
that owns org.ostreewatch1 as root and accepts every call: it has no uid
check of its own, so whatever uid 65534 is refused here is refused by the
bus policy alone. It exists only for these policy tests; the real daemon's
tests are elsewhere.
"""

from __future__ import annotations

import configparser
import os
import pathlib
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.bus import NOBODY, PROJECT_POLICY, REPO, BusStartError, SystemBus
from tests.fixtures.journald import Journald

STANDIN = r'''
import asyncio, sys
from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method, dbus_property, signal
from dbus_next import PropertyAccess

class Manager(ServiceInterface):
    """Accepts everything: no uid check, so only the bus policy can refuse."""
    def __init__(self):
        super().__init__("org.ostreewatch1.Manager")
        self.gen = 0
        self.note = ""

    @method()
    def Reload(self) -> "t":
        self.gen += 1
        self.Reloaded(self.gen)
        return self.gen

    @method()
    def SetDefaultEntry(self, entry: "s"):
        self.note = entry

    @method()
    def SetNextEntry(self, entry: "s"):
        self.note = entry

    @signal()
    def Reloaded(self, gen) -> "t":
        return gen

    @dbus_property(access=PropertyAccess.READ)
    def Generation(self) -> "t":
        return self.gen

    # Writable on purpose: proves the policy, not the service, refuses Set.
    @dbus_property()
    def Note(self) -> "s":
        return self.note

    @Note.setter
    def Note(self, value: "s"):
        self.note = value

async def main():
    bus = await MessageBus(bus_address=sys.argv[1]).connect()
    bus.export("/org/ostreewatch1", Manager())
    try:
        await bus.request_name("org.ostreewatch1")
    except Exception as e:
        print("REFUSED", getattr(e, "type", type(e).__name__), e, flush=True)
        sys.exit(3)
    print("OWNED", flush=True)
    await bus.wait_for_disconnect()

asyncio.run(main())
'''


def _start_standin(bus: SystemBus, nobody: bool = False) -> subprocess.Popen:
    argv = [sys.executable, "-c", STANDIN, bus.address]
    if nobody:
        argv = bus.nobody_argv(argv)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/", env=bus.env())


@pytest.fixture
def standin(system_bus: SystemBus) -> Iterator[subprocess.Popen]:
    """The stand-in service owning org.ostreewatch1 as root on the project-policy bus."""
    yield from _standin_on(system_bus)


def _standin_on(bus: SystemBus) -> Iterator[subprocess.Popen]:
    proc = _start_standin(bus)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "OWNED", (
            f"stand-in did not own the name: {line} {proc.stdout.read() if proc.poll() is not None else ''}"
        )
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _rejected(r: subprocess.CompletedProcess) -> bool:
    """True when busctl reports org.freedesktop.DBus.Error.AccessDenied ("Access denied")."""
    return r.returncode != 0 and "Access denied" in r.stderr


# -- the bus --


def test_bus_is_a_system_bus_nobody_can_reach(system_bus: SystemBus) -> None:
    mode = stat.S_IMODE(os.stat(os.path.dirname(system_bus.socket_path)).st_mode)
    assert mode == 0o755
    assert system_bus.address == f"unix:path={system_bus.socket_path}"
    r = system_bus.busctl(
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetConnectionUnixUser",
        "s",
        "org.freedesktop.DBus",
        nobody=True,
    )
    assert r.returncode == 0, r.stderr
    # A system bus refuses to let a non-root caller own an arbitrary name.
    r = system_bus.busctl(
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "RequestName",
        "su",
        "org.example.Any",
        "0",
        nobody=True,
    )
    assert _rejected(r), r


def test_run_as_nobody_is_uid_65534(system_bus: SystemBus) -> None:
    r = system_bus.run_as_nobody(["sh", "-c", 'id -u; id -g; id -G; echo "$DBUS_SYSTEM_BUS_ADDRESS"'])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:4] == [str(NOBODY), str(NOBODY), str(NOBODY), system_bus.address]


def test_bus_restart_keeps_address(system_bus: SystemBus) -> None:
    first = system_bus.pid
    system_bus.stop()
    assert system_bus.pid is None
    assert system_bus.busctl("list").returncode != 0
    system_bus.start()
    second = system_bus.pid
    assert second not in (None, first)
    r = system_bus.busctl("list", "--no-pager")
    assert r.returncode == 0 and "org.freedesktop.DBus" in r.stdout
    # start() on a running bus restarts it: the old process is reaped, not leaked.
    system_bus.start()
    assert system_bus.pid not in (None, second)
    assert not os.path.exists(f"/proc/{second}")
    assert system_bus.busctl("list").returncode == 0


@pytest.mark.parametrize("breakage", ["truncated", "misspelt-attribute", "unknown-element"])
def test_broken_policy_stops_dbus_daemon(tmp_path, make_bus, breakage: str) -> None:
    with open(PROJECT_POLICY) as f:
        text = f.read()
    if breakage == "truncated":
        text = text[: text.index("</policy>")]
    elif breakage == "misspelt-attribute":
        text = text.replace('send_member="GetAll"', 'send_membr="GetAll"')
    else:
        text = text.replace("<deny send_destination", "<forbid send_destination")
    assert text != pathlib.Path(PROJECT_POLICY).read_text()
    broken = tmp_path / "broken.conf"
    broken.write_text(text)
    with pytest.raises(BusStartError):
        make_bus(policy=str(broken))


def test_project_policy_is_accepted_as_is(make_bus) -> None:
    """The same path as above, with the real file: the bus starts."""
    bus = make_bus(policy=PROJECT_POLICY)
    assert bus.pid is not None


# -- the project's policy, against the stand-in --


def test_nobody_cannot_own_the_name(system_bus: SystemBus) -> None:
    proc = _start_standin(system_bus, nobody=True)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, out
    assert "REFUSED" in out and "AccessDenied" in out, out


def test_policy_lets_nobody_read(system_bus: SystemBus, standin) -> None:
    bus = system_bus
    r = bus.busctl("introspect", BUS_NAME, OBJECT_PATH, nobody=True)
    assert r.returncode == 0 and ".Reload" in r.stdout, r.stderr
    r = bus.busctl("call", BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Peer", "Ping", nobody=True)
    assert r.returncode == 0, r.stderr
    r = bus.busctl("get-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Generation", nobody=True)
    assert r.returncode == 0 and r.stdout.strip() == "t 0", (r.stdout, r.stderr)
    r = bus.busctl(
        "call", BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", INTERFACE, nobody=True
    )
    assert r.returncode == 0 and '"Generation" t 0' in r.stdout, (r.stdout, r.stderr)


@pytest.mark.parametrize(
    "call",
    [
        ["call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload"],
        ["call", BUS_NAME, OBJECT_PATH, INTERFACE, "SetDefaultEntry", "s", "ostree-1"],
        ["call", BUS_NAME, OBJECT_PATH, INTERFACE, "SetNextEntry", "s", "ostree-1"],
    ],
    ids=["Reload", "SetDefaultEntry", "SetNextEntry"],
)
def test_policy_lets_nobody_reach_the_methods(system_bus: SystemBus, standin, call: list[str]) -> None:
    # The daemon decides these calls itself (uid 0 or polkit, journaled): the policy must let them through.
    # The stand-in has no check of its own, so nobody's call succeeds here.
    r = system_bus.busctl(*call, nobody=True)
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.parametrize(
    "call",
    [
        ["set-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Note", "s", "x"],
        ["call", BUS_NAME, OBJECT_PATH, "org.example.Other", "Anything"],
    ],
    ids=["Properties.Set", "other-interface"],
)
def test_policy_refuses_nobody_everything_else(system_bus: SystemBus, standin, call: list[str]) -> None:
    r = system_bus.busctl(*call, nobody=True)
    assert _rejected(r), (r.returncode, r.stdout, r.stderr)
    # The stand-in itself accepts the same call from root (so the refusal above is the policy's).
    if call[-1] != "Anything":
        r = system_bus.busctl(*call)
        assert r.returncode == 0, r.stderr
    # Nothing changed: nobody's call never reached the stand-in.
    r = system_bus.busctl("get-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Generation", nobody=True)
    assert r.stdout.strip() == "t 0", r.stdout


def test_refusal_comes_from_dbus_daemon(system_bus: SystemBus, standin) -> None:
    """gdbus shows the error's name and text: dbus-daemon's own policy rejection."""
    r = system_bus.run_as_nobody(
        [
            "gdbus",
            "call",
            "--system",
            "--dest",
            BUS_NAME,
            "--object-path",
            OBJECT_PATH,
            "--method",
            "org.freedesktop.DBus.Properties.Set",
            INTERFACE,
            "Note",
            "<'x'>",
        ]
    )
    assert r.returncode != 0
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr, r.stderr
    assert "Rejected send message" in r.stderr and 'member="Set"' in r.stderr, r.stderr
    assert 'destination="org.ostreewatch1"' in r.stderr, r.stderr


def test_root_may_call_everything(system_bus: SystemBus, standin) -> None:
    r = system_bus.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload")
    assert r.returncode == 0 and r.stdout.strip() == "t 1", r.stderr
    r = system_bus.busctl("set-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Note", "s", "by-root")
    assert r.returncode == 0, r.stderr


def test_nobody_receives_signals(system_bus: SystemBus, standin, tmp_path) -> None:
    out = tmp_path / "monitor.txt"
    with open(out, "w") as f:
        # stdbuf: gdbus monitor's stdout is block-buffered on a file.
        mon = subprocess.Popen(
            system_bus.nobody_argv(["stdbuf", "-oL", "gdbus", "monitor", "--system", "--dest", BUS_NAME]),
            stdout=f,
            stderr=subprocess.STDOUT,
            env=system_bus.env(),
            cwd="/",
        )
    try:
        deadline = time.monotonic() + 20
        # Emit until the subscriber has shown one (its match may not be in place at first).
        while "Reloaded" not in out.read_text():
            assert mon.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            r = system_bus.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload")
            assert r.returncode == 0, r.stderr
            time.sleep(0.2)
        assert f"{INTERFACE}.Reloaded (uint64" in out.read_text()
    finally:
        mon.kill()
        mon.wait()


def test_relaxed_policy_lets_nobody_call(make_bus) -> None:
    bus = make_bus(relaxed_policy=True)
    for _ in _standin_on(bus):
        r = bus.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload", nobody=True)
        assert r.returncode == 0 and r.stdout.strip() == "t 1", r.stderr
        # Still a system bus: nobody may not take the name.
        r = bus.busctl(
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            BUS_NAME,
            "0",
            nobody=True,
        )
        assert _rejected(r), r


# -- the activation file --


def test_activation_file_is_systemd_only(system_bus: SystemBus) -> None:
    path = os.path.join(REPO, "dbus", "org.ostreewatch1.service")
    cp = configparser.ConfigParser()
    cp.optionxform = str  # type: ignore[assignment]
    cp.read(path)
    assert dict(cp["D-BUS Service"]) == {
        "Name": BUS_NAME,
        "Exec": "/bin/false",
        "User": "root",
        "SystemdService": "ostreewatch.service",
    }
    # dbus-daemon reads it: the name becomes activatable. This bus is not
    # systemd-activated, so it runs Exec, /bin/false, which must fail.
    with open(path) as src, open(os.path.join(system_bus.service_dir, "org.ostreewatch1.service"), "w") as dst:
        dst.write(src.read())
    r = system_bus.busctl(
        "call", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListActivatableNames"
    )
    assert r.returncode == 0 and f'"{BUS_NAME}"' in r.stdout, (r.stdout, r.stderr)
    r = system_bus.busctl("call", BUS_NAME, OBJECT_PATH, "org.freedesktop.DBus.Peer", "Ping")
    assert r.returncode != 0 and "Process org.ostreewatch1 exited with status 1" in r.stderr, r.stderr


# -- journald --


def test_journald_records_come_back(journald: Journald) -> None:
    r = subprocess.run(
        [*journald.prefix(), "systemd-cat", "-t", "ostreewatch-test", "echo", "hi"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    recs = journald.wait_for(SYSLOG_IDENTIFIER="ostreewatch-test")
    assert [rec["MESSAGE"] for rec in recs] == ["hi"]
    assert journald.read(SYSLOG_IDENTIFIER="no-such-identifier") == []
    with pytest.raises(AssertionError):
        journald.wait_for(SYSLOG_IDENTIFIER="no-such-identifier", timeout=0.5)


def test_journald_structured_fields_from_python(journald: Journald) -> None:
    """systemd-python (what ostreewatchd uses) reaches this journald through the prefix."""
    code = (
        "from systemd import journal; "
        "journal.send('structured', SYSLOG_IDENTIFIER='ow-infra', "
        "MESSAGE_ID='0123456789abcdef0123456789abcdef', OSTREEWATCH_TEST='a b\\nc')"
    )
    r = subprocess.run([*journald.prefix(), sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    recs = journald.wait_for(lambda rec: rec.get("MESSAGE_ID") == "0123456789abcdef0123456789abcdef")
    assert len(recs) == 1
    assert recs[0]["SYSLOG_IDENTIFIER"] == "ow-infra"
    assert recs[0]["OSTREEWATCH_TEST"] == "a b\nc"
    # logger on the syslog socket lands there too.
    subprocess.run(
        [*journald.prefix(), "logger", "--socket=/run/systemd/journal/dev-log", "-t", "ow-infra-syslog", "via syslog"],
        check=True,
        timeout=30,
    )
    assert journald.wait_for({"SYSLOG_IDENTIFIER": "ow-infra-syslog"})[0]["MESSAGE"] == "via syslog"


def test_journald_is_private_and_cleaned_up() -> None:
    with open("/etc/systemd/journald.conf", "rb") as f:
        host_conf = f.read()
    j = Journald()
    j.start()
    pid, tmp = j.pid, j.tmp
    try:
        with open(f"/proc/{pid}/root/etc/systemd/journald.conf") as f:
            assert "RateLimitBurst=0" in f.read()
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    finally:
        j.close()
    with open("/etc/systemd/journald.conf", "rb") as f:
        assert f.read() == host_conf
    assert (
        not os.path.exists(f"/proc/{pid}/exe") or os.readlink(f"/proc/{pid}/exe") != "/usr/lib/systemd/systemd-journald"
    )
    assert not os.path.exists(tmp)


# -- the scripts (README's commands, CI's entry point) --


def _script_env() -> dict:
    # Skip apt/venv/debootstrap: the suite already runs inside a set-up checkout,
    # and a test must not reinstall the venv it is running from.
    env = dict(os.environ, OSTREEWATCH_SKIP_SETUP="1")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def test_run_tests_fails_when_no_tests_are_collected() -> None:
    r = subprocess.run(
        [
            os.path.join(REPO, "scripts", "run-tests.sh"),
            "tests/test_infra.py",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "no_such_test_anywhere",
        ],
        cwd="/",
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 5, (r.stdout, r.stderr)
    assert "FAILED: pytest collected no tests" in r.stderr
    assert "timing summary" in r.stderr


@pytest.mark.parametrize(
    ("args", "rootfs", "trees"),
    [
        (["tests/test_model.py"], False, False),
        (["tests/test_nspawn.py"], True, False),
        (["tests/test_modern_state.py::test_boot_counting_names_of_ostree_2026"], False, True),
        (["tests/test_setdefault.py"], False, True),  # through tests/fixtures/modern.py
        ([], True, True),  # the whole suite
    ],
)
def test_run_tests_sets_up_only_what_the_files_need(args: list[str], rootfs: bool, trees: bool) -> None:
    r = subprocess.run(
        [os.path.join(REPO, "scripts", "run-tests.sh"), *args, "--co", "-q", "-p", "no:cacheprovider"],
        cwd="/",
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert ("rootfs: not needed" not in r.stderr) == rootfs, r.stderr
    assert ("modern trees: not needed" not in r.stderr) == trees, r.stderr
    assert "debootstrap tree" in r.stderr if rootfs else "debootstrap tree" not in r.stderr


def test_run_tests_unit_needs_only_the_venv() -> None:
    r = subprocess.run(
        [os.path.join(REPO, "scripts", "run-tests.sh"), "-m", "unit", "--co", "-q", "-p", "no:cacheprovider"],
        cwd="/",
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    assert "-m unit: the venv only" in r.stderr
    timings = r.stderr[r.stderr.index("timing summary") :]
    assert "apt packages" not in timings and "debootstrap tree" not in timings and "modern trees" not in timings
    assert "deselected" in r.stdout


def test_ci_run_runs_the_test_command_from_anywhere(tmp_path) -> None:
    """.ci/run from another cwd: the script finds the repo, passes args through, exits 0."""
    ci = os.path.join(REPO, ".ci", "run")
    assert os.access(ci, os.X_OK)
    with open(ci) as f:
        text = f.read()
    assert text.startswith("#!/bin/bash\n") and "set -euo pipefail" in text
    assert "exec scripts/run-tests.sh" in text
    r = subprocess.run(
        [ci, "tests/test_infra.py", "-q", "-p", "no:cacheprovider", "-k", "test_run_as_nobody_is_uid_65534"],
        cwd=str(tmp_path),
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "1 passed" in r.stdout
    # A failing test makes the command fail.
    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails():\n    assert False\n")
    r = subprocess.run(
        [ci, str(failing), "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=str(tmp_path),
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "FAILED: pytest exit code 1" in r.stderr


def test_apt_list_parses_and_names_real_packages() -> None:
    """Every line of apt-packages.txt is one installed Debian package (after run-tests.sh)."""
    r = subprocess.run(
        ["bash", "-c", f"source {REPO}/scripts/setup-test-env.sh && ow_apt_packages"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    names = r.stdout.split()
    assert {"dbus", "systemd", "ostree", "python3-venv", "util-linux"} <= set(names)
    assert all("#" not in n for n in names)
    for name in names:
        q = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], capture_output=True, text=True)
        assert q.stdout == "installed", f"{name}: {q.stdout or q.stderr}"


def test_run_sample_shows_the_daemon_and_cleans_up() -> None:
    r = subprocess.run(
        [os.path.join(REPO, "scripts", "run-sample.sh")],
        cwd="/",
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout
    assert ".Reload " in out and " method " in out and ".BootedDeployment " in out, out
    assert "Access denied" in out, out  # uid 65534's Reload, refused by the policy
    assert "\n$ busctl get-property org.ostreewatch1" in out
    # Everything it started is gone: the bus's pid and its temp dir.
    line = next(ln for ln in out.splitlines() if ln.startswith("bus:"))
    sock = line.split("unix:path=")[1].split()[0]
    pid = int(line.split("dbus-daemon pid ")[1].rstrip(")"))
    assert not os.path.exists(os.path.dirname(sock))
    assert not os.path.exists(f"/proc/{pid}") or "dbus-daemon" not in pathlib.Path(f"/proc/{pid}/comm").read_text()


def test_daemons_die_with_a_killed_test_process() -> None:
    """A test process killed outright (timeout, SIGKILL) leaks no dbus-daemon or journald."""
    code = (
        "import os, signal\n"
        "from tests.fixtures.bus import SystemBus\n"
        "from tests.fixtures.journald import Journald\n"
        "b = SystemBus(); b.start(); j = Journald(); j.start()\n"
        "print(b.pid, j.pid, b.dir, j.tmp, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    bus_pid, jd_pid, *dirs = r.stdout.split()

    def alive(pid: str) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 20
        while alive(bus_pid) or alive(jd_pid):
            assert time.monotonic() < deadline, "dbus-daemon or journald outlived its test process"
            time.sleep(0.05)
    finally:
        for pid in (bus_pid, jd_pid):
            if alive(pid):
                os.kill(int(pid), signal.SIGKILL)
        for d in dirs:
            subprocess.run(["rm", "-rf", d])


def test_readme_has_the_two_commands_and_every_package() -> None:
    """The README's set-up stays true: both commands, and each apt package with its Fedora name."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    # As root in words, no sudo: a fresh Debian 12 machine has none (tests/test_readme.py runs them).
    assert "\nscripts/run-sample.sh" in readme and "\nscripts/run-tests.sh" in readme
    assert "sudo " not in readme
    with open(os.path.join(REPO, "scripts", "apt-packages.txt")) as f:
        lines = [ln for ln in f if ln.split("#")[0].strip()]
    missing = [ln.split()[0] for ln in lines if f"`{ln.split()[0]}`" not in readme]
    assert not missing, f"README.md's package table lacks {missing} (see scripts/apt-packages.txt)"
