"""journal.Journal against a REAL systemd-journald (tests/fixtures/journald.py),
and its stderr fallback without a socket or with a stale one."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from ostreewatch import journal as J
from ostreewatch.changes import diff
from ostreewatch.model import Problem, Snapshot
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

pytestmark = pytest.mark.timeout(120)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside the journald's mount namespace: emits one record of every kind.
_EMIT = r"""
import dataclasses, sys
from ostreewatch.journal import Journal, LOG_NOTICE
from ostreewatch.changes import diff
from ostreewatch.model import BootEntry, Deployment, Mount, Problem, Snapshot

def dep(i, ix, **kw):
    return Deployment(id=f"fedora-{i}.0", osname="fedora", checksum=i, serial=0, index=ix,
                      path=f"/ostree/deploy/fedora/deploy/{i}.0", **kw)
p1 = Problem("entry-malformed", "line 2: no value", "bad-entry")
old = Snapshot(Bootloader="grub2", OstreeBooted=True, BootedDeployment="fedora-a.0",
               DefaultDeployment="fedora-a.0", DefaultEntry="ostree-2",
               Deployments=(dep("a", 0),), BootEntries=(BootEntry("ostree-2", "ostree-2.conf"),),
               Problems=(p1,))
new = dataclasses.replace(old, DefaultDeployment="fedora-b.0", DefaultEntry="ostree-1",
                          Deployments=(dep("b", 0), dep("a", 1)),
                          BootEntries=(BootEntry("ostree-2", "ostree-2.conf", title="x"),
                                       BootEntry("ostree-1", "ostree-1.conf")),
                          Mounts=(Mount("/usr", 5, 1, "0:1", "/", "/dev/x", "xfs", "ro", "rw", True, ""),),
                          Problems=())
j = Journal()
j.started(old, "9.9.9")
j.changed(old, new, diff(old, new), 7)
j.problem_appeared(p1)
j.problem_cleared(p1)
j.write_attempt(caller_uid=1000, caller_pid=42, caller_bus_name=":1.5", caller_unit="session-1.scope",
                method="SetDefaultEntry", entry="ostree-1", previous="ostree-2", new="ostree-1",
                bootloader="grub2", result="granted", error="")
j.write_attempt(caller_uid=65534, method="SetDefaultEntry", entry="nope", result="refused",
                error="org.freedesktop.DBus.Error.AccessDenied")
