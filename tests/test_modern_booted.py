"""Real booted layouts: ostree-prepare-root (ostree-boot 2026.4) run against a real sysroot, then read.

What is real: the sysroot (ostree 2026.4 wrote it, `.ostree.cfs` included), the mounts
ostree-prepare-root makes (the composefs overlay from an erofs image, or the legacy
bind mounts), /run/ostree-booted as it writes it, and `ostree admin status --json`
run inside the booted view as the oracle.

What cannot run here and is reconstructed (tests/fixtures/modern.py, boot_prepare_root):
- the initramfs: a scratch root on tmpfs with the sid tree's /usr, in a private mount
  and pid namespace, a bind-mounted fake /proc/cmdline holding the entry's options;
- switch-root: /run, /proc and /dev are moved into /sysroot and the mount table is read
  by a process chrooted there (systemd's switch-root moves /sysroot to / and chroots);
- what systemd mounts after switch-root: /boot from fstab (a bind of the sysroot's boot/)
  and /var as ostreedev/ostree src/libostree/ostree-impl-system-generator.c's var.mount;
- a firmware and a kernel: none; the booted "kernel command line" is the fake one.
ostree-prepare-root itself is ostreedev/ostree src/switchroot/ostree-prepare-root.c;
the keys of /run/ostree-booted are src/libotcore/otcore.h's OTCORE_RUN_BOOTED_KEY_*.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from ostreewatch import state
from ostreewatch.parse import mountinfo as mountinfo_parse
from tests.fixtures.modern import ModernSysroot, boot_prepare_root, modern_sysroot, status_json

# /run/ostree-booted's keys (ostree src/libotcore/otcore.h); the contract's BootedRoot key is each
# one in snake_case (stated here independently of ostreewatch/model.py, so a wrong mapping fails).
OTCORE_KEYS = (
    "composefs",
    "composefs.verity",
    "composefs.signed",
    "root.transient",
    "root.transient-ro",
    "sysroot-ro",
    "transient-etc",
)
BOOTED_ROOT_KEYS = {k: k.replace(".", "_").replace("-", "_") for k in OTCORE_KEYS}


def _json_id(d: dict[str, Any]) -> str:
    return f"{d['stateroot']}-{d['checksum']}.{d['serial']}"


def _paths(sr: ModernSysroot, boot) -> state.Paths:
    return state.Paths(sysroot=sr.path, mountinfo=boot.mountinfo, cmdline=boot.cmdline, run=boot.run)


def _mounts(boot) -> dict[str, mountinfo_parse.MountInfo]:
    infos, errors = mountinfo_parse.parse_mountinfo(boot.mountinfo_text.encode())
    assert errors == ()
    return {m.mount_point: m for m in infos}


def _built(modern_sysroot) -> ModernSysroot:
    sr: ModernSysroot = modern_sysroot("2026.4")
    sr.build(3)
    return sr


@pytest.mark.parametrize("composefs", [True, False], ids=["composefs", "legacy-bind"])
def test_booted_default_deployment(modern_sysroot, tmp_path, composefs: bool) -> None:
    """Boot the default entry: BootedDeployment and BootedEntry as ostree says, no problem at all."""
    sr = _built(modern_sysroot)
    snap0 = state.read_snapshot(sr.paths())
    entry = next(e for e in snap0.BootEntries if e.default)
    boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=composefs)
    mounts = _mounts(boot)
    if composefs:
        # What makes composefs hosts different (ostree-prepare-root.c): "/" is an overlay whose
        # root is "/", not the deployment; no /usr mount; /sysroot read-only.
        assert mounts["/"].fstype == "overlay" and mounts["/"].source == "composefs"
        assert mounts["/"].root == "/"
        assert "/usr" not in mounts
        assert "ro" in mounts["/sysroot"].options.split(",")
    else:
        assert mounts["/"].root.startswith("/ostree/deploy/fedora/deploy/")
        assert "ro" in mounts["/usr"].options.split(",")
    snap = state.read_snapshot(_paths(sr, boot))
    booted = [_json_id(d) for d in boot.status if d["booted"]]
    assert snap.OstreeBooted
    assert [snap.BootedDeployment] == booted
    assert snap.BootedEntry == entry.id
    assert snap.DefaultDeployment == booted[0]
    assert snap.RollbackDeployment == next(_json_id(d) for d in boot.status if d["rollback"])
    assert "/usr" not in {m.mount_point for m in snap.Mounts} if composefs else True
    assert snap.Problems == ()


def test_composefs_booted_found_by_inode_only(modern_sysroot, tmp_path) -> None:
    """On composefs only /run/ostree-booted's backing-root-device-inode names the deployment.

    Without it (and with a command line that names nothing), the reader cannot tell:
    the mount table holds no deployment path for "/".
    """
    sr = _built(modern_sysroot)
    snap0 = state.read_snapshot(sr.paths())
    entry = snap0.BootEntries[1]
    boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=True)
    dev, ino = boot.booted_keys["backing-root-device-inode"]
    st = os.stat(
        os.path.join(
            sr.path,
            "ostree/deploy/fedora/deploy",
            next(d for d in snap0.Deployments if d.id == entry.deployment).checksum + ".0",
        )
    )
    assert (st.st_dev, st.st_ino) == (dev, ino)
    snap = state.read_snapshot(_paths(sr, boot))
    assert snap.BootedDeployment == entry.deployment
    # The same layout with the kernel command line emptied: still found (inode), not by ostree=.
    with open(boot.cmdline, "w") as f:
        f.write("quiet\n")
    snap = state.read_snapshot(_paths(sr, boot))
    assert snap.BootedDeployment == entry.deployment


@pytest.mark.parametrize("composefs", [True, False], ids=["composefs", "legacy-bind"])
def test_booted_root_published(modern_sysroot, tmp_path, composefs: bool) -> None:
    """BootedRoot (issue 9 contract) carries /run/ostree-booted as GLib decodes it (fails before the reader change)."""
    sr = _built(modern_sysroot)
    entry = state.read_snapshot(sr.paths()).BootEntries[0]
    boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=composefs)
    keys = boot.booted_keys
    expected: dict[str, Any] = {BOOTED_ROOT_KEYS[k]: v for k, v in keys.items() if k in BOOTED_ROOT_KEYS}
    dev, ino = keys["backing-root-device-inode"]
    expected["backing_device"] = dev
    expected["backing_inode"] = ino
    assert ("composefs" in keys) == composefs
    snap = state.read_snapshot(_paths(sr, boot))
    assert dict(snap.BootedRoot) == expected


def test_pending_update_after_boot_is_no_problem_on_composefs(modern_sysroot, tmp_path) -> None:
    """Booted the previous deployment (an update is pending): ostree says pending; no problem (fails before issue 9)."""
    sr = _built(modern_sysroot)
    snap0 = state.read_snapshot(sr.paths())
    entry = snap0.BootEntries[1]
    boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=True)
    assert [d["pending"] for d in boot.status] == [True, False, False]
    snap = state.read_snapshot(_paths(sr, boot))
    assert snap.BootedDeployment == entry.deployment
    assert snap.BootedEntry == entry.id
    assert snap.Problems == ()


@pytest.mark.parametrize("composefs", [True, False], ids=["composefs", "legacy-bind"])
def test_bootversion_swap_while_booted(modern_sysroot, tmp_path, composefs: bool) -> None:
    """Booted from boot.1's links; a deploy while running swaps to boot.0 and removes boot.1's links.

    The running kernel's ostree= (boot.1) names nothing now; BootedEntry must still be
    the entry of the booted deployment (issue 9 part D; fails before the reader change).
    The oracle for the entry is the boot links themselves, resolved with realpath.
    """
    sr = _built(modern_sysroot)
    snap0 = state.read_snapshot(sr.paths())
    entry = snap0.BootEntries[1]
    assert "/ostree/boot.1/" in entry.ostree  # the third deploy leaves bootversion 1
    boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=composefs)
    sr.commit("fedora/x", version="4", kver="6.1.4")
    sr.deploy("fedora/x")
    assert not os.path.exists(os.path.join(sr.path, "ostree/boot.1"))
    snap = state.read_snapshot(_paths(sr, boot))
    assert snap.BootedDeployment == entry.deployment
    booted_dir = os.path.realpath(
        os.path.join(sr.path, "ostree/deploy/fedora/deploy", entry.deployment.split("-", 1)[1])
    )
    expected = [e.id for e in snap.BootEntries if os.path.realpath(sr.path + e.ostree) == booted_dir]
    assert len(expected) == 1
    assert snap.BootedEntry == expected[0]
    assert [e.id for e in snap.BootEntries if e.booted] == expected
    oracle = status_json(sr.path)
    assert [d.id for d in snap.Deployments] == [_json_id(d) for d in oracle]


def test_staged_deployment_by_real_ostree(modern_sysroot, tmp_path) -> None:
    """`ostree admin deploy --stage` (2026.4) inside the booted host writes /run/ostree/staged-deployment.

    No systemd runs here, so ostree-finalize-staged.service never finalizes it: the
    deployment stays staged, as on a host between the upgrade and the reboot.
    """
    sr: ModernSysroot = modern_sysroot("2026.4")
    sr.build(2)
    entry = state.read_snapshot(sr.paths()).BootEntries[0]
    sr.commit("fedora/x", version="3", kver="6.1.3")
    boot = boot_prepare_root(
        sr, entry.file, tmp_path / "boot", composefs=False, action='chroot "$B" ostree admin deploy --stage fedora/x'
    )
    assert os.path.exists(os.path.join(boot.run, "ostree", "staged-deployment"))
    oracle = boot.status_after
    staged = [_json_id(d) for d in oracle if d["staged"]]
    assert len(staged) == 1
    snap = state.read_snapshot(_paths(sr, boot))
    assert snap.StagedDeployment == staged[0]
    assert [d.id for d in snap.Deployments if d.staged] == staged
    assert snap.BootedDeployment == next(_json_id(d) for d in oracle if d["booted"])
    # ostree lists the staged deployment first; the reader too (index -1, staged first).
    assert [d.id for d in snap.Deployments] == [_json_id(d) for d in oracle]


def test_booted_deployment_gone_is_booted_unknown(modern_sysroot, tmp_path) -> None:
    """/run/ostree-booted exists but the booted deployment was undeployed (from outside the host): booted-unknown.

    ostree refuses to undeploy the booted deployment from inside; from another system
    (here: the machine, outside the booted namespace) nothing stops it. Issue 9 D; fails
    before the reader change.
    """
    sr = _built(modern_sysroot)
    snap0 = state.read_snapshot(sr.paths())
    entry = snap0.BootEntries[1]
    boot = boot_prepare_root(sr, entry.file, tmp_path / "boot", composefs=True)
    sr.undeploy(1)
    assert entry.deployment not in [_json_id(d) for d in status_json(sr.path)]
    snap = state.read_snapshot(_paths(sr, boot))
    assert snap.OstreeBooted
    assert snap.BootedDeployment == "" and snap.BootedEntry == ""
    assert [p.code for p in snap.Problems] == ["booted-unknown"]
