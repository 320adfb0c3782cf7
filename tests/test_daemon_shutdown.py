"""A shutdown of a real systemd host leaves no warning from ostreewatch (issue 17).

ostreewatch.service and dbus.service are not ordered against each other (the
unit waits for no bus, and nothing waits for it: issue 21), so at a shutdown
either may stop first. When the bus goes first, the daemon loses its connection
while systemd says `stopping`: that loss is journaled at info with
OSTREEWATCH_SHUTTING_DOWN=1, not as a warning. The test container makes that
order certain with a drop-in (`Before=dbus.service`, and an `ExecStop=` that
holds systemd's SIGTERM back a second), and also powers off with
the unit as shipped. Booted with systemd as PID 1 in systemd-nspawn
(tests/fixtures/nspawn.py), powered off, and the container's own journald's
persistent journal (a host directory bound on /var/log/journal) read afterwards.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

import ostreewatch.journal as oj
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.nspawn import Container, build_sysroot

pytestmark = [pytest.mark.nspawn, pytest.mark.slow, pytest.mark.timeout(240)]

UNIT = "ostreewatch.service"


def read_journal(directory: Path, *matches: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        ["journalctl", f"--directory={directory}", "--no-pager", "-o", "json", *matches],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("bus_stops_first", [True, False], ids=["bus-stops-first", "as-shipped"])
def test_the_bus_lost_at_shutdown_is_info_not_a_warning(tmp_path: Path, bus_stops_first: bool) -> None:
    ostree_arg = build_sysroot(tmp_path / "sysroot")
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    (tmp_path / "guest").mkdir()
    options = [f"--bind={journal_dir}:/var/log/journal"]
    if bus_stops_first:
        # Stop order is the reverse of start order: ordered before the bus, the daemon outlives it.
        # ExecStop= runs before systemd's SIGTERM: a second in which the daemon sees the bus go.
        dropin = tmp_path / "dropin"
        dropin.mkdir()
        (dropin / "bus-stops-first.conf").write_text("[Unit]\nBefore=dbus.service\n[Service]\nExecStop=/bin/sleep 1\n")
        options.append(f"--bind-ro={dropin}:/etc/systemd/system/{UNIT}.d")
    with Container(tmp_path / "guest", tmp_path / "sysroot", [ostree_arg], options=options) as c:
        # The daemon owns its name on the bus: a bus connection to lose.
        r = c.run(["busctl", "get-property", BUS_NAME, OBJECT_PATH, INTERFACE, "Version"], check=True)
        assert r.stdout.startswith("s ")
        c.run(["journalctl", "--flush"], check=True)
    # Leaving the block powered the container off (nspawn's SIGTERM: systemd's poweroff), within
    # 30 s: a daemon that never exits holds the power-off until the fixture kills the container.
    assert c.powered_off, "the container did not power off within 30 s"
    # The daemon's own records: its journal records and its stderr (systemd also logs on the
    # unit's behalf, e.g. a sandbox setup note from the forked child, which is not the daemon).
    records = [
        r
        for r in read_journal(journal_dir, f"_SYSTEMD_UNIT={UNIT}")
        if r.get("SYSLOG_IDENTIFIER") in ("ostreewatch", "ostreewatchd")
    ]
    assert any(r.get("MESSAGE_ID") == oj.MESSAGE_ID_STOPPING for r in records), records
    lost = [r for r in records if r.get("MESSAGE_ID") == oj.MESSAGE_ID_BUS_LOST]
    if bus_stops_first:
        assert lost, [r.get("MESSAGE") for r in records]
    for r in lost:
        assert r["PRIORITY"] == "6" and r.get("OSTREEWATCH_SHUTTING_DOWN") == "1", r
    # stderr reaches the journal at info whatever it says: Python's own warnings go there.
    warnings = [
        r.get("MESSAGE")
        for r in records
        if int(r["PRIORITY"]) <= 4 or re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", r.get("MESSAGE", ""))
    ]
    assert warnings == [], warnings
