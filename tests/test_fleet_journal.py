"""The central audit trail: ostreewatchd's records in a private systemd-journald, shipped by
systemd-journal-upload to a systemd-journal-remote on 127.0.0.1 (plain http), and found there
with journalctl --file/--directory MESSAGE_ID=... with every OSTREEWATCH_* field intact."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from ostreewatch import journal
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.fleet_servers import JournalRemote, JournalUpload, wait_until
from tests.fixtures.sysroots import OstreeSysroot

WAIT = 60.0
KINDS = {
    "started": journal.MESSAGE_ID_STARTED,
    "changed": journal.MESSAGE_ID_CHANGED,
    "write-attempt": journal.MESSAGE_ID_WRITE_ATTEMPT,
    "stopping": journal.MESSAGE_ID_STOPPING,
}


def journalctl(where: list[str], *matches: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        ["journalctl", *where, "-o", "json", "--no-pager", *matches], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def ostreewatch_fields(record: dict[str, Any]) -> dict[str, Any]:
    keep = {"MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "_PID"}
    return {k: v for k, v in record.items() if k.startswith("OSTREEWATCH_") or k in keep}


def test_records_reach_the_central_journal_with_their_fields(
    journald: Any, system_bus: Any, sysroot_3: OstreeSysroot, daemon_factory: Any
) -> None:
    remote = JournalRemote()
    upload = JournalUpload(remote.url, journald.directory)
    try:
        remote.start()
        upload.start()
        d = daemon_factory(system_bus, sysroot_3.paths(), prefix=journald.prefix())
        d.wait_name()

        # A change: a real deploy.
        sysroot_3.commit("fedora/x", version="4", kver="6.1.4")
        sysroot_3.deploy("fedora/x")
        wait_until(lambda: d.get_property("Generation") >= 2, WAIT, "the deploy published")

        # Write attempts. Root with a malformed id: invalid (refused before authorization), and journaled.
        bad = d.busctl(
            "call", BUS_NAME, OBJECT_PATH, INTERFACE, "SetDefaultEntry", "s", "../../etc/passwd", check=False
        )
        assert bad.returncode != 0 and "must not contain" in bad.stderr, bad.stderr
        # A non-root caller: refused (by the bus policy or, where the policy lets callers reach
        # the methods, by the daemon, which then journals it).
        nobody = system_bus.busctl(
            "call", BUS_NAME, OBJECT_PATH, INTERFACE, "SetDefaultEntry", "s", "ostree-1", nobody=True
        )
        assert nobody.returncode != 0, nobody.stdout
        assert d.stop() == 0

        local = {
            kind: [r for r in journald.read(MESSAGE_ID=mid) if r.get("SYSLOG_IDENTIFIER") == "ostreewatch"]
            for kind, mid in KINDS.items()
        }
        for kind, records in local.items():
            assert records, f"no local {kind} record"
        invalid = [r for r in local["write-attempt"] if r.get("OSTREEWATCH_CALLER_UID") == "0"]
        assert [r["OSTREEWATCH_RESULT"] for r in invalid] == ["invalid"]
        assert invalid[0]["OSTREEWATCH_ERROR"] == "org.freedesktop.DBus.Error.InvalidArgs"
        # Where the daemon sees the non-root call, it stops it and says so: invalid when the entry does
        # not exist (arguments are checked before authorization), refused when polkit says no.
        assert {
            r["OSTREEWATCH_RESULT"] for r in local["write-attempt"] if r.get("OSTREEWATCH_CALLER_UID") == "65534"
        } <= {"refused", "invalid"}

        # The same records, fields intact, in the central journal (the file journal-remote writes).
        def shipped(kind: str) -> list[dict[str, Any]]:
            found = journalctl([f"--file={remote.file}"], f"MESSAGE_ID={KINDS[kind]}", "SYSLOG_IDENTIFIER=ostreewatch")
            return found if len(found) >= len(local[kind]) else []

        for kind in KINDS:
            got = wait_until(
                lambda: shipped(kind),  # noqa: B023 - wait_until calls it before the loop moves on
                WAIT,
                f"{kind} records in the central journal (upload log: {upload.log()}; remote log: {remote.log()})",
            )
            assert [ostreewatch_fields(r) for r in got] == [ostreewatch_fields(r) for r in local[kind]], kind
            # The uploader keeps the trusted fields: which host and boot a record came from.
            assert {r["_BOOT_ID"] for r in got} == {r["_BOOT_ID"] for r in local[kind]}
            assert {r["_MACHINE_ID"] for r in got} == {r["_MACHINE_ID"] for r in local[kind]}

        # The queries docs/fleet.md shows, against the directory journal-remote writes into.
        attempts = journalctl(
            [f"--directory={remote.directory}"],
            f"MESSAGE_ID={journal.MESSAGE_ID_WRITE_ATTEMPT}",
            "OSTREEWATCH_RESULT=invalid",
        )
        assert [r["OSTREEWATCH_ENTRY"] for r in attempts if r["OSTREEWATCH_CALLER_UID"] == "0"] == ["../../etc/passwd"]
        changed = journalctl([f"--directory={remote.directory}"], f"MESSAGE_ID={journal.MESSAGE_ID_CHANGED}")
        assert any(r.get("OSTREEWATCH_DEPLOYMENTS_ADDED") for r in changed), changed
    finally:
        upload.close()
        remote.close()
