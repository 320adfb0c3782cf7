"""Every attempt audited in a REAL journald: refusals are the daemon's (not the bus policy's), a flood of
refused calls gives a bounded number of records that still count every call; catalog, docs and code agree."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from ostreewatch import journal
from ostreewatch.service import BUS_NAME, INTERFACE, OBJECT_PATH
from tests.fixtures.bootwrite import host
from tests.fixtures.published import dbus_send
from tests.fixtures.sysroots import OstreeSysroot, parse_admin_status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = (BUS_NAME, OBJECT_PATH, INTERFACE)
WAIT = 30.0
BURST = 10_000

# Run as uid 65534 with the system python (python3-dbus-next, PYTHONPATH=REPO): BURST SetDefaultDeployment calls, 64 in
# flight; prints how many answers were AccessDenied, and anything else it got.
FLOOD = r"""
import asyncio, sys
from dbus_next import Message, MessageType
from ostreewatch import service  # its connect() survives a full socket buffer (dbus-next 0.2.3 does not)
ADDRESS, DEPLOYMENT, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def main():
    bus = await service.connect(ADDRESS)
    sem = asyncio.Semaphore(64)  # below the bus daemon's max_replies_per_connection
    answers = {}
    async def one():
        async with sem:
            reply = await bus.call(Message(destination=service.BUS_NAME, path=service.OBJECT_PATH,
                                           interface=service.INTERFACE, member="SetDefaultDeployment",
                                           signature="s", body=[DEPLOYMENT]))
            key = reply.error_name if reply.message_type == MessageType.ERROR else "ok"
            answers[key] = answers.get(key, 0) + 1
    await asyncio.gather(*(one() for _ in range(N)))
    for key, count in sorted(answers.items()):
        print(key, count)
