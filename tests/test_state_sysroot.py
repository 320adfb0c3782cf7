"""ostreewatch.sysroot.Root: confined like chroot, never blocking, capped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ostreewatch.errors import SysrootError
from ostreewatch.sysroot import MAX_LINKS, ReadRefused, Root, read_host_file


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with a/b/file, links of every kind, and a secret outside root/."""
    (tmp_path / "secret").write_text("outside")
    r = tmp_path / "root"
    (r / "a" / "b").mkdir(parents=True)
    (r / "a" / "b" / "file").write_text("inside")
    (r / "secret").write_text("inside-secret")
    os.symlink("/a/b", r / "abs")  # absolute: from root/
    os.symlink("../../../../../../secret", r / "a" / "up")  # .. stops at root/
    os.symlink(str(tmp_path / "secret"), r / "host")  # a host path: read inside root/
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    os.symlink("missing", r / "dangling")
    return r


def test_links_resolve_inside_the_root(tree: Path) -> None:
    root = Root(str(tree))
    assert root.resolve("abs/file") == "a/b/file"
    assert root.read("/abs/file") == b"inside"
    assert root.resolve("a/up") == "secret"
    assert root.read("a/up") == b"inside-secret"  # never the file outside
    assert root.resolve("../../..") == ""
    with pytest.raises(ReadRefused) as e:
        root.read("host")
    assert e.value.reason == ReadRefused.NOT_FOUND
    assert root.readlink("dangling") == "missing" and root.exists("dangling") and root.stat("dangling") is None


def test_loops_and_long_chains(tree: Path) -> None:
    root = Root(str(tree))
    with pytest.raises(ReadRefused) as e:
        root.resolve("loop1")
    assert e.value.reason == ReadRefused.LOOP
    # A long chain below the limit is fine; above it is a loop.
    for i in range(MAX_LINKS + 1):
        os.symlink(f"c{i + 1}" if i < MAX_LINKS else "a/b/file", tree / f"c{i}")
    assert root.read(f"c{MAX_LINKS - 39}") == b"inside"
    with pytest.raises(ReadRefused) as e:
        root.read("c0")
    assert e.value.reason == ReadRefused.LOOP


@pytest.mark.timeout(30)
def test_special_files_are_refused_without_blocking(tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    os.mknod(tree / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    root = Root(str(tree))
    for name in ("fifo", "null", "a"):
        with pytest.raises(ReadRefused) as e:
            root.read(name)
        assert e.value.reason == ReadRefused.NOT_REGULAR
    with pytest.raises(ReadRefused):
        read_host_file(str(tree / "fifo"), 100)


def test_sizes_are_capped(tree: Path) -> None:
    with open(tree / "big", "wb") as f:
        f.truncate(10 * 1024 * 1024 * 1024)  # sparse 10 GiB
    (tree / "small").write_bytes(b"x" * 100)
    root = Root(str(tree))
    with pytest.raises(ReadRefused) as e:
        root.read("big", 1024)
    assert e.value.reason == ReadRefused.TOO_BIG
    assert root.read("small", 100) == b"x" * 100
    with pytest.raises(ReadRefused):
        root.read("small", 99)
    # /proc files claim size 0: the cap holds while reading.
    assert len(read_host_file("/proc/self/mountinfo", 1 << 20)) > 0
    with pytest.raises(ReadRefused) as e:
        read_host_file("/proc/self/mountinfo", 10)
    assert e.value.reason == ReadRefused.TOO_BIG


def test_not_a_directory_and_bad_roots(tree: Path) -> None:
    root = Root(str(tree))
    with pytest.raises(ReadRefused) as e:
        root.read("a/b/file/x")
    assert e.value.reason == ReadRefused.NOT_DIR
    assert root.listdir("a") == ["b", "up"]
    with pytest.raises(SysrootError):
        Root(str(tree / "a" / "b" / "file"))
    with pytest.raises(SysrootError):
        Root(str(tree / "nope"))
