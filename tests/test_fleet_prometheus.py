"""The fleet view end to end: ostreewatchd --textfile-dir -> a real node_exporter -> a real prometheus
evaluating contrib/prometheus/ostreewatch.rules.yml, all on 127.0.0.1 (sysroots as
tests/fixtures/sysroots.py builds them)."""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ostreewatch import model, state, textfile
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.fleet_servers import PROMTOOL, NodeExporter, Prometheus, wait_until
from tests.fixtures.sysroots import OstreeSysroot

RULES = str(Path(__file__).resolve().parent.parent / "contrib" / "prometheus" / "ostreewatch.rules.yml")
OSNAME = "fleetos"
# A commit's version is free text: quote, backslash and newline must reach Prometheus intact.
NASTY_VERSION = '41.2 "beta"\\x\nnext'
WAIT = 60.0


@pytest.fixture
def booted_host() -> Iterator[Any]:
    """A real sysroot with two deployments, imitated as booted into the default one (version NASTY)."""
    work = tempfile.mkdtemp(prefix="ow-fleet-")
    os.chmod(work, 0o755)
    try:
        sr = OstreeSysroot(work).init(OSNAME)
        sr.commit(f"{OSNAME}/x", version="41.1", kver="6.1.1", osname=OSNAME)
        sr.deploy(f"{OSNAME}/x", os=OSNAME)
        sr.commit(f"{OSNAME}/x", version=NASTY_VERSION, kver="6.1.2", osname=OSNAME)
        sr.deploy(f"{OSNAME}/x", os=OSNAME)
        booted = sr.admin_status()[0]
        rel = f"/ostree/deploy/{booted.osname}/deploy/{booted.checksum}.{booted.serial}"
        run = Path(work, "run")
        run.mkdir()
        # An empty ostree-booted (as older ostree writes it) plus a mount table whose / is the
        # booted deployment: the reader finds the booted deployment by its mount (tests/test_state.py).
        (run / "ostree-booted").write_bytes(b"")
        mountinfo = Path(work, "mountinfo")
        mountinfo.write_text(
            f"102 1 252:4 {rel} / rw,relatime shared:1 - xfs /dev/vda4 rw\n"
            f"104 102 252:4 {rel}/usr /usr ro,relatime shared:3 - xfs /dev/vda4 rw\n"
            "105 102 252:3 / /boot rw,relatime shared:4 - ext4 /dev/vda3 rw\n"
        )
        cmdline = Path(work, "cmdline")
        cmdline.write_text("root=UUID=0 rw\n")
        textfile_dir = Path(work, "textfile")
        textfile_dir.mkdir()
        yield (
            sr,
            state.Paths(sysroot=sr.path, mountinfo=str(mountinfo), cmdline=str(cmdline), run=str(run)),
            str(textfile_dir),
            booted,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """Every server a test starts, stopped (and its temp dir removed) at the end."""
    started: list[Any] = []
    yield started
    for s in reversed(started):
        s.close()


def _firing(prom: Prometheus, name: str) -> list[dict]:
    return [a for a in prom.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def fallback_alert_fires(prom: Prometheus, ne: NodeExporter) -> None:
    alerts = wait_until(lambda: _firing(prom, "OstreewatchBootFallback"), WAIT, "OstreewatchBootFallback firing")
    assert [a["labels"]["instance"] for a in alerts] == [ne.address]
    assert alerts[0]["labels"]["severity"] == "critical"
    assert prom.value("ostreewatch_boot_fallback") == 1
    assert prom.value('ostreewatch_problems{code="boot-fallback"}') == 1


def test_deploy_and_fallback_reach_prometheus(
    system_bus: Any, booted_host: Any, servers: list[Any], daemon_factory: Any
) -> None:
    sr, paths, textfile_dir, booted = booted_host
    d: DaemonProcess = daemon_factory(system_bus, paths, extra_args=["--textfile-dir", textfile_dir])
    d.wait_name()
    prom_file = os.path.join(textfile_dir, textfile.FILE_NAME)
    wait_until(lambda: os.path.exists(prom_file), WAIT, "the daemon's textfile")

    ne = NodeExporter(textfile_dir)
    servers.append(ne)
    ne.start()
    prom = Prometheus([ne.address], [RULES])
    servers.append(prom)
    prom.start()

    # The rules loaded into the live server are the project's six.
    groups = prom.api("rules")["groups"]
    assert sorted(r["name"] for g in groups for r in g["rules"]) == [
        "OstreewatchBootFallback",
        "OstreewatchFinalizeFailed",
        "OstreewatchMetricsAbsent",
        "OstreewatchProblems",
        "OstreewatchUnexpectedBoot",
        "OstreewatchUpdatePending",
    ]

    gen0 = wait_until(lambda: prom.value("ostreewatch_generation"), WAIT, "first scrape of ostreewatch_generation")
    assert gen0 == d.get_property("Generation")
    assert prom.value("ostreewatch_update_pending") == 0
    assert prom.value("ostreewatch_deployments") == 2
    info = prom.query("ostreewatch_info")
    assert len(info) == 1
    labels = info[0]["metric"]
    assert labels["instance"] == ne.address
    assert labels["booted_deployment"] == labels["default_deployment"] == booted.id
    # Decoded by Prometheus's own parser: the escaping in ostreewatch/textfile.py round-trips.
    assert labels["booted_version"] == labels["default_version"] == NASTY_VERSION
    # promtool lints the very file node_exporter serves.
    with open(prom_file, "rb") as served:
        lint = subprocess.run([PROMTOOL, "check", "metrics"], stdin=served, capture_output=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout and not lint.stderr, lint

    # A deploy: the new deployment becomes the default while the old one stays booted.
    sr.commit(f"{OSNAME}/x", version="41.3", kver="6.1.3", osname=OSNAME)
    sr.deploy(f"{OSNAME}/x", os=OSNAME)
    wait_until(lambda: prom.value("ostreewatch_update_pending") == 1, WAIT, "update_pending flips to 1")
    assert prom.value("ostreewatch_generation") > gen0
    assert prom.value("ostreewatch_deployments") == 3
    # The oracle: ostree itself, run inside the imitated host booted into the old deployment.
    after = sr.admin_status()
    assert after[1].id == booted.id
    marks = {s.id: s.marks for s in sr.booted_admin_status(1)}
    assert "pending" in marks[after[0].id] and "*" in marks[booted.id]
    labels = prom.query("ostreewatch_info")[0]["metric"]
    assert labels["booted_deployment"] == booted.id and labels["default_deployment"] == after[0].id
    assert labels["default_version"] == "41.3"
    # The update-pending alert is evaluated on the live series: pending, firing only after a day.
    wait_until(
        lambda: [
            a
            for a in prom.alerts()
            if a["labels"]["alertname"] == "OstreewatchUpdatePending" and a["state"] == "pending"
        ],
        WAIT,
        "OstreewatchUpdatePending pending",
    )
    assert not _firing(prom, "OstreewatchBootFallback")
    assert not [a for a in prom.alerts() if a["labels"]["alertname"] == "OstreewatchMetricsAbsent"]

    # The boot fallback, as a boot-counting boot loader leaves it: the new default's entry was
    # tried and not kept, so systemd-boot renamed it NAME+0-TRIES.conf (no tries left; systemd
    # src/boot/bless-boot.c names the states), and the host runs the old deployment.
    entries = sr.entries_dir()
    failed = next(e for e in d.get_property("BootEntries") if e["deployment"]["data"] == after[0].id)
    failed_file = failed["file"]["data"]
    os.rename(os.path.join(entries, failed_file), os.path.join(entries, failed_file[:-5] + "+0-3.conf"))
    d.busctl("call", BUS_NAME, OBJECT_PATH, INTERFACE, "Reload")
    published = {p["code"]["data"] for p in d.get_property("Problems")}
    # The reader sees the evidence itself: the live daemon's file carries the fallback.
    assert "boot-fallback" in published, published
    fallback_alert_fires(prom, ne)

    # The daemon stops: its file goes, and with it every ostreewatch series.
    assert d.stop() == 0
    assert not os.path.exists(prom_file)
    wait_until(lambda: prom.query("ostreewatch_info") == [], WAIT, "ostreewatch_info absent after the stop")
    # ... which the daemon-down rule sees on the live series (it fires after 10 minutes).
    wait_until(
        lambda: [
            a
            for a in prom.alerts()
            if a["labels"]["alertname"] == "OstreewatchMetricsAbsent"
            and a["labels"]["instance"] == ne.address
            and a["state"] == "pending"
        ],
        WAIT,
        "OstreewatchMetricsAbsent pending",
    )