asyncio.run(main())
"""


def records_of(journald: Any, uid: int) -> list[dict[str, Any]]:
    return [
        r
        for r in journald.read(MESSAGE_ID=journal.MESSAGE_ID_WRITE_ATTEMPT)
        if r.get("OSTREEWATCH_CALLER_UID") == str(uid)
    ]


def test_refused_by_the_daemon_journaled_and_rate_limited(
    host: OstreeSysroot, journald: Any, make_bus: Any, daemon_factory: Any
) -> None:
    # `host` first: its tmpfs exists before journald's mount namespace is made, so the daemon sees it there.
    bus = make_bus()
    d = daemon_factory(bus, host.path, prefix=journald.prefix(), env={"OSTREE_SYSROOT_DEBUG": "mutable-deployments"})
    d.wait_name(WAIT)
    order = [x.id for x in parse_admin_status(host.admin("status").stdout)]

    # One call as uid 65534: AccessDenied from the daemon (its sentence), not from the bus policy.
    r = bus.run_as_nobody(
        [
            *dbus_send(),
            f"{DEST[2]}.SetDefaultDeployment",
            f"string:{order[1]}",
        ]
    )
    assert r.returncode != 0
    assert "org.freedesktop.DBus.Error.AccessDenied" in r.stderr, r.stderr
    assert "needs root or the polkit action org.ostreewatch1.set-default" in r.stderr, r.stderr
    assert "Rejected send message" not in r.stderr
    first = journald.wait_for(
        lambda rec: rec.get("OSTREEWATCH_CALLER_UID") == "65534", MESSAGE_ID=journal.MESSAGE_ID_WRITE_ATTEMPT
    )
    assert len(first) == 1
    rec = first[0]
    assert rec["OSTREEWATCH_RESULT"] == "refused"
    assert rec["OSTREEWATCH_ERROR"] == "org.freedesktop.DBus.Error.AccessDenied"
    assert rec["OSTREEWATCH_METHOD"] == "SetDefaultDeployment"
    assert rec["OSTREEWATCH_DEPLOYMENT"] == order[1]
    assert rec["OSTREEWATCH_CALLER_BUS_NAME"].startswith(":")
    assert int(rec["OSTREEWATCH_CALLER_PID"]) > 0
    assert rec["PRIORITY"] == "4"

    # The CLI as uid 65534: one plain sentence.
    cli = bus.run_as_nobody(
        ["/usr/bin/python3", "-m", "ostreewatch.cli", "set-default", "--deployment", order[1], "--bus", bus.address],
        env={"PYTHONPATH": REPO},
    )
    assert cli.returncode == 1
    assert cli.stderr.startswith(
        "ostreewatch set-default: SetDefaultDeployment needs root or the polkit action org.ostreewatch1.set-default"
    ), cli.stderr
    assert "Traceback" not in cli.stderr

    # A burst of refused calls: every answer is AccessDenied, the journal gets a bounded number of records.
    start = time.monotonic()
    flood = bus.run_as_nobody(
        ["/usr/bin/python3", "-c", FLOOD, bus.address, order[1], str(BURST)], timeout=600, env={"PYTHONPATH": REPO}
    )
    elapsed = time.monotonic() - start
    assert flood.returncode == 0, flood.stderr
    assert flood.stdout.split() == ["org.freedesktop.DBus.Error.AccessDenied", str(BURST)]
    d.stop()  # journals the count still pending
    records = records_of(journald, 65534)
    # At most one per second of the burst (and of the calls before it), plus the flush at the stop.
    assert len(records) <= elapsed + 4, (len(records), elapsed)
    assert all(r["OSTREEWATCH_RESULT"] == "refused" for r in records)
    # ...and they still count every refused call (the CLI's included).
    total = sum(1 + int(r.get("OSTREEWATCH_SUPPRESSED") or 0) for r in records)
    assert total == BURST + 2
    # nothing was written
    assert [x.id for x in parse_admin_status(host.admin("status").stdout)] == order
    print(f"\n{BURST} refused calls in {elapsed:.1f} s -> {len(records)} journal records")


def test_catalog_and_docs_name_every_write_attempt_field() -> None:
    catalog = Path(REPO, "units", "ostreewatch.catalog").read_text()
    entry = catalog.split("-- " + journal.MESSAGE_ID_WRITE_ATTEMPT, 1)[1].split("\n-- ", 1)[0]
    docs = Path(REPO, "docs", "journal.md").read_text()
    for key in journal.WRITE_ATTEMPT_FIELDS:
        name = journal.field_name(key)
        assert re.search(rf"\b{name}\b", entry), f"catalog entry does not name {name}"
        assert re.search(rf"\b{name}\b", docs), f"docs/journal.md does not name {name}"


def test_bootwrite_writes_only_declared_fields(tmp_path: Path) -> None:
    """The keys the writer passes to write_attempt are the declared ones (so the check above covers them)."""
    source = "".join(Path(REPO, "ostreewatch", name).read_text() for name in ("bootwrite.py", "audit.py"))
    used = set(re.findall(r'record\["([a-z_]+)"\]', source))
    used |= set(re.findall(r'"([a-z_]+)": [^,]+, "caller_pid"', source))
    literal = re.search(r"fields: [Dd]ict\[str, Any\] = \{(.*?)\}", source, re.S)
    assert literal is not None
    used |= set(re.findall(r'"([a-z_]+)":', literal.group(1)))
    assert used, "no record keys found in bootwrite.py and audit.py"
    assert used <= set(journal.WRITE_ATTEMPT_FIELDS), used - set(journal.WRITE_ATTEMPT_FIELDS)


def test_rate_limit_counts_with_a_fake_clock() -> None:
    """The limiter itself, with a clock the test moves (no sleeping): per uid, root never limited."""
    import io

    now = [100.0]
    out = io.StringIO()
    j = journal.Journal(identifier="t", socket_path="/nonexistent", stream=out, clock=lambda: now[0])
    refused = dict(method="SetDefaultEntry", result="refused", error="org.freedesktop.DBus.Error.AccessDenied")
    for _ in range(5):
        j.write_attempt(caller_uid=1000, **refused)
    for _ in range(3):
        j.write_attempt(caller_uid=0, **refused)  # root: every one
    j.write_attempt(caller_uid=2000, **refused)
    now[0] += 1.5
    j.write_attempt(caller_uid=2000, **refused)  # a new second: uid 1000's pending count is journaled first
    j.write_attempt(caller_uid=1000, method="SetDefaultEntry", result="granted", error="")
    j.stopping()
    lines = [line for line in out.getvalue().splitlines() if "MESSAGE_ID=" + journal.MESSAGE_ID_WRITE_ATTEMPT in line]

    def field(line: str, name: str) -> str:
        m = re.search(rf"\b{name}=(\S+)", line)
        return m.group(1) if m else ""

    got = [
        (field(x, "OSTREEWATCH_CALLER_UID"), field(x, "OSTREEWATCH_RESULT"), field(x, "OSTREEWATCH_SUPPRESSED"))
        for x in lines
    ]
    assert got == [
        ("1000", "refused", "0"),
        ("0", "refused", ""),
        ("0", "refused", ""),
        ("0", "refused", ""),
        ("2000", "refused", "0"),
        ("1000", "refused", "3"),
        ("2000", "refused", "0"),
        ("1000", "granted", ""),
    ]
    assert sum(1 + int(s or 0) for u, r, s in got if u == "1000" and r == "refused") == 5


def test_invalid_calls_are_limited_and_counted_apart_from_refused_ones() -> None:
    """invalid (bad arguments, before authorization) is limited like refused, each result with its own count."""
    import io

    now = [100.0]
    out = io.StringIO()
    j = journal.Journal(identifier="t", socket_path="/nonexistent", stream=out, clock=lambda: now[0])
    for _ in range(3):
        j.write_attempt(caller_uid=1000, method="SetDefaultEntry", result="invalid", error="x.InvalidArgs")
        j.write_attempt(caller_uid=1000, method="SetDefaultEntry", result="refused", error="x.AccessDenied")
    now[0] += 1.5
    j.stopping()
    lines = [line for line in out.getvalue().splitlines() if "MESSAGE_ID=" + journal.MESSAGE_ID_WRITE_ATTEMPT in line]
    got = sorted(
        (
            re.search(r"OSTREEWATCH_RESULT=(\S+)", x).group(1),
            (re.findall(r"OSTREEWATCH_SUPPRESSED=(\S+)", x) or [""])[0],
        )  # type: ignore[union-attr]
        for x in lines
    )
    assert got == [("invalid", "0"), ("invalid", "1"), ("refused", "0"), ("refused", "1")]