j.bus_connected("unix:path=/run/dbus/system_bus_socket", ":1.9")
j.bus_lost("unix:path=/run/dbus/system_bus_socket", "disconnected")
j.log(LOG_NOTICE, "plain message\nwith two lines", hint="x")
j.stopping("SIGTERM")
print("emitted")
"""


def _run_in(prefix, script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )


def _one(records, message_id):
    found = [r for r in records if r.get("MESSAGE_ID") == message_id]
    assert len(found) == 1, (message_id, found)
    return found[0]


def _values(record, key):
    """A field's values: journalctl -o json gives a list for a repeated field."""
    v = record.get(key)
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def test_every_record_kind_reaches_a_real_journald(journald):
    r = _run_in(journald.prefix(), _EMIT)
    assert r.returncode == 0 and "emitted" in r.stdout, r.stderr
    assert r.stderr == ""  # nothing fell back to stderr: the journal took every record
    recs = journald.wait_for(
        lambda rec: rec.get("MESSAGE_ID") == J.MESSAGE_ID_STOPPING, SYSLOG_IDENTIFIER="ostreewatch"
    )
    recs = journald.read(SYSLOG_IDENTIFIER="ostreewatch")
    assert len(recs) == 10

    started = _one(recs, J.MESSAGE_ID_STARTED)
    assert started["PRIORITY"] == "6"
    assert started["OSTREEWATCH_VERSION"] == "9.9.9"
    assert started["OSTREEWATCH_BOOTED_DEPLOYMENT"] == "fedora-a.0"
    assert started["OSTREEWATCH_DEFAULT_DEPLOYMENT"] == "fedora-a.0"
    assert started["OSTREEWATCH_DEFAULT_ENTRY"] == "ostree-2"
    assert started["OSTREEWATCH_PROBLEM_COUNT"] == "1"
    assert started["OSTREEWATCH_BOOTLOADER"] == "grub2"
    assert "fedora-a.0" in started["MESSAGE"]

    changed = _one(recs, J.MESSAGE_ID_CHANGED)
    assert changed["OSTREEWATCH_GENERATION"] == "7"
    assert set(_values(changed, "OSTREEWATCH_CHANGED")) == {
        "DefaultDeployment",
        "DefaultEntry",
        "Deployments",
        "BootEntries",
        "Mounts",
        "Problems",
    }
    assert changed["OSTREEWATCH_DEFAULT_ENTRY_PREVIOUS"] == "ostree-2"
    assert changed["OSTREEWATCH_DEFAULT_ENTRY_CURRENT"] == "ostree-1"
    assert changed["OSTREEWATCH_DEFAULT_DEPLOYMENT_PREVIOUS"] == "fedora-a.0"
    assert changed["OSTREEWATCH_DEFAULT_DEPLOYMENT_CURRENT"] == "fedora-b.0"
    assert _values(changed, "OSTREEWATCH_DEPLOYMENTS_ADDED") == ["fedora-b.0"]
    assert _values(changed, "OSTREEWATCH_ENTRIES_ADDED") == ["ostree-1"]
    assert _values(changed, "OSTREEWATCH_ENTRIES_MODIFIED") == ["ostree-2"]
    assert _values(changed, "OSTREEWATCH_MOUNTS_CHANGED") == ["/usr"]
    assert _values(changed, "OSTREEWATCH_PROBLEMS_CLEARED") == ["entry-malformed"]
    assert "OSTREEWATCH_BOOTED_DEPLOYMENT_PREVIOUS" not in changed  # unchanged: not recorded
    assert "ostree-2 -> ostree-1" in changed["MESSAGE"]

    appeared = _one(recs, J.MESSAGE_ID_PROBLEM_APPEARED)
    assert appeared["PRIORITY"] == "4"
    assert appeared["OSTREEWATCH_PROBLEM_CODE"] == "entry-malformed"
    assert appeared["OSTREEWATCH_PROBLEM_SUBJECT"] == "bad-entry"
    cleared = _one(recs, J.MESSAGE_ID_PROBLEM_CLEARED)
    assert cleared["PRIORITY"] == "6" and cleared["OSTREEWATCH_PROBLEM_CODE"] == "entry-malformed"

    writes = [r for r in recs if r.get("MESSAGE_ID") == J.MESSAGE_ID_WRITE_ATTEMPT]
    ok, refused = writes
    assert ok["PRIORITY"] == "5"
    assert (ok["OSTREEWATCH_CALLER_UID"], ok["OSTREEWATCH_CALLER_PID"]) == ("1000", "42")
    assert ok["OSTREEWATCH_CALLER_BUS_NAME"] == ":1.5"
    assert ok["OSTREEWATCH_CALLER_UNIT"] == "session-1.scope"
    assert ok["OSTREEWATCH_METHOD"] == "SetDefaultEntry"
    assert (ok["OSTREEWATCH_PREVIOUS"], ok["OSTREEWATCH_NEW"]) == ("ostree-2", "ostree-1")
    assert ok["OSTREEWATCH_RESULT"] == "granted"
    assert refused["PRIORITY"] == "4"
    assert refused["OSTREEWATCH_ERROR"] == "org.freedesktop.DBus.Error.AccessDenied"

    assert _one(recs, J.MESSAGE_ID_BUS_CONNECTED)["OSTREEWATCH_BUS_UNIQUE_NAME"] == ":1.9"
    assert _one(recs, J.MESSAGE_ID_BUS_LOST)["PRIORITY"] == "4"
    assert _one(recs, J.MESSAGE_ID_STOPPING)["OSTREEWATCH_REASON"] == "SIGTERM"
    plain = [r for r in recs if "MESSAGE_ID" not in r]
    assert len(plain) == 1 and plain[0]["MESSAGE"] == "plain message\nwith two lines"
    assert plain[0]["PRIORITY"] == "5" and plain[0]["OSTREEWATCH_HINT"] == "x"

    # What an auditor types (docs/journal.md): exact matches on one id of a repeated field.
    assert len(journald.read(MESSAGE_ID=J.MESSAGE_ID_CHANGED, OSTREEWATCH_DEPLOYMENTS_ADDED="fedora-b.0")) == 1
    assert journald.read(MESSAGE_ID=J.MESSAGE_ID_CHANGED, OSTREEWATCH_DEPLOYMENTS_ADDED="fedora-zz.0") == []


# In a private mount namespace: /run/systemd replaced by an empty tmpfs, and
# optionally a stale socket (bound, then its owner gone) at the journal's path.
_NO_JOURNAL = r"""
set -e
mount -t tmpfs tmpfs /run/systemd
if [ "$1" = stale ]; then
    mkdir /run/systemd/journal
    "$2" -c 'import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind("/run/systemd/journal/socket"); s.close()'
    test -S /run/systemd/journal/socket
fi
exec "$2" -c "$3"
"""

