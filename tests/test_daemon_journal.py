"""ostreewatchd's records in a real systemd-journald: started, bus connected, changed, problem, stopping."""

from __future__ import annotations

import os
from typing import Any, Callable

from ostreewatch import journal
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.daemon_sysroot import bus, entries_dir, sysroot


def test_start_change_problem_and_stop_records(
    bus: Any,
    sysroot: str,
    daemon_factory: Callable[..., DaemonProcess],
    journald: Any,
) -> None:
    d = daemon_factory(bus, sysroot, prefix=journald.prefix())
    d.wait_name()
    started = journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_STARTED, timeout=30)
    rec = started[0]
    assert rec["SYSLOG_IDENTIFIER"] == "ostreewatch"
    assert rec["OSTREEWATCH_DEFAULT_DEPLOYMENT"] == d.get_property("DefaultDeployment")
    assert rec["OSTREEWATCH_VERSION"] == d.get_property("Version")
    assert int(rec["_PID"]) == d.pid
    journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_BUS_CONNECTED, timeout=30)

    # a hand-added entry: a change record with what changed and the new generation
    with open(os.path.join(entries_dir(sysroot), "hand.conf"), "w") as f:
        f.write("title Hand\nversion 9\nlinux /vmlinuz-hand\n")
    changed = journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_CHANGED, timeout=30)
    assert changed[0]["OSTREEWATCH_GENERATION"] == str(d.get_property("Generation"))
    assert "hand" in str(changed[0].get("OSTREEWATCH_ENTRIES_ADDED"))

    # a malformed entry: a problem record; removing it: the problem clears
    with open(os.path.join(entries_dir(sysroot), "bad.conf"), "wb") as f:
        f.write(b"\xff\xfe not utf-8\n")
    appeared = journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_PROBLEM_APPEARED, timeout=30)
    assert any("bad" in str(r.get("OSTREEWATCH_PROBLEM_SUBJECT", "")) + r.get("MESSAGE", "") for r in appeared)
    os.unlink(os.path.join(entries_dir(sysroot), "bad.conf"))
    journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_PROBLEM_CLEARED, timeout=30)

    assert d.stop() == 0
    journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_STOPPING, timeout=30)
