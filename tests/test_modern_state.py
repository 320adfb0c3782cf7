"""The reader on sysroots written by ostree 2022.7, 2025.2 and 2026.4, with ostree 2026.4 as the oracle.

Every sysroot here is written by the real ostree of its version (the machine's
Debian 12 one, or the trixie / sid tree of tests/fixtures/trees.py) on a tmpfs of
its own; `ostree admin status --json` of ostree 2026.4 says what is the default,
pinned, booted, pending and rollback.
"""

from __future__ import annotations

import os
import re

import pytest

from ostreewatch import state
from ostreewatch.parse import bls
from tests.fixtures import trees
from tests.fixtures.modern import VERSIONS, ModernSysroot, boot_prepare_root, modern_sysroot, status_json

ALL = sorted(VERSIONS)


def _json_id(d: dict) -> str:
    return f"{d['stateroot']}-{d['checksum']}.{d['serial']}"


def test_trees_hold_the_versions_the_tests_are_named_after() -> None:
    """The parametrization's labels are honest: each tree's ostree is the version it stands for."""
    for version, tree in VERSIONS.items():
        if tree is not None:
            assert trees.ostree_version(tree) == version


@pytest.mark.parametrize("version", ALL)
def test_entry_file_names_as_each_version_writes_them(modern_sysroot, version: str) -> None:
    sr: ModernSysroot = modern_sysroot(version)
    sr.build(3)
    files = sr.entry_files()
    # ostree >= 2024.5 dropped the -OSNAME suffix (ostreedev/ostree src/libostree/ostree-sysroot-deploy.c,
    # install_deployment_kernel: "ostree-%d.conf" unless sysroot.bls-append-except-default / opt-out).
    pattern = r"ostree-[0-9]+-fedora\.conf" if version == "2022.7" else r"ostree-[0-9]+\.conf"
    assert all(re.fullmatch(pattern, f) for f in files), files
    snap = state.read_snapshot(sr.paths())
    assert sorted(e.file for e in snap.BootEntries) == files
    for e in snap.BootEntries:
        assert e.id == e.file[: -len(".conf")]


@pytest.mark.parametrize("version", ALL)
def test_deployments_agree_with_ostree_2026_status_json(modern_sysroot, version: str) -> None:
    sr: ModernSysroot = modern_sysroot(version)
    sr.build(3)
    sr.pin(1)
    oracle = status_json(sr.path)
    snap = state.read_snapshot(sr.paths())
    ordered = [d for d in snap.Deployments if d.index >= 0]
    assert [d.id for d in ordered] == [_json_id(d) for d in oracle]
    assert [d.index for d in ordered] == [d["index"] for d in oracle]
    assert [d.pinned for d in ordered] == [d["pinned"] for d in oracle]
    assert [d.version for d in ordered] == [d.get("version", "") for d in oracle]
    assert [d.origin for d in ordered] == [d["refspec"] for d in oracle]
    # Not booted: ostree marks nothing booted, pending or rollback; the default is index 0.
    assert not any(d["booted"] or d["pending"] or d["rollback"] for d in oracle)
    assert snap.BootedDeployment == "" and not snap.OstreeBooted
    assert snap.DefaultDeployment == _json_id(oracle[0])
    # The entry of each deployment is the one whose ostree= resolves to its directory.
    for d in ordered:
        entry = next(e for e in snap.BootEntries if e.id == d.entry)
        target = os.path.realpath(sr.path + entry.ostree)
        assert target == os.path.realpath(
            os.path.join(sr.path, "ostree/deploy", d.osname, "deploy", f"{d.checksum}.{d.serial}")
        )
    assert snap.Problems == ()


@pytest.mark.parametrize("version", ALL)
def test_each_version_own_status_agrees(modern_sysroot, version: str) -> None:
    """The writer's own `ostree admin status` (text) agrees with the reader too, after an undeploy."""
    sr: ModernSysroot = modern_sysroot(version)
    sr.build(4)
    sr.undeploy(2)
    own = sr.admin_status()
    snap = state.read_snapshot(sr.paths())
    assert [d.id for d in snap.Deployments] == [d.id for d in own]
    assert [d.version for d in snap.Deployments] == [d.version for d in own]
    assert len(sr.entry_files()) == 3


