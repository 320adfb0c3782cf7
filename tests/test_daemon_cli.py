"""The daemon-backed CLI: `ostreewatch status` asks ostreewatchd (and says so), `monitor` prints every change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from ostreewatch import __version__
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.daemon_sysroot import bus, entries_dir, sysroot

CLI = [sys.executable, "-c", "import sys; from ostreewatch.cli import main; sys.exit(main())"]


def cli(*args: str, env: Any = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env)


def test_status_uses_the_daemon_and_agrees_with_an_offline_read(
    bus: Any,
    sysroot: str,
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    d = daemon_factory(bus, sysroot)
    d.wait_name()
    human = cli("status", "--bus", bus.address)
    assert human.returncode == 0, human.stderr
    assert "Source: ostreewatchd" in human.stdout + human.stderr
    via_daemon = cli("status", "--json", "--bus", bus.address)
    assert via_daemon.returncode == 0, via_daemon.stderr
    assert "ostreewatchd" in via_daemon.stderr  # the source, kept off stdout so the JSON stays clean
    offline = cli(
        "status",
        "--json",
        "--offline",
        "--sysroot",
        sysroot,
        "--mountinfo",
        d.argv[d.argv.index("--mountinfo") + 1],
        "--cmdline",
        d.argv[d.argv.index("--cmdline") + 1],
        "--run",
        d.argv[d.argv.index("--run") + 1],
    )
    assert offline.returncode == 0, offline.stderr
    got, want = json.loads(via_daemon.stdout), json.loads(offline.stdout)
    # GetAll's Generation and Version, as the daemon publishes them and keeps them in
    # /run/ostreewatch/status.json; a direct read has neither.
    assert got.pop("Generation") == 1 and got.pop("Version") == __version__
    assert "Generation" not in want and "Version" not in want
    # The boot records are the daemon's own (its state directory); an offline read has none.
    assert got.pop("LastBoot")["outcome"] == "first-record" and len(got.pop("BootHistory")) == 1
    assert (want.pop("LastBoot"), want.pop("BootHistory")) == ({}, [])
    # the daemon reads /proc/self/mountinfo of its own process: the mount ids agree, so compare all
    assert got == want


def test_status_without_a_daemon_says_so_and_reads_directly(bus: Any) -> None:
    r = cli("status", "--bus", bus.address)  # nobody owns org.ostreewatch1 on this bus
    assert "no ostreewatchd" in r.stderr
    assert "Source: ostreewatchd" not in r.stdout


def test_monitor_prints_each_change(bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]) -> None:
    d = daemon_factory(bus, sysroot)
    d.wait_name()
    procs = []
    for extra in (["--json"], []):
        p = subprocess.Popen(
            [*CLI, "monitor", "--bus", bus.address, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        procs.append(p)
        assert p.stderr is not None
        assert "Monitoring" in p.stderr.readline()
    try:
        time.sleep(0.2)
        with open(os.path.join(entries_dir(sysroot), "hand.conf"), "w") as f:
            f.write("title Hand\nversion 9\nlinux /vmlinuz-hand\n")
        lines: list[list[str]] = [[], []]

        def read(i: int) -> None:
            out = procs[i].stdout
            assert out is not None
            for line in out:
                lines[i].append(line)
                if "BootEntriesChanged" in line:
                    return

        readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(2)]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        objs = [json.loads(line) for line in lines[0]]
        assert objs[0]["signal"] == "PropertiesChanged"
        assert objs[0]["changed"]["Generation"] == d.get_property("Generation")
        assert "BootEntries" in objs[0]["changed"]
        assert objs[-1] == {"signal": "BootEntriesChanged", "added": ["hand"], "removed": [], "modified": []}
        assert lines[1][0].startswith("generation ")
        assert lines[1][-1].strip() == "BootEntriesChanged added=hand removed= modified="
    finally:
        for p in procs:
            p.terminate()
            assert p.wait(10) == 0
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()


def test_a_second_daemon_says_in_one_line_that_it_waits_for_the_name(
    bus: Any, sysroot: str, daemon_factory: Callable[..., DaemonProcess]
) -> None:
    first = daemon_factory(bus, sysroot)
    first.wait_name()
    second = daemon_factory(bus, sysroot)
    deadline = time.monotonic() + 30  # a wait limit, not a timed assertion
    while "waiting for the name" not in second.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in second.stderr_text().splitlines() if "org.ostreewatch1" in line]
    assert len(lines) == 1 and "is owned by another connection" in lines[0] and "waiting for the name" in lines[0]
    assert "Traceback" not in second.stderr_text() and second.alive()
    # The first one leaves: the second takes the name, says so in one line more, and serves.
    first.stop()
    second.wait_name()
    assert second.get_property("Version") == __version__
    deadline = time.monotonic() + 30  # a wait limit, not a timed assertion
    while "owns the name now" not in second.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in second.stderr_text().splitlines() if "org.ostreewatch1" in line]
    assert len(lines) == 2 and "released it, this daemon owns the name now" in lines[1], lines
    assert "PRIORITY=6" in lines[1]  # info: the stand-by ended as intended
