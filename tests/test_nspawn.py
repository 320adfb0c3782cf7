"""ostreewatch under a real systemd as PID 1: unit, notify, bus policy, activation, journal, catalog.

Boots the cached Debian tree (scripts/setup-test-env.sh makes it) with
systemd-nspawn, the project installed where the RPM puts it, and a sysroot
built by the real `ostree` tool bound as /boot and /ostree (tests/fixtures/nspawn.py).
The tests of the first boot run in file order against one container.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ostreewatch.journal as oj
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.nspawn import Container, build_sysroot, grubenv_list

pytestmark = [pytest.mark.nspawn, pytest.mark.slow, pytest.mark.timeout(240)]

UNIT = "ostreewatch.service"
BUS = [BUS_NAME, OBJECT_PATH]


@pytest.fixture(scope="module")
def sysroot(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("nspawn-sysroot")
    arg = build_sysroot(base / "sysroot")
    return {"path": base / "sysroot", "ostree_arg": arg}


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory, sysroot: dict[str, Any]) -> Iterator[Container]:
    """Booted with ostree=... on init's command line, as on an ostree host."""
    with Container(tmp_path_factory.mktemp("nspawn-ostree"), sysroot["path"], [sysroot["ostree_arg"]]) as c:
        yield c


def busctl_json(c: Container, *args: str) -> Any:
    r = c.run(["busctl", "--json=short", *args], timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def prop(c: Container, name: str) -> Any:
    return busctl_json(c, "get-property", *BUS, INTERFACE, name)["data"]


def unwrap(record: dict[str, Any]) -> dict[str, Any]:
    """busctl's a{sv} JSON ({"key": {"type": .., "data": ..}}) as a plain dict."""
    return {k: v["data"] for k, v in record.items()}


def journal(c: Container, *args: str) -> list[dict[str, Any]]:
    r = c.run(["journalctl", "--no-pager", "-o", "json", *args], timeout=60)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_running_and_ready_through_sd_notify(guest: Container, sysroot: dict[str, Any]) -> None:
    assert guest.boot_state in ("running", "degraded"), guest.boot_state
    s = guest.show(
        UNIT,
        "Type",
        "NotifyAccess",
        "ActiveState",
        "SubState",
        "StatusText",
        "ConditionResult",
        "MainPID",
        "After",
        "UnitFileState",
    )
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    # Type=notify: active only once READY=1 came through sd_notify.
    assert (s["ActiveState"], s["SubState"]) == ("active", "running"), s
    assert s["ConditionResult"] == "yes"
    assert s["UnitFileState"] == "enabled"
    # STATUS= carries the summary the daemon computed from the real sysroot.
    default_entry = prop(guest, "DefaultEntry")
    assert default_entry.startswith("ostree-2"), default_entry
    assert f"default entry {default_entry}" in s["StatusText"], s["StatusText"]
    assert "dbus.socket" not in s["After"].split()
    # WatchdogSec=: systemd records the daemon's first WATCHDOG=1 ping.
    w = guest.show(UNIT, "WatchdogUSec", "WatchdogTimestampMonotonic")
    assert w["WatchdogUSec"] == "3min", w
    assert int(w["WatchdogTimestampMonotonic"]) > 0, w
    status = guest.run(["systemctl", "status", UNIT, "--no-pager"]).stdout
    assert "active (running)" in status


def test_unit_start_time_and_mount_probe(guest: Container) -> None:
    """The unit's own start (fork to READY=1) under real systemd, reported for BENCHMARKS.md (no
    figure is asserted); and the sandboxed daemon can probe PID 1's mount points (ostreewatch/mountprobe.py)."""
    s = guest.show(UNIT, "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic", "MainPID")
    start, ready = int(s["ExecMainStartTimestampMonotonic"]), int(s["ActiveEnterTimestampMonotonic"])
    assert 0 < start < ready, s
    print(f"\nOSTREEWATCH_UNIT_START_MS={(ready - start) / 1000:.1f}")

    def lines() -> list[str]:
        return [str(r.get("MESSAGE", "")) for r in journal(guest, f"_PID={s['MainPID']}")]

    # Without CAP_SYS_PTRACE the unit may not enter PID 1's root: it probes its own namespace.
    # The note is logged once the watches are set, which is after READY=1 (ostreewatch/daemon.py).
    said = guest.wait_for(
        "the mount probe's note",
        lambda: [line for line in lines() if "mount points" in line and "probe" in line],
    )
    assert not any("cannot probe the watched mount points" in line for line in said), said
    assert any("probed in this process's own mount namespace" in line for line in said), said


def test_a_mount_made_by_the_host_on_a_watched_point_is_published(guest: Container) -> None:
    """Made in PID 1's namespace; the sandboxed daemon notices it through its own (slave) namespace's probe."""
    guest.run(["mkdir", "-p", "/sysroot"], check=True)
    guest.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ostreewatch-test", "/sysroot"], check=True)
    try:
        points = guest.wait_for(
            "a published /sysroot mount",
            lambda: [m for m in map(unwrap, prop(guest, "Mounts")) if m["mount_point"] == "/sysroot"],
        )
        assert points[0]["source"] == "ostreewatch-test" and points[0]["fstype"] == "tmpfs"
    finally:
        guest.run(["umount", "/sysroot"])
    guest.wait_for(
        "/sysroot gone from Mounts",
        lambda: not [m for m in map(unwrap, prop(guest, "Mounts")) if m["mount_point"] == "/sysroot"],
    )


def test_bus_reads_the_state(guest: Container, sysroot: dict[str, Any]) -> None:
    deployments = [unwrap(d) for d in prop(guest, "Deployments")]
    assert len(deployments) == 2
    default = [d for d in deployments if d["default"]]
    assert len(default) == 1 and default[0]["version"] == "2"
    entries = [unwrap(e) for e in prop(guest, "BootEntries")]
    assert {e["ostree"] for e in entries} >= {sysroot["ostree_arg"].split("=", 1)[1]}
    assert prop(guest, "Bootloader") in ("none", "grub2", "systemd-boot")


def test_daemon_reads_the_hosts_mount_table(guest: Container) -> None:
    """Mounts come from PID 1's table (/proc/1/mountinfo), not the unit's private namespace."""

    def ids(table: str) -> dict[str, str]:
        out = {}
        for line in table.splitlines():
            fields = line.split()
            out[fields[4]] = fields[0]
        return out

    host = ids(guest.run(["cat", "/proc/1/mountinfo"], check=True).stdout)
    pid = guest.show(UNIT, "MainPID")["MainPID"]
    own = ids(guest.run(["cat", f"/proc/{pid}/mountinfo"], check=True).stdout)
    published = {m["mount_point"]: str(m["mount_id"]) for m in map(unwrap, prop(guest, "Mounts"))}
    assert "/boot" in published and "/" in published, published
    for point, mount_id in published.items():
        assert host.get(point) == mount_id, (point, mount_id, host.get(point))
    # ProtectSystem=strict gave the daemon its own mount namespace, with other ids.
    assert own.get("/boot") != host["/boot"]


def test_reload_method_works_as_root(guest: Container, sysroot: dict[str, Any]) -> None:
    before = prop(guest, "Generation")
    set_version(sysroot["path"], "1", "1.1")
    r = busctl_json(guest, "call", *BUS, INTERFACE, "Reload")
    generation = r["data"][0]
    assert generation > before
    versions = {unwrap(d)["version"] for d in prop(guest, "Deployments")}
    assert "1.1" in versions, versions


def test_systemctl_reload_rescans(guest: Container, sysroot: dict[str, Any]) -> None:
    before = prop(guest, "Generation")
    pid = guest.show(UNIT, "MainPID")["MainPID"]
    set_version(sysroot["path"], "1", "1.2")
    guest.run(["systemctl", "reload", UNIT], check=True)
    guest.wait_for(
        "the rescan after systemctl reload", lambda: "1.2" in {unwrap(d)["version"] for d in prop(guest, "Deployments")}
    )
    assert prop(guest, "Generation") > before
    s = guest.show(UNIT, "MainPID", "ActiveState")
    assert s == {"MainPID": pid, "ActiveState": "active"}, s  # SIGHUP did not kill it
    changed = journal(guest, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_CHANGED}")
    assert any("Deployments" in str(rec.get("OSTREEWATCH_CHANGED")) for rec in changed), changed


def set_version(sysroot: Path, commit_version: str, new: str) -> None:
    """Change VERSION in the os-release of the deployment of commit COMMIT_VERSION (new inode:
    the file is a hard link into the repository)."""
    for osr in sysroot.glob("ostree/deploy/*/deploy/*/usr/lib/os-release"):
        text = osr.read_text()
        if re.search(rf'(?m)^PRETTY_NAME="Test OS {commit_version}"$', text):
            tmp = osr.with_name(".os-release.tmp")
            tmp.write_text(re.sub(r"(?m)^VERSION=.*$", f'VERSION="{new}"', text))
            os.replace(tmp, osr)
            return
    raise AssertionError(f"no deployment of commit {commit_version}")


def test_set_default_entry_through_a_read_only_boot(guest: Container, sysroot: dict[str, Any]) -> None:
    """The write helper (private mount namespace, remount) works inside the unit's sandbox:
    CAP_SYS_ADMIN, mount(2), RestrictNamespaces=mnt, MemoryDenyWriteExecute=yes."""

    def boot_options() -> list[str]:
        table = guest.run(["cat", "/proc/1/mountinfo"], check=True).stdout
        return [ln.split()[5].split(",") for ln in table.splitlines() if ln.split()[4] == "/boot"][0]

    assert "ro" in boot_options()
    assert grubenv_list(sysroot["path"]).get("saved_entry") is None
    target = [unwrap(e)["id"] for e in prop(guest, "BootEntries") if not unwrap(e)["default"]][0]
    r = guest.run(["busctl", "call", *BUS, INTERFACE, "SetDefaultEntry", "s", target], timeout=60)
    assert r.returncode == 0, r.stderr + guest.run(["journalctl", "-u", UNIT, "--no-pager"]).stdout
    assert grubenv_list(sysroot["path"])["saved_entry"] == target
    guest.wait_for("DefaultEntry after the write", lambda: prop(guest, "DefaultEntry") == target)
    assert "ro" in boot_options()  # the host's /boot stayed read-only
    audit = journal(guest, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_WRITE_ATTEMPT}")
    assert audit and audit[-1]["_SYSTEMD_UNIT"] == UNIT


def test_journal_start_record_and_catalog(guest: Container) -> None:
    started = journal(guest, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_STARTED}")
    assert started, guest.run(["journalctl", "-u", UNIT, "--no-pager"]).stdout
    rec = started[0]
    assert rec["_SYSTEMD_UNIT"] == UNIT
    assert rec["MESSAGE_ID"] == oj.MESSAGE_ID_STARTED
    assert rec["SYSLOG_IDENTIFIER"] == "ostreewatch"
    guest.run(["journalctl", "--update-catalog"], check=True)
    text = guest.run(
        ["journalctl", "-x", "--no-pager", "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_STARTED}"], check=True
    ).stdout
    assert "The OSTree boot state watcher started and read the boot state once" in text, text
    assert "Defined-By: ostreewatch" in text
    # @FIELD@ substituted from the record itself.
    assert f"Subject: ostreewatch {rec['OSTREEWATCH_VERSION']} started" in text, text
    assert "@OSTREEWATCH_" not in text, text


def test_boot_records_under_the_unit(guest: Container) -> None:
    """StateDirectory=: the sandboxed daemon keeps /var/lib/ostreewatch/boots; this boot is judged and journaled."""
    # nspawn gives the container a boot id of its own by a bind mount over /proc/sys/kernel/random/boot_id;
    # the unit's ProtectKernelTunables= remounts /proc/sys and shows the kernel's file again. On a host
    # (no nspawn) both are the kernel's: compare with what the unit's own namespace reads.
    pid = guest.show(UNIT, "MainPID")["MainPID"]
    cat = ["cat", "/proc/sys/kernel/random/boot_id"]
    boot_id = guest.run(["nsenter", f"--target={pid}", "--mount", *cat], check=True).stdout.strip().replace("-", "")
    last = guest.wait_for("LastBoot", lambda: unwrap(prop(guest, "LastBoot")) or None)
    assert last["boot_id"] == boot_id and last["outcome"] == "first-record", last
    ls = guest.run(["stat", "-c", "%a %U %F", "/var/lib/ostreewatch", "/var/lib/ostreewatch/boots"], check=True)
    assert ls.stdout.splitlines() == ["755 root directory", "644 root regular file"], ls.stdout
    cli = [
        "python3",
        "-c",
        "import sys; sys.path.insert(0, '/opt/ostreewatch'); from ostreewatch.cli import main; main()",
    ]
    r = guest.run([*cli, "boots", "--json", "--state-dir", "/var/lib/ostreewatch"], check=True)
    assert [b["boot_id"] for b in json.loads(r.stdout)["BootHistory"]] == [boot_id]
    records = journal(guest, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_BOOT_OUTCOME}")
    assert [(x["OSTREEWATCH_BOOT_ID"], x["OSTREEWATCH_BOOT_OUTCOME"]) for x in records] == [(boot_id, "first-record")]
    text = guest.run(
        ["journalctl", "-x", "--no-pager", "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_BOOT_OUTCOME}"], check=True
    ).stdout
    assert f"Subject: Boot {boot_id} turned out first-record" in text and "@OSTREEWATCH_" not in text, text


def test_boot_complete_is_asked_from_systemd(guest: Container) -> None:
    """BootAssessment's boot_complete follows boot-complete.target, as PID 1 reports it over D-Bus."""
    assert guest.show("boot-complete.target", "ActiveState")["ActiveState"] == "inactive"
    guest.wait_for("boot_complete false", lambda: unwrap(prop(guest, "BootAssessment")).get("boot_complete") is False)
    guest.run(["systemctl", "start", "boot-complete.target"], check=True)
    guest.wait_for("boot_complete true", lambda: unwrap(prop(guest, "BootAssessment")).get("boot_complete") is True)


def test_no_ordering_cycle_in_the_boot_log(guest: Container) -> None:
    log = guest.run(["journalctl", "-b", "--no-pager", "-o", "cat"], check=True).stdout
    assert "Started" in log  # the log is there at all
    assert "ordering cycle" not in log.lower()
    assert "Job ostreewatch.service/start deleted" not in log


def test_stop_is_clean_and_dbus_activation_starts_it_again(guest: Container) -> None:
    guest.run(["systemctl", "stop", UNIT], check=True)
    s = guest.show(UNIT, "ActiveState", "Result", "ExecMainStatus")
    assert s == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, s
    assert journal(guest, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_STOPPING}")
    # A call to the bus name makes dbus-daemon ask systemd for ostreewatch.service.
    version = prop(guest, "Version")
    assert version
    s = guest.show(UNIT, "ActiveState", "SubState")
    assert (s["ActiveState"], s["SubState"]) == ("active", "running"), s
    log = guest.run(["journalctl", "-u", "dbus.service", "--no-pager", "-o", "cat"]).stdout
    assert "Activating via systemd: service name='org.ostreewatch1'" in log, log


def test_restarted_after_a_crash(guest: Container) -> None:
    """Restart=on-failure: SIGKILL of the main process brings a new one."""
    pid = guest.show(UNIT, "MainPID")["MainPID"]
    assert pid != "0"
    guest.run(["systemctl", "kill", "--signal=KILL", UNIT], check=True)

    def restarted() -> bool:
        s = guest.show(UNIT, "MainPID", "ActiveState", "SubState", "NRestarts")
        return s["MainPID"] not in ("0", pid) and s["SubState"] == "running" and s["NRestarts"] == "1"

    guest.wait_for("the restart after SIGKILL", restarted)
    assert prop(guest, "Version")
    # A restart within the same boot judges nothing again: still one record, one journal entry.
    assert [unwrap(b)["outcome"] for b in prop(guest, "BootHistory")] == ["first-record"]
    assert len(journal(guest, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_BOOT_OUTCOME}")) == 1


def test_without_ostree_on_the_command_line_the_unit_is_skipped(
    tmp_path_factory: pytest.TempPathFactory, sysroot: dict[str, Any], guest: Container
) -> None:
    guest.stop()  # one container at a time: they share payload/ and supervisor/ cgroups
    with Container(tmp_path_factory.mktemp("nspawn-plain"), sysroot["path"], []) as plain:
        s = plain.show(UNIT, "ConditionResult", "ActiveState", "UnitFileState")
        assert s == {"ConditionResult": "no", "ActiveState": "inactive", "UnitFileState": "enabled"}, s
        assert not journal(plain, "-u", UNIT, f"MESSAGE_ID={oj.MESSAGE_ID_STARTED}")
