"""/run/ostreewatch/status.json (ostreewatch/runfiles.py, ostreewatchd --runtime-dir): what
`ostreewatch status --json` prints, readable by anyone, equal to GetAll after every change, and
never torn or empty for a reader, with a real daemon on a real dbus-daemon and an ostree sysroot."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ostreewatch import __version__, model, runfiles, state
from ostreewatch.client import Client
from tests.fixtures.fleet_servers import wait_until
from tests.fixtures.sysroots import OstreeSysroot
from tests.fixtures.units import parse_unit

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "ostreewatch.cli"]
NOBODY = 65534
CHANGES = 1000
# A reader as nobody, in a loop until the stop file appears: every read must parse as the whole
# document, and the Generation it holds may only grow. Prints "reads N" or the first bad read.
READER = r"""
import json, os, sys
path, stop = sys.argv[1], sys.argv[2]
reads, last = 0, 0
while not os.path.exists(stop):
    with open(path, "rb") as f:
        data = f.read()
    try:
        doc = json.loads(data)
    except ValueError:
        print("torn or empty read: %r" % data[:200]); sys.exit(1)
    if not data.endswith(b"}\n") or "Version" not in doc or doc["Generation"] < last:
        print("bad read: %r" % data[-200:]); sys.exit(1)
    last = doc["Generation"]
    reads += 1