_EMIT_SIMPLE = r"""
from ostreewatch.journal import Journal
from ostreewatch.model import Problem, Snapshot
j = Journal()
j.started(Snapshot(BootedDeployment="fedora-a.0", DefaultEntry="ostree-2"), "1.0")
j.problem_appeared(Problem("grubenv-bad", "two words\nand a newline", "/boot/grub2/grubenv"))
print("survived")
"""


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_without_a_journal_records_go_to_stderr(kind):
    r = subprocess.run(
        [
            *PRIVATE_MOUNT_NS,
            "sh",
            "-c",
            _NO_JOURNAL,
            "sh",
            kind,
            sys.executable,
            _EMIT_SIMPLE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "survived"  # never raised
    lines = r.stderr.splitlines()
    assert len(lines) == 2, r.stderr  # one line per record, even with a newline in a value
    assert lines[0].startswith("ostreewatch: ")
    assert f"MESSAGE_ID={J.MESSAGE_ID_STARTED}" in lines[0]
    assert "OSTREEWATCH_BOOTED_DEPLOYMENT=fedora-a.0" in lines[0]
    assert "SYSLOG_IDENTIFIER=ostreewatch" in lines[0]
    assert 'OSTREEWATCH_PROBLEM_MESSAGE="two words\\nand a newline"' in lines[1]
    assert "PRIORITY=4" in lines[1]
    if kind == "stale":
        assert "OSTREEWATCH_JOURNAL_ERROR=ConnectionRefusedError" in lines[0]


@pytest.mark.unit
def test_stderr_line_is_parseable_key_value():
    out = io.StringIO()
    j = J.Journal(socket_path="/nonexistent/socket", stream=out)
    j.write_attempt(caller_uid=0, **{"weird key!": 'a "quoted" value'}, method="SetNextEntry", result="granted")
    line = out.getvalue()
    assert line.count("\n") == 1
    pairs = dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line))
    assert pairs["PRIORITY"] == "5"
    assert pairs["OSTREEWATCH_WEIRD_KEY_"] == '"a \\"quoted\\" value"'
    assert pairs["OSTREEWATCH_METHOD"] == "SetNextEntry"


@pytest.mark.parametrize(
    "result,error,priority",
    [
        ("granted", "", "5"),
        ("success", "", "4"),
        ("refused", "org.freedesktop.DBus.Error.AccessDenied", "4"),
        ("failed", "org.ostreewatch1.Error.WriteFailed", "4"),
        ("granted", "odd: error given", "4"),
    ],
)
@pytest.mark.unit
def test_write_attempt_priority(result, error, priority):
    out = io.StringIO()
    J.Journal(socket_path="/nonexistent/socket", stream=out).write_attempt(
        method="SetDefaultEntry", entry="e", caller_uid=0, result=result, error=error
    )
    assert f"PRIORITY={priority} " in out.getvalue()


@pytest.mark.unit
def test_field_names_are_valid_journal_fields():
    for key in ("caller_uid", "caller-unit", "_x", "ünïcode", "a" * 100):
        name = J.field_name(key)
        assert re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", name), name


@pytest.mark.unit
def test_message_ids_are_distinct_128_bit_ids():
    ids = {k: v for k, v in vars(J).items() if k.startswith("MESSAGE_ID_")}
    assert len(ids) == 9 and len(set(ids.values())) == 9
    for value in ids.values():
        assert re.fullmatch(r"[0-9a-f]{32}", value)


@pytest.mark.unit
def test_docs_name_every_message_id_and_field():
    with open(os.path.join(REPO, "docs", "journal.md")) as f:
        doc = f.read()
    for name, value in vars(J).items():
        if name.startswith("MESSAGE_ID_"):
            assert value in doc and name in doc, name
    with open(J.__file__) as f:
        code = f.read()
    for field in set(re.findall(r'"(OSTREEWATCH_[A-Z_]+)"', code)) - {"OSTREEWATCH_"}:
        assert field in doc, field


@pytest.mark.unit
def test_unprintable_values_never_raise():
    class Bad:
        def __str__(self) -> str:
            raise ValueError("no")

    out = io.StringIO()
    j = J.Journal(socket_path="/nonexistent/socket", stream=out)
    j.write_attempt(entry=Bad())
    assert "OSTREEWATCH_FORMAT_ERROR=ValueError" in out.getvalue()
    closed = io.StringIO()
    closed.close()
    J.Journal(socket_path="/nonexistent/socket", stream=closed).stopping()  # no exception


@pytest.mark.unit
def test_changed_with_real_diff_in_process():
    out = io.StringIO()
    old = Snapshot(DefaultEntry="a", Problems=(Problem("p", "m", "s"),))
    new = Snapshot(DefaultEntry="b")
    J.Journal(socket_path="/nonexistent/socket", stream=out).changed(old, new, diff(old, new), 3)
    line = out.getvalue()
    assert "OSTREEWATCH_DEFAULT_ENTRY_PREVIOUS=a" in line and "OSTREEWATCH_DEFAULT_ENTRY_CURRENT=b" in line
    assert "OSTREEWATCH_PROBLEMS_CLEARED=p" in line and "OSTREEWATCH_GENERATION=3" in line
