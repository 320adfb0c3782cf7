"""The cached newer trees run their own programs, and a run never changes a tree."""

from __future__ import annotations

import os

from tests.fixtures import trees


def test_tree_versions_are_the_newer_ostree() -> None:
    # The oracles only mean something when they are newer than Debian 12's 2022.7.
    sid = trees.ostree_version(trees.SID)
    trixie = trees.ostree_version(trees.TRIXIE)
    assert tuple(int(x) for x in trixie.split(".")) >= (2025, 2)
    assert tuple(int(x) for x in sid.split(".")) >= (2026, 1)


def test_run_leaves_the_tree_unchanged_and_binds_host_dirs(tmp_path) -> None:
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in").write_text("from the host\n")
    root = trees.tree_root(trees.SID)
    before = sorted(os.listdir(os.path.join(root, "etc")))
    proc = trees.run_in_tree(
        trees.SID,
        [
            "sh",
            "-c",
            "cat /mnt/shared/in; echo made > /mnt/shared/out; touch /etc/ostreewatch-was-here; mkdir -p /new/dir",
        ],
        binds={str(host): "/mnt/shared"},
    )
    assert proc.stdout == "from the host\n"
    assert (host / "out").read_text() == "made\n"
    assert sorted(os.listdir(os.path.join(root, "etc"))) == before
    assert not os.path.exists(os.path.join(root, "new"))


def test_userns_run_is_root_of_a_user_namespace_only() -> None:
    inside = trees.run_in_tree(trees.TRIXIE, ["cat", "/proc/self/uid_map"]).stdout.split()
    assert inside[:3] == ["0", "0", "1"]  # uid 0 mapped alone: a user namespace
    real = trees.run_in_tree(trees.TRIXIE, ["cat", "/proc/self/uid_map"], userns=False).stdout.split()
    assert real[:3] == ["0", "0", "4294967295"]


def test_own_tmpfs_is_a_mount_of_its_own(tmp_path) -> None:
    with trees.own_tmpfs(tmp_path / "fs") as path:
        assert os.path.ismount(path)
        assert os.stat(path).st_dev != os.stat(str(tmp_path)).st_dev
    assert not os.path.exists(tmp_path / "fs")
