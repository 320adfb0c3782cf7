"""BootWriter against real ostree sysroots, checked with grub-editenv and bootctl."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ostreewatch import errors, model
from ostreewatch._writehelper import TEMP_PREFIX, atomic_replace
from ostreewatch.bootplan import validate_id
from ostreewatch.bootwrite import BootWriter
from ostreewatch.parse.grubenv import update_grubenv
from tests.fixtures.bootwrite import (
    GRUB_CFG_STATIC,
    SEED_VARS,
    RecordingJournal,
    bootctl_default,
    copy_sysroot,
    grubenv_list,
    make_paths,
    seed_grub,
    seed_loader_conf,
    snapshot_of,
    template,
)
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

ROOT = model.Caller(uid=0, pid=4242, bus_name=":1.42", unit="test.scope")
NOBODY = model.Caller(uid=65534, pid=4343, bus_name=":1.43", unit="")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def sysroot(template: str, tmp_path: Any) -> str:
    return copy_sysroot(template, str(tmp_path / "sysroot"))


def run(writer: BootWriter, which: str, entry_id: str, snapshot: model.Snapshot, caller: model.Caller = ROOT) -> None:
    asyncio.run(writer.set_entry(which, entry_id, caller, snapshot))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def deployment_of(snapshot: model.Snapshot, entry_id: str) -> str:
    return next(e.deployment for e in snapshot.BootEntries if e.id == entry_id)


# --- grub2 -------------------------------------------------------------------------------


def test_grub_set_default_then_next_then_clear(sysroot: str) -> None:
    env = seed_grub(sysroot)
    before = grubenv_list(env)
    snap = snapshot_of(sysroot, "grub2")
    journal = RecordingJournal()
    writer = BootWriter(make_paths(sysroot), journal)

    run(writer, "default", "ostree-2-test", snap)
    after = grubenv_list(env)
    assert after["saved_entry"] == "ostree-2-test"
    assert after["ostreewatch_saved_deployment"] == deployment_of(snap, "ostree-2-test")
    for var in SEED_VARS:  # every other variable unchanged, as grub reads it
        key = var.split("=", 1)[0]
        assert after[key] == before[key]
    assert len(read(env)) == 1024

    run(writer, "next", "ostree-1-test.conf", snap)  # ".conf" tolerated
    after = grubenv_list(env)
    assert after["next_entry"] == "ostree-1-test"
    assert after["ostreewatch_next_deployment"] == deployment_of(snap, "ostree-1-test")
    assert after["saved_entry"] == "ostree-2-test"

    run(writer, "default", "", snap)
    run(writer, "next", "", snap)
    assert grubenv_list(env) == before
    assert [r["result"] for r in journal.records] == ["granted"] * 4
    first = journal.records[0]
    assert first["method"] == "SetDefaultEntry" and first["entry"] == "ostree-2-test"
    assert first["deployment"] == deployment_of(snap, "ostree-2-test")
    assert first["previous"] == "" and first["new"] == "ostree-2-test" and first["bootloader"] == "grub2"
    assert (first["caller_uid"], first["caller_pid"], first["caller_bus_name"], first["caller_unit"]) == (
        0,
        4242,
        ":1.42",
        "test.scope",
    )
    assert journal.records[2]["previous"] == "ostree-2-test" and journal.records[2]["new"] == ""
    # no temporary file left behind
    assert not [n for n in os.listdir(os.path.dirname(env)) if n.startswith(TEMP_PREFIX)]


def test_grub_bytes_equal_grub_editenv(sysroot: str, tmp_path: Any) -> None:
    """Our block is byte for byte what grub-editenv itself writes for the same change."""
    env = seed_grub(sysroot)
    twin = str(tmp_path / "twin")
    with open(twin, "wb") as f:
        f.write(read(env))
    snap = snapshot_of(sysroot, "grub2")
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-3-test", snap)
    dep = deployment_of(snap, "ostree-3-test")
    subprocess.run(
        ["grub-editenv", twin, "set", "saved_entry=ostree-3-test", f"ostreewatch_saved_deployment={dep}"], check=True
    )
    assert read(env) == read(twin)


def test_grub_keeps_mode_and_owner(sysroot: str) -> None:
    env = seed_grub(sysroot)
    os.chmod(env, 0o600)
    os.chown(env, 0, 12)
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-1-test", snapshot_of(sysroot, "grub2"))
    st = os.stat(env)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 0, 12)


def test_grub_creates_missing_grubenv(sysroot: str) -> None:
    env = seed_grub(sysroot)
    os.unlink(env)
    writer = BootWriter(make_paths(sysroot), RecordingJournal())
    run(writer, "default", "", snapshot_of(sysroot, "grub2"))  # clearing writes nothing
    assert not os.path.exists(env)
    run(writer, "default", "ostree-1-test", snapshot_of(sysroot, "grub2"))
    assert grubenv_list(env)["saved_entry"] == "ostree-1-test"


def test_grub_legacy_boot_grub_dir(sysroot: str) -> None:
    env = seed_grub(sysroot, directory="boot/grub")
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-3-test", snapshot_of(sysroot, "grub2"))
    assert grubenv_list(env)["saved_entry"] == "ostree-3-test"


def test_grubenv_symlink_resolved_inside_sysroot(sysroot: str, tmp_path: Any) -> None:
    """grubenv -> /boot/efi/EFI/fedora/grubenv (absolute, as on older Fedora UEFI) is followed inside the sysroot."""
    env = seed_grub(sysroot)
    esp = os.path.join(sysroot, "boot/efi/EFI/fedora")
    os.makedirs(esp)
    os.rename(env, os.path.join(esp, "grubenv"))
    os.symlink("/boot/efi/EFI/fedora/grubenv", env)
    # The host's own path of that name must never be touched: make it a decoy the test can see.
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-2-test", snapshot_of(sysroot, "grub2"))
    assert os.path.islink(env)
    assert grubenv_list(os.path.join(esp, "grubenv"))["saved_entry"] == "ostree-2-test"


def test_grubenv_symlink_escaping_sysroot_stays_inside(sysroot: str, tmp_path: Any) -> None:
    env = seed_grub(sysroot)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.rename(env, str(outside / "seed"))
    # From SYSROOT/boot/grub2, ../../../outside is TMP/outside: above the sysroot, so clamped at its root.
    os.makedirs(os.path.join(sysroot, "outside"))
    os.rename(str(outside / "seed"), os.path.join(sysroot, "outside/grubenv"))
    os.symlink("../../../outside/grubenv", env)
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-2-test", snapshot_of(sysroot, "grub2"))
    assert not (outside / "grubenv").exists()
    assert grubenv_list(os.path.join(sysroot, "outside/grubenv"))["saved_entry"] == "ostree-2-test"


def test_grub_static_config_next_not_supported(sysroot: str) -> None:
    # SetDefaultEntry on a static grub.cfg reorders deployments instead (tests/test_setdefault.py, on a tmpfs).
    env = seed_grub(sysroot, cfg=GRUB_CFG_STATIC)
    before = read(env)
    journal = RecordingJournal()
    writer = BootWriter(make_paths(sysroot), journal)
    snap = snapshot_of(sysroot, "grub2")
    with pytest.raises(errors.NotSupported, match=r"next_entry.*would need a grub.cfg that reads"):
        run(writer, "next", "ostree-2-test", snap)
    assert read(env) == before
    # after authorization: "failed" (refused is for authorization refused only)
    assert [(r["result"], r["error"]) for r in journal.records] == [("failed", "org.ostreewatch1.Error.NotSupported")]


def test_grub_without_grub_cfg_not_supported(sysroot: str) -> None:
    env = seed_grub(sysroot)
    os.unlink(os.path.join(os.path.dirname(env), "grub.cfg"))
    before = read(env)
    with pytest.raises(errors.NotSupported, match="no grub.cfg"):
        run(
            BootWriter(make_paths(sysroot), RecordingJournal()),
            "default",
            "ostree-2-test",
            snapshot_of(sysroot, "grub2"),
        )
    assert read(env) == before


def test_grub_overflow_refused_file_untouched(sysroot: str) -> None:
    env = seed_grub(sysroot)
    big = "x" * (1024 - len(read(env).rstrip(b"#")) - len("filler=\n") - 4)
    assert subprocess.run(["grub-editenv", env, "set", f"filler={big}"]).returncode == 0
    before = read(env)
    journal = RecordingJournal()
    with pytest.raises(errors.WriteFailed, match="too small"):
        run(BootWriter(make_paths(sysroot), journal), "default", "ostree-2-test", snapshot_of(sysroot, "grub2"))
    assert read(env) == before
    assert grub_editenv_refuses_too(env)
    assert journal.records[-1]["result"] == "failed"
    assert journal.records[-1]["error"] == "org.ostreewatch1.Error.WriteFailed"


def grub_editenv_refuses_too(env: str) -> bool:
    """The oracle agrees: grub-editenv cannot store the same variables either (on a copy)."""
    copy = env + ".oracle"
    with open(copy, "wb") as f:
        f.write(read(env))
    out = subprocess.run(
        ["grub-editenv", copy, "set", "saved_entry=ostree-2-test", "ostreewatch_saved_deployment=" + "x" * 70],
        capture_output=True,
        text=True,
    )
    os.unlink(copy)
    return out.returncode != 0


def test_grub_malformed_grubenv_refused(sysroot: str) -> None:
    env = seed_grub(sysroot)
    with open(env, "wb") as f:
        f.write(b"not a grub environment block\n")
    with pytest.raises(errors.WriteFailed):
        run(
            BootWriter(make_paths(sysroot), RecordingJournal()),
            "default",
            "ostree-2-test",
            snapshot_of(sysroot, "grub2"),
        )
    assert read(env) == b"not a grub environment block\n"


# --- systemd-boot ------------------------------------------------------------------------


def test_systemd_boot_default_marked_by_bootctl(sysroot: str) -> None:
    conf = seed_loader_conf(sysroot)
    snap = snapshot_of(sysroot, "systemd-boot")
    boot = os.path.join(sysroot, "boot")
    assert bootctl_default(boot) == "ostree-3-test.conf"
    journal = RecordingJournal()
    run(BootWriter(make_paths(sysroot), journal), "default", "ostree-1-test", snap)
    assert bootctl_default(boot) == "ostree-1-test.conf"
    dep = deployment_of(snap, "ostree-1-test")
    assert read(conf).decode() == (
        "# systemd-boot configuration, hand-written\n"
        "timeout 5\n"
        "#console-mode keep\n"
        f"#ostreewatch-deployment {dep}\n"
        "default ostree-1-test.conf\n"
        "editor no\n"
    )
    assert journal.records[0]["previous"] == "ostree-3-test"
    run(BootWriter(make_paths(sysroot), journal), "default", "", snap)
    assert "default" not in read(conf).decode().replace("#console-mode", "")
    assert "#ostreewatch-deployment" not in read(conf).decode()


def test_systemd_boot_loader_conf_created(sysroot: str) -> None:
    snap = snapshot_of(sysroot, "systemd-boot")
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-2-test", snap)
    assert bootctl_default(os.path.join(sysroot, "boot")) == "ostree-2-test.conf"


def test_systemd_boot_next_not_supported_without_efivars(sysroot: str, tmp_path: Any) -> None:
    conf = seed_loader_conf(sysroot)
    before = read(conf)
    writer = BootWriter(make_paths(sysroot), RecordingJournal(), efivars=str(tmp_path / "no-efivars"))
    with pytest.raises(errors.NotSupported, match="LoaderEntryOneShot"):
        run(writer, "next", "ostree-2-test", snapshot_of(sysroot, "systemd-boot"))
    assert read(conf) == before


def test_bootloader_none_not_supported(sysroot: str) -> None:
    env = seed_grub(sysroot)
    before = read(env)
    with pytest.raises(errors.NotSupported, match="none"):
        run(
            BootWriter(make_paths(sysroot), RecordingJournal()),
            "default",
            "ostree-2-test",
            snapshot_of(sysroot, "none"),
        )
    assert read(env) == before


# --- who may, what is refused ------------------------------------------------------------

HOSTILE = [
    ("ostree-1-test\n", errors.InvalidArgs),
    ("ostree-1\0-test", errors.InvalidArgs),
    ("saved_entry=x", errors.InvalidArgs),
    ("../ostree-1-test", errors.InvalidArgs),
    ("..", errors.InvalidArgs),
    ("a/b", errors.InvalidArgs),
    ("ostree-1-test\udcff", errors.InvalidArgs),  # not UTF-8 (a surrogate escape)
    ("o" * 256, errors.InvalidArgs),
    ("é" * 128, errors.InvalidArgs),  # 256 bytes in UTF-8
    ("x" * 65536, errors.InvalidArgs),
    ("   ", errors.InvalidArgs),
    (" ostree-1-test", errors.InvalidArgs),
    ("ostree-1-test\t", errors.InvalidArgs),
    (".conf", errors.InvalidArgs),
    ("ostree-1-test\x1b[2J", errors.InvalidArgs),
    ("ostree-9-test", errors.NoSuchEntry),
    ("ostree", errors.NoSuchEntry),
]


@pytest.mark.parametrize("bootloader", ["grub2", "systemd-boot"])
def test_hostile_ids_refused_files_unchanged(sysroot: str, bootloader: str) -> None:
    env = seed_grub(sysroot)
    conf = seed_loader_conf(sysroot)
    before = (read(env), read(conf))
    journal = RecordingJournal()
    writer = BootWriter(make_paths(sysroot), journal)
    snap = snapshot_of(sysroot, bootloader)
    for which in ("default", "next"):
        for entry_id, error in HOSTILE:
            with pytest.raises(error):
                run(writer, which, entry_id, snap)
    assert (read(env), read(conf)) == before
    assert len(journal.records) == 2 * len(HOSTILE)
    for record, (_entry_id, error) in zip(journal.records, HOSTILE * 2):
        assert record["result"] == "invalid" and record["error"] == error.dbus_name
        assert len(record["entry"]) < 400 and "\n" not in record["entry"] and "\0" not in record["entry"]


def test_entry_glob_characters_refused_for_systemd_boot(sysroot: str) -> None:
    conf = seed_loader_conf(sysroot)
    before = read(conf)
    snap = snapshot_of(sysroot, "systemd-boot")
    snap = model.Snapshot(
        Bootloader="systemd-boot",
        BootEntries=snap.BootEntries + (model.BootEntry(id="ostree-*", file="ostree-*.conf"),),
    )
    with pytest.raises(errors.InvalidArgs, match="glob"):
        run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-*", snap)
    assert read(conf) == before


def test_entry_gone_from_disk_is_no_such_entry(sysroot: str) -> None:
    """The snapshot may be older than the disk: the entry is checked again under the lock."""
    env = seed_grub(sysroot)
    before = read(env)
    snap = snapshot_of(sysroot, "grub2")
    os.unlink(os.path.join(os.path.realpath(os.path.join(sysroot, "boot/loader")), "entries", "ostree-1-test.conf"))
    with pytest.raises(errors.NoSuchEntry, match="no longer"):
        run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-1-test", snap)
    assert read(env) == before


@pytest.mark.parametrize("caller", [NOBODY, model.Caller()])
def test_non_root_refused(sysroot: str, caller: model.Caller) -> None:
    env = seed_grub(sysroot)
    conf = seed_loader_conf(sysroot)
    before = (read(env), read(conf))
    journal = RecordingJournal()
    for bootloader in ("grub2", "systemd-boot"):
        for which in ("default", "next"):
            with pytest.raises(errors.AccessDenied):
                run(
                    BootWriter(make_paths(sysroot), journal),
                    which,
                    "ostree-1-test",
                    snapshot_of(sysroot, bootloader),
                    caller,
                )
    assert (read(env), read(conf)) == before
    assert all(
        r["result"] == "refused"
        and r["error"] == "org.freedesktop.DBus.Error.AccessDenied"
        and r["caller_uid"] == caller.uid
        for r in journal.records
    )


# --- the sysroot lock --------------------------------------------------------------------

OFD_HOLDER = r"""
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0))
print("locked", flush=True)
time.sleep(120)
"""


def wait_lock_free(lock: str) -> None:
    """Until the killed holders are gone (flock's forked child exits asynchronously)."""
    for _ in range(1000):
        probe = subprocess.run(["flock", "--nonblock", lock, "true"])
        if probe.returncode == 0:
            return
        time.sleep(0.01)
    raise AssertionError("the lock holder never went away")


@pytest.mark.parametrize("holder", ["flock", "ostree-ofd"])
def test_sysroot_lock_held_is_busy(sysroot: str, holder: str) -> None:
    """flock(1) holds it, or a process locking as ostree does (F_OFD_SETLK): Busy, nothing written."""
    env = seed_grub(sysroot)
    before = read(env)
    lock = os.path.join(sysroot, "ostree/lock")
    if holder == "flock":
        cmd = ["flock", "--nonblock", lock, "sh", "-c", "echo locked; exec sleep 120"]
    else:
        cmd = [sys.executable, "-c", OFD_HOLDER, lock]
    # Own process group: flock(1) forks the command, and the lock lives as long as either does.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        journal = RecordingJournal()
        with pytest.raises(errors.Busy, match="lock"):
            run(BootWriter(make_paths(sysroot), journal), "default", "ostree-2-test", snapshot_of(sysroot, "grub2"))
        assert read(env) == before
        assert journal.records[-1]["error"] == "org.ostreewatch1.Error.Busy"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_lock_free(lock)
    # released: the same call now succeeds
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", "ostree-2-test", snapshot_of(sysroot, "grub2"))
    assert grubenv_list(env)["saved_entry"] == "ostree-2-test"


def test_ostree_waits_for_our_lock(sysroot: str) -> None:
    """While we hold the lock, real `ostree admin` cannot take it (it uses the same file and lock kind)."""
    from ostreewatch.layout import take_sysroot_lock

    fd = take_sysroot_lock(sysroot)
    assert fd is not None
    try:
        # ostree_sysroot_try_lock is what `ostree admin undeploy` would block on; probe it non-blocking:
        probe = subprocess.run(
            [sys.executable, "-c", OFD_HOLDER.replace("time.sleep(120)", ""), os.path.join(sysroot, "ostree/lock")],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "Resource temporarily unavailable" in probe.stderr
    finally:
        os.close(fd)


# --- concurrency -------------------------------------------------------------------------


def test_twenty_concurrent_callers(sysroot: str) -> None:
    env = seed_grub(sysroot)
    snap = snapshot_of(sysroot, "grub2")
    ids = [e.id for e in snap.BootEntries]
    journal = RecordingJournal()
    writer = BootWriter(make_paths(sysroot), journal)
    requests = [("default" if i % 2 == 0 else "next", ids[i % len(ids)]) for i in range(20)]

    async def all_calls() -> list[Any]:
        return await asyncio.gather(*(writer.set_entry(w, e, ROOT, snap) for w, e in requests), return_exceptions=True)

    results = asyncio.run(all_calls())
    assert results == [None] * 20  # every call answered, none failed (serialized, not refused)
    final = grubenv_list(env)
    assert final["saved_entry"] in {e for w, e in requests if w == "default"}
    assert final["next_entry"] in {e for w, e in requests if w == "next"}
    assert len(read(env)) == 1024 and len(journal.records) == 20


def _concurrent_child(sysroot: str, entry: str, out_fd: int) -> None:
    """Child process: one writer of its own (as another daemon would be), one call."""
    writer = BootWriter(make_paths(sysroot), RecordingJournal())
    try:
        asyncio.run(writer.set_entry("default", entry, ROOT, snapshot_of(sysroot, "grub2")))
        os.write(out_fd, b"ok")
    except errors.Busy:
        os.write(out_fd, b"busy")


def test_twenty_concurrent_processes(sysroot: str) -> None:
    """20 writers in 20 processes at once: each answers ok or Busy; the file is one of the successful values."""
    env = seed_grub(sysroot)
    ids = [e.id for e in snapshot_of(sysroot, "grub2").BootEntries]
    children = []
    for i in range(20):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(r)
                _concurrent_child(sysroot, ids[i % 3], w)
            finally:
                os._exit(0)
        os.close(w)
        children.append((pid, r, ids[i % 3]))
    answers = []
    for pid, r, entry in children:
        with os.fdopen(r, "rb") as f:
            answers.append((f.read().decode(), entry))
        _, status = os.waitpid(pid, 0)
        assert status == 0
    assert {a for a, _ in answers} <= {"ok", "busy"}, answers
    assert "ok" in {a for a, _ in answers}
    assert grubenv_list(env)["saved_entry"] in {e for a, e in answers if a == "ok"}
    assert len(read(env)) == 1024
    print(
        f"20 concurrent processes: {sum(a == 'ok' for a, _ in answers)} ok, {sum(a == 'busy' for a, _ in answers)} busy"
    )


# --- crash safety ------------------------------------------------------------------------


def _writer_loop(path: str, blocks: list[bytes], ready_fd: int) -> None:
    """Child: write the blocks in turn, forever (until SIGKILL)."""
    i = 0
    while True:
        atomic_replace(path, blocks[i % len(blocks)])
        if i == 0:
            os.write(ready_fd, b"r")
        i += 1


def test_sigkill_during_writes_leaves_old_or_new(sysroot: str) -> None:
    """200 writers killed with SIGKILL at random points of a stream of writes: grubenv is always a whole block."""
    env = seed_grub(sysroot)
    seed = read(env)
    blocks = [
        update_grubenv(seed, {"saved_entry": f"ostree-{n}-test", "ostreewatch_saved_deployment": "d" * n})
        for n in (1, 2, 3)
    ]
    valid = set(blocks) | {seed}
    rng = random.Random(4)
    mid_write = 0
    for _ in range(200):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.close(r)
                _writer_loop(env, blocks, w)
            finally:
                os._exit(1)
        os.close(w)
        assert os.read(r, 1) == b"r"
        os.close(r)
        # busy-wait a random, short time so the kill lands anywhere in the write sequence
        for _ in range(rng.randrange(0, 20000)):
            pass
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert read(env) in valid
        leftovers = [n for n in os.listdir(os.path.dirname(env)) if n.startswith(TEMP_PREFIX)]
        mid_write += bool(leftovers)
        for name in leftovers:  # the next write would remove them too; keep runs independent
            os.unlink(os.path.join(os.path.dirname(env), name))
    env_vars = grubenv_list(env)
    assert env_vars["saved_entry"] in {"ostree-1-test", "ostree-2-test", "ostree-3-test"}
    assert env_vars["kernelopts"] == SEED_VARS[2].split("=", 1)[1]
    # Evidence the kills did land inside writes (a temp file existed), not only between them.
    print(f"kills that interrupted a write (temp file left): {mid_write}/200")
    assert mid_write > 0


def test_sigkill_of_helper_process(sysroot: str) -> None:
    """The real helper process (private mount namespace) killed at random times: old or new, never torn."""
    env = seed_grub(sysroot)
    old = read(env)
    new = update_grubenv(old, {"saved_entry": "ostree-1-test"})
    import base64
    import json

    request = json.dumps({"path": env, "data": base64.b64encode(new).decode(), "expect": None}).encode()
    rng = random.Random(7)
    outcomes = {"old": 0, "new": 0}
    for _ in range(30):
        with open(env, "wb") as f:
            f.write(old)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ostreewatch._writehelper"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(request)
        proc.stdin.close()
        try:
            proc.wait(timeout=rng.uniform(0.0, 0.25))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        data = read(env)
        assert data in (old, new)
        outcomes["old" if data == old else "new"] += 1
        grubenv_list(env)
    print(f"helper kill outcomes: {outcomes}")


# --- read-only /boot ---------------------------------------------------------------------

READ_ONLY_SCRIPT = r"""
import asyncio, json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ostreewatch import model
from ostreewatch.bootplan import validate_id
from ostreewatch.bootwrite import BootWriter
from tests.fixtures.bootwrite import RecordingJournal, make_paths, snapshot_of
sysroot, mode, bootloader = sys.argv[2], sys.argv[3], sys.argv[4]
boot = os.path.join(sysroot, "boot")
def sh(*cmd):
    subprocess.run(cmd, check=True)
if mode == "bind":
    # a read-only bind mount: the per-mount flag is ro, the filesystem itself is rw
    sh("mount", "--bind", boot, boot)
    sh("mount", "-o", "remount,bind,ro", boot)
else:
    # a read-only filesystem (superblock ro, as FCOS mounts /boot): a tmpfs holding a copy
    sh("cp", "-a", boot, boot + ".copy")
    sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", boot)
    sh("cp", "-a", boot + ".copy/.", boot)
    sh("mount", "-o", "remount,ro", boot)
ro_before = bool(os.statvfs(boot).f_flag & os.ST_RDONLY)
try:
    open(os.path.join(boot, "probe"), "w")
    probe = "writable"
except OSError as e:
    probe = e.strerror
asyncio.run(BootWriter(make_paths(sysroot), RecordingJournal()).set_entry(
    "default", "ostree-2-test", model.Caller(uid=0), snapshot_of(sysroot, bootloader)))
findmnt = subprocess.run(["findmnt", "-n", "-o", "VFS-OPTIONS,FS-OPTIONS", "--target", boot],
                         capture_output=True, text=True).stdout.strip()
target = os.path.join(boot, "grub2/grubenv") if bootloader == "grub2" else os.path.join(
    os.path.realpath(os.path.join(boot, "loader")), "loader.conf")
listing = subprocess.run(["grub-editenv", target, "list"], capture_output=True, text=True).stdout \
    if bootloader == "grub2" else open(target).read()
print(json.dumps({"ro_before": ro_before, "probe": probe, "findmnt": findmnt,
                  "ro_after": bool(os.statvfs(boot).f_flag & os.ST_RDONLY), "content": listing}))
"""


@pytest.mark.parametrize("mode", ["bind", "fs"])
@pytest.mark.parametrize("bootloader", ["grub2", "systemd-boot"])
def test_read_only_boot_written_through_private_namespace(sysroot: str, mode: str, bootloader: str) -> None:
    """/boot read-only in a private mount namespace: the write succeeds, that mount stays read-only."""
    env = seed_grub(sysroot)
    seed_loader_conf(sysroot)
    out = subprocess.run(
        [
            *PRIVATE_MOUNT_NS,
            sys.executable,
            "-c",
            READ_ONLY_SCRIPT,
            REPO,
            sysroot,
            mode,
            bootloader,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ro_before"] and result["probe"] == "Read-only file system"
    assert result["ro_after"], result
    assert result["findmnt"].split(",")[0] == "ro", result["findmnt"]
    if bootloader == "grub2":
        assert "saved_entry=ostree-2-test" in result["content"].splitlines()
        assert "boot_success=1" in result["content"].splitlines()
        if mode == "bind":  # the same directory, seen from the host: written there too
            assert grubenv_list(env)["saved_entry"] == "ostree-2-test"
    else:
        assert "default ostree-2-test.conf" in result["content"].splitlines()
        assert "timeout 5" in result["content"].splitlines()


def test_systemd_boot_loader_conf_on_separate_esp(sysroot: str) -> None:
    """An ESP at /boot/efi holds the loader.conf systemd-boot reads: that file is the one rewritten."""
    esp_conf = os.path.join(sysroot, "boot/efi/loader/loader.conf")
    os.makedirs(os.path.dirname(esp_conf))
    with open(esp_conf, "w") as f:
        f.write("timeout 3\ndefault ostree-3-test.conf\n")
    run(
        BootWriter(make_paths(sysroot), RecordingJournal()),
        "default",
        "ostree-1-test",
        snapshot_of(sysroot, "systemd-boot"),
    )
    assert read(esp_conf).decode().endswith("default ostree-1-test.conf\n")
    assert not os.path.exists(os.path.join(os.path.realpath(os.path.join(sysroot, "boot/loader")), "loader.conf"))


# --- odd but valid ids -------------------------------------------------------------------

ODD_IDS = ["with space", "back\\slash", "hash#mark", "dollar$x", "ünïcødé-ëntry", "semi;colon", 'quote"d', "x" * 250]


@pytest.mark.parametrize("odd", ODD_IDS)
def test_odd_entry_ids_read_back_by_grub_editenv(sysroot: str, odd: str) -> None:
    """Values are escaped exactly as grub escapes them: grub-editenv reads back the very id."""
    env = seed_grub(sysroot)
    entries = os.path.join(os.path.realpath(os.path.join(sysroot, "boot/loader")), "entries")
    with open(os.path.join(entries, odd + ".conf"), "w") as f:
        f.write("title odd\nlinux /vmlinuz\n")
    snap = snapshot_of(sysroot, "grub2")
    run(BootWriter(make_paths(sysroot), RecordingJournal()), "default", odd, snap)
    assert grubenv_list(env)["saved_entry"] == odd
    assert "ostreewatch_saved_deployment" not in grubenv_list(env)  # not an ostree entry: no deployment


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=300))
def test_validate_id_property(text: str) -> None:
    """Any text: either InvalidArgs, or an id free of every forbidden thing (never another exception)."""
    try:
        stem = validate_id(text)
    except errors.InvalidArgs:
        return
    if text == "":
        assert stem == ""
        return
    raw = stem.encode("utf-8")
    assert 0 < len(raw) <= 255
    assert not any(c in stem for c in "\n\0=/") and ".." not in stem
    assert stem == stem.strip() and stem.isprintable()
    assert text in (stem, stem + ".conf")


# --- renumbering: the recorded deployment, and the problem when it moves ---------------------

UNDEPLOY = 'export OSTREE_SYSROOT_DEBUG=mutable-deployments; ostree admin undeploy --sysroot="$1" "$2" >/dev/null'


@pytest.mark.parametrize("bootloader", ["grub2", "systemd-boot"])
def test_renumbering_publishes_default_entry_moved(sysroot: str, bootloader: str) -> None:
    """Choose ostree-1-test, let real ostree undeploy the oldest: ostree-1-test now means another deployment."""
    from ostreewatch.state import Paths, read_snapshot

    if bootloader == "grub2":
        seed_grub(sysroot)
    else:
        seed_loader_conf(sysroot)
    paths = Paths(sysroot=sysroot)
    before = read_snapshot(paths)
    assert before.Bootloader == bootloader
    run(BootWriter(paths, RecordingJournal()), "default", "ostree-1-test", before)
    chosen = read_snapshot(paths)
    assert chosen.DefaultEntry == "ostree-1-test"
    assert not [p for p in chosen.Problems if p.code == "default-entry-moved"]
    meant = deployment_of(chosen, "ostree-1-test")

    oldest_index = len(chosen.Deployments) - 1  # ostree-1-OS is always the last deployment
    subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", UNDEPLOY, "sh", sysroot, str(oldest_index)],
        check=True,
        timeout=120,
    )
    after = read_snapshot(paths)
    if bootloader == "systemd-boot":
        # ostree built a fresh loader.N: the loader.conf inside the old one is gone (docs/default-entry.md)
        assert not os.path.exists(os.path.join(os.path.realpath(os.path.join(sysroot, "boot/loader")), "loader.conf"))
        assert not [p for p in after.Problems if p.code == "default-entry-moved"]
        return
    assert deployment_of(after, "ostree-1-test") != meant
    moved = [p for p in after.Problems if p.code == "default-entry-moved"]
    assert [p.subject for p in moved] == ["ostree-1-test"]
    assert after.DefaultEntry == "ostree-1-test"  # not rewritten behind the admin's back