@pytest.mark.parametrize("version", ALL)
def test_host_view_paths(modern_sysroot, version: str) -> None:
    """Deployment.path is the path as the host sees it (new contract of issue 9; fails before the reader change)."""
    sr: ModernSysroot = modern_sysroot(version)
    sr.build(2)
    snap = state.read_snapshot(sr.paths())
    for d in snap.Deployments:
        assert d.path == f"/ostree/deploy/{d.osname}/deploy/{d.checksum}.{d.serial}"


@pytest.mark.parametrize("version", ALL)
def test_booted_pending_rollback_agree_with_ostree_in_the_booted_host(modern_sysroot, tmp_path, version: str) -> None:
    """Booted into the middle deployment by ostree-prepare-root (2026.4) on each version's sysroot.

    The oracle is `ostree admin status --json` (2026.4) run inside that booted host: the
    middle deployment is booted, the first pending, the last the rollback.
    """
    sr: ModernSysroot = modern_sysroot(version)
    sr.build(3)
    snap0 = state.read_snapshot(sr.paths())
    middle = next(e for e in snap0.BootEntries if e.deployment == snap0.Deployments[1].id)
    boot = boot_prepare_root(sr, middle.file, tmp_path / "boot", composefs=False)
    oracle = boot.status
    snap = state.read_snapshot(
        state.Paths(sysroot=sr.path, mountinfo=boot.mountinfo, cmdline=boot.cmdline, run=boot.run)
    )
    booted = [_json_id(d) for d in oracle if d["booted"]]
    pending = [_json_id(d) for d in oracle if d["pending"]]
    rollback = [_json_id(d) for d in oracle if d["rollback"]]
    assert len(booted) == len(pending) == len(rollback) == 1
    assert snap.BootedDeployment == booted[0]
    assert snap.DefaultDeployment == pending[0]  # pending = the default, not booted
    assert snap.RollbackDeployment == rollback[0]
    assert snap.BootedEntry == middle.id


@pytest.mark.parametrize("version", ALL)
def test_pending_update_is_no_problem(modern_sysroot, tmp_path, version: str) -> None:
    """Booted into the previous deployment after an update: no problem (issue 9 retires booted-not-default)."""
    sr: ModernSysroot = modern_sysroot(version)
    sr.build(2)
    snap0 = state.read_snapshot(sr.paths())
    old = next(e for e in snap0.BootEntries if e.deployment == snap0.Deployments[1].id)
    boot = boot_prepare_root(sr, old.file, tmp_path / "boot", composefs=False)
    snap = state.read_snapshot(
        state.Paths(sysroot=sr.path, mountinfo=boot.mountinfo, cmdline=boot.cmdline, run=boot.run)
    )
    assert [d["pending"] for d in boot.status] == [True, False]
    assert snap.Problems == ()


def test_boot_counting_names_of_ostree_2026(modern_sysroot) -> None:
    """sysroot.boot-counting-tries (ostree >= 2025.3): new entries NAME+T.conf, kept ones NAME+T-0.conf.

    ostreedev/ostree src/libostree/ostree-sysroot-deploy.c writes the counter into the
    file name; the reader's ids drop it (systemd's boot counting, bls.split_boot_counting)
    and tries_left is the counter.
    """
    sr: ModernSysroot = modern_sysroot("2026.4")
    sr.init("fedora")
    sr.config_set("sysroot.boot-counting-tries", "3")
    sr.build(3)
    files = sr.entry_files()
    assert all(re.fullmatch(r"ostree-[0-9]+\+3(-0)?\.conf", f) for f in files), files
    snap = state.read_snapshot(sr.paths())
    assert sorted(e.file for e in snap.BootEntries) == files
    for e in snap.BootEntries:
        name, left, _ = bls.split_boot_counting(e.file)
        assert (e.id, e.tries_left) == (name, left) == (e.file.split("+")[0], 3)
    oracle = status_json(sr.path)
    assert [d.id for d in snap.Deployments] == [_json_id(d) for d in oracle]
    assert snap.DefaultDeployment == _json_id(oracle[0])
    assert snap.Problems == ()


def test_a_missing_tree_fails_the_run_never_skips(tmp_path) -> None:
    """With the sid tree absent, a modern test fails (naming scripts/setup-test-env.sh); it is not skipped."""
    import subprocess
    import sys

    env = dict(os.environ, OSTREEWATCH_SID_ROOT=str(tmp_path / "no-such-tree"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "tests/test_modern_state.py::test_boot_counting_names_of_ostree_2026",
        ],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "1 failed" in proc.stdout and "skipped" not in proc.stdout
    assert "setup-test-env.sh" in proc.stdout
