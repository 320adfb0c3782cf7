"""bootstore: the boot records file, round trip, bound, torn and corrupt files, restarts in one boot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ostreewatch import bootstore
from ostreewatch.bootoutcome import BootFacts, Expectation


def boots_of(n: int) -> list[bootstore.StoredBoot]:
    boots: list[bootstore.StoredBoot] = []
    for i in range(n):
        boots, _, _ = bootstore.begin_boot(boots, BootFacts(boot_id=f"b{i}", booted_entry="ostree-1", timestamp=i))
        boots = bootstore.with_expectation(boots, Expectation(boot_id=f"b{i}", expected_entry="ostree-1"))
    return boots


def test_round_trip_and_judgement_chain(tmp_path: Path) -> None:
    boots = boots_of(3)
    assert [b.record.boot_id for b in boots] == ["b2", "b1", "b0"]
    assert [b.record.outcome for b in boots] == ["default", "default", "first-record"]
    assert boots[0].record.previous_boot_id == "b1"
    bootstore.save(str(tmp_path), boots)
    assert bootstore.load(str(tmp_path)) == bootstore.Loaded(boots)
    assert oct(os.stat(tmp_path / "boots").st_mode & 0o777) == "0o644"


def test_bounded_to_the_last_32_boots(tmp_path: Path) -> None:
    boots = boots_of(40)
    assert len(boots) == bootstore.MAX_BOOTS
    bootstore.save(str(tmp_path), boots)
    loaded = bootstore.load(str(tmp_path)).boots
    assert [b.record.boot_id for b in loaded] == [f"b{i}" for i in range(39, 7, -1)]


def test_restart_in_the_same_boot_judges_nothing() -> None:
    boots = boots_of(2)
    again, record, new = bootstore.begin_boot(boots, BootFacts(boot_id="b1", booted_entry="ostree-9"))
    assert not new and again == boots and record == boots[0].record
    with pytest.raises(ValueError):
        bootstore.with_expectation(boots, Expectation(boot_id="b0"))


def test_no_file_is_a_fresh_start(tmp_path: Path) -> None:
    assert bootstore.load(str(tmp_path)) == bootstore.Loaded([])


def test_every_torn_prefix_and_every_flipped_byte_is_corrupt() -> None:
    data = bootstore.encode(boots_of(2))
    for n in range(len(data)):
        with pytest.raises(bootstore.BootStoreCorrupt):
            bootstore.decode(data[:n])
    for i in range(0, len(data), 7):
        altered = bytearray(data)
        altered[i] ^= 0x01
        with pytest.raises(bootstore.BootStoreCorrupt):
            bootstore.decode(bytes(altered))


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 4096,
        b"garbage\n{}",
        # A header whose checksum is not the content's.
        bootstore.MAGIC + b"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\n{}",
    ],
)
def test_corrupt_file_is_set_aside_and_reported(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "boots").write_bytes(content)
    loaded = bootstore.load(str(tmp_path))
    assert loaded.boots == [] and loaded.corrupt
    assert not (tmp_path / "boots").exists()
    assert (tmp_path / "boots.corrupt").read_bytes() == content


def test_valid_checksum_but_malformed_json_is_corrupt() -> None:
    import hashlib

    for body in (b'{"boots": 3}\n', b'{"boots": [{"record": {}}]}\n', b"[1]\n"):
        data = bootstore.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
        with pytest.raises(bootstore.BootStoreCorrupt):
            bootstore.decode(data)


def test_a_symlink_a_fifo_a_directory_or_a_huge_file_is_not_read(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(bootstore.encode(boots_of(1)))
    for make in (
        lambda p: p.symlink_to(target),
        lambda p: os.mkfifo(p),
        lambda p: p.write_bytes(b"x" * (bootstore.MAX_SIZE + 1)),
    ):
        d = tmp_path / "d"
        d.mkdir()
        make(d / "boots")
        loaded = bootstore.load(str(d))
        assert loaded.boots == [] and loaded.corrupt, loaded
        assert (d / "boots.corrupt").exists() or (d / "boots.corrupt").is_symlink()
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


KILLER = """
import sys
from ostreewatch import bootstore
from ostreewatch.bootoutcome import BootFacts, Expectation
d = sys.argv[1]
boots, _, _ = bootstore.begin_boot([], BootFacts(boot_id="k"))
i = 0
while True:
    i += 1
    boots = bootstore.with_expectation(boots, Expectation(boot_id="k", expected_entry=f"ostree-{i}"))
    bootstore.save(d, boots)
    if i == 20:
        print("saving", flush=True)
"""


def test_sigkill_during_saves_leaves_a_readable_expectation(tmp_path: Path) -> None:
    """A kill at any moment leaves the old or the new file (a process kill; power cuts: the VM rig)."""
    for _ in range(5):
        p = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path)], stdout=subprocess.PIPE)
        assert p.stdout is not None
        assert p.stdout.readline() == b"saving\n"
        p.send_signal(signal.SIGKILL)
        p.wait()
        loaded = bootstore.load(str(tmp_path))
        assert loaded.corrupt == ""
        exp = loaded.boots[0].expectation
        assert exp is not None and exp.expected_entry.startswith("ostree-")