print("reads", reads, "last", last)
"""


@pytest.fixture
def runtime_parent() -> Iterator[str]:
    """A directory nobody may traverse into (pytest's tmp_path is 0700 root's)."""
    parent = tempfile.mkdtemp(prefix="ow-runstatus-")
    os.chmod(parent, 0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def as_nobody(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def get_all(address: str) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        client = await Client.connect(address)
        try:
            return await client.get_all()
        finally:
            client.close()

    return asyncio.run(ask())


# --- the writer --------------------------------------------------------------------------------


def test_replace_sets_0644_under_the_units_umask_and_leaves_no_temp_file(runtime_parent: str) -> None:
    d = os.path.join(runtime_parent, "ostreewatch")
    old = os.umask(0o077)  # the unit's UMask=
    try:
        runfiles.ensure_dir(d)
        runfiles.replace(d, "status.json", b"{}\n")
    finally:
        os.umask(old)
    assert os.stat(d).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(d, "status.json")).st_mode & 0o777 == 0o644
    assert os.listdir(d) == ["status.json"]
    r = as_nobody("cat", os.path.join(d, "status.json"))
    assert r.returncode == 0 and r.stdout == "{}\n", r.stderr


def test_a_failed_replace_raises_and_leaves_no_temp_file(runtime_parent: str) -> None:
    # The rename fails (the name is a non-empty directory): the error reaches the caller (the
    # daemon journals it) and the temp file is gone.
    os.makedirs(os.path.join(runtime_parent, "status.json", "x"))
    with pytest.raises(OSError):
        runfiles.replace(runtime_parent, "status.json", b"new\n")
    assert os.listdir(runtime_parent) == ["status.json"]


def test_status_plain_is_getall_shaped(sysroot_3: OstreeSysroot) -> None:
    snap = state.read_snapshot(sysroot_3.paths())
    plain = runfiles.status_plain(snap, 7, "1.2")
    assert set(plain) == set(model.PROPERTY_SIGNATURES) | {"Generation", "Version"}
    assert json.loads(runfiles.render_status(snap, 7, "1.2")) == plain


# --- the daemon --------------------------------------------------------------------------------


def test_written_before_ready_readable_by_nobody_and_equal_to_status_json(
    system_bus: Any, sysroot_3: OstreeSysroot, runtime_parent: str, daemon_factory: Any
) -> None:
    rundir = os.path.join(runtime_parent, "ostreewatch")
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--runtime-dir", rundir], notify=True)
    d.wait_notify("READY=1")
    status = os.path.join(rundir, runfiles.STATUS_FILE)
    assert os.path.exists(status)  # before READY=1: a unit ordered after ours finds it
    d.wait_name()
    r = as_nobody("cat", status)
    assert r.returncode == 0, r.stderr
    assert os.stat(status).st_mode & 0o777 == 0o644 and os.stat(rundir).st_mode & 0o777 == 0o755
    doc = json.loads(r.stdout)
    assert doc["Generation"] == 1 and doc["Version"] == __version__
    assert doc == get_all(d.address)
    # Byte for byte what the CLI prints from the daemon (Generation and Version included).
    cli = subprocess.run(
        [*CLI, "status", "--json", "--bus", d.address], capture_output=True, text=True, timeout=60, env=d.env()
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == r.stdout
    # --offline is unchanged: the snapshot alone, no Generation or Version.
    paths = sysroot_3.paths()
    offline = subprocess.run(
        [*CLI, "status", "--json", "--offline", "--sysroot", paths.sysroot, "--mountinfo", paths.mountinfo]
        + ["--cmdline", paths.cmdline, "--run", paths.run],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 0, offline.stderr
    assert set(json.loads(offline.stdout)) == set(model.PROPERTY_SIGNATURES)
    assert d.stop() == 0
    assert os.listdir(rundir) == []  # a stopped daemon leaves no stale state


def test_equals_getall_after_each_of_1000_changes_and_a_reader_never_sees_a_torn_file(
    system_bus: Any, sysroot_3: OstreeSysroot, runtime_parent: str, daemon_factory: Any
) -> None:
    rundir = os.path.join(runtime_parent, "ostreewatch")
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--runtime-dir", rundir])
    d.wait_name()
    status = os.path.join(rundir, runfiles.STATUS_FILE)
    stop = os.path.join(runtime_parent, "stop")
    script = os.path.join(runtime_parent, "reader.py")
    Path(script).write_text(READER)
    os.chmod(script, 0o644)
    reader = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, script, status, stop],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hand = os.path.join(sysroot_3.entries_dir(), "hand.conf")

    async def run() -> list[int]:
        client = await Client.connect(d.address)
        seen = []
        try:
            for i in range(CHANGES):
                with open(hand, "w") as f:
                    f.write(f"title Hand {i}\nversion 9\nlinux /vmlinuz-hand\n")
                generation = await client.reload()
                props = await client.get_all()
                with open(status, "rb") as f:
                    doc = json.loads(f.read())
                assert doc == props, i
                assert doc["Generation"] == generation
                seen.append(generation)
        finally:
            client.close()
        return seen

    try:
        seen = asyncio.run(run())
    finally:
        Path(stop).touch()
        out, err = reader.communicate(timeout=60)
    assert len(set(seen)) == CHANGES and seen == sorted(seen)  # every change published, in order
    assert reader.returncode == 0, out + err
    reads = int(out.split()[1])
    assert reads > 0, out
    assert not [n for n in os.listdir(rundir) if n.startswith(".status.json")]  # no temp file left behind
    assert d.alive()


def test_an_unwritable_runtime_dir_never_stops_the_daemon(
    system_bus: Any, sysroot_3: OstreeSysroot, runtime_parent: str, daemon_factory: Any
) -> None:
    missing = os.path.join(runtime_parent, "no-such-parent", "ostreewatch")
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--runtime-dir", missing])
    d.wait_name()
    wait_until(lambda: "cannot write status.json" in d.stderr_text(), 30, "the warning")
    assert d.get_property("Generation") == 1 and d.alive()
    assert d.stop() == 0


# --- the units ---------------------------------------------------------------------------------


def test_the_unit_gives_the_runtime_directory_and_the_path_unit_watches_the_file(tmp_path: Path) -> None:
    unit = parse_unit((ROOT / "units" / "ostreewatch.service").read_text())["Service"]
    assert unit["RuntimeDirectory"] == ["ostreewatch"] and unit["RuntimeDirectoryMode"] == ["0755"]
    path = parse_unit((ROOT / "contrib" / "status" / "ostreewatch-changed.path").read_text())
    assert path["Path"]["PathChanged"] == [os.path.join(runfiles.DEFAULT_RUNTIME_DIR, runfiles.STATUS_FILE)]
    assert path["Path"]["Unit"] == ["ostreewatch-changed.service"]
    for name in ("ostreewatch-changed.path", "ostreewatch-changed.service"):
        shutil.copy(ROOT / "contrib" / "status" / name, tmp_path / name)
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "ostreewatch-changed.path")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.stdout + out.stderr).strip() == "", out.stdout + out.stderr


_plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(st.text(), _plain, max_size=6))
def test_render_json_is_json_dumps(values: dict[str, Any]) -> None:
    """status.json is written before READY=1 without importing json: the text json.dumps would write."""
    assert runfiles.render_json(values) == json.dumps(values, indent=2, ensure_ascii=False) + "\n"


def test_render_json_of_other_values_is_json_dumps() -> None:
    for values in ({"f": 1.5, "t": (1, "x")}, {"n": {1: "int key"}}, {"nan": float("nan")}):
        assert runfiles.render_json(values) == json.dumps(values, indent=2, ensure_ascii=False) + "\n"


def test_status_text_of_a_real_snapshot_is_json_dumps() -> None:
    from ostreewatch import sample

    with tempfile.TemporaryDirectory() as d:
        snap = state.read_snapshot(sample.materialize(d, "silverblue"))
    plain = runfiles.status_plain(snap, 3, "1.2")
    assert runfiles.render_status(snap, 3, "1.2") == json.dumps(plain, indent=2, ensure_ascii=False) + "\n"
