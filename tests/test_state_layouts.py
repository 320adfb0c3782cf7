"""read_snapshot on modern-host layouts: static/generated grub.cfg, greenboot, bootversion swaps,
/run/ostree-booted with every key, new entry names.

Sysroots are written by the real ostree (Debian 12's 2022.7, tests/fixtures/sysroots.py);
grub.cfg files are reproduced from upstream (tests/fixtures/grub_configs.py);
grubenv files are written by grub-editenv; /run/ostree-booted by GLib (python3-gi).
The same cases on sysroots written by ostree 2025.2/2026.4, with ostree-prepare-root
and grub-emu as oracles, are the rig's tests (branch issue9-rig).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ostreewatch import model, sample
from ostreewatch.state import Paths, read_snapshot
from tests.fixtures import grub_configs as cfgs
from tests.fixtures.oracles import glib_serialize
from tests.fixtures.sysroots import OstreeSysroot, StatusDeployment, copy_sysroot


def codes(snap: model.Snapshot) -> list[str]:
    return sorted(p.code for p in snap.Problems)


def editenv(path: str, *args: str) -> None:
    subprocess.run(["grub-editenv", path, *args], check=True, capture_output=True, timeout=30)


def by_entry(snap: model.Snapshot) -> dict:
    return {d.entry: d.id for d in snap.Deployments if d.entry}


# --- what GRUB boots: static bootupd config -------------------------------------------


def test_static_config_ignores_saved_entry(sysroot_3: OstreeSysroot) -> None:
    """An admin ran grub2-set-default on a CoreOS-style host: GRUB still boots the first entry."""
    status = sysroot_3.admin_status()
    env = sysroot_3.write_grub(cfgs.bootupd_static())
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-3-fedora", "first-entry")
    assert snap.Problems == ()
    editenv(env, "set", "saved_entry=ostree-1-fedora", "next_entry=ostree-2-fedora")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.NextEntry, snap.DefaultEntrySource) == ("ostree-3-fedora", "", "first-entry")
    assert snap.DefaultDeployment == status[0].id  # ostree's default, what `ostree admin status` lists first
    assert [(p.code, p.subject) for p in snap.Problems] == [
        ("saved-entry-ignored", "next_entry"),
        ("saved-entry-ignored", "saved_entry"),
    ]
    assert [e.id for e in snap.BootEntries if e.default] == ["ostree-3-fedora"]
    # The admin adds `set default="${saved_entry}"` to custom.cfg: now GRUB honours it.
    Path(env).with_name("custom.cfg").write_text('set default="${saved_entry}"\n')
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-1-fedora", "saved_entry")
    assert snap.DefaultDeployment == status[2].id
    assert [(p.code, p.subject) for p in snap.Problems] == [("saved-entry-ignored", "next_entry")]


def test_issue_reproduction_on_the_rhcos_sample(tmp_path: Path) -> None:
    """Issue 9, point 1: `grub-editenv .../grubenv set saved_entry=ostree-1-rhcos` on the RHCOS sample."""
    paths = sample.materialize(str(tmp_path))
    editenv(os.path.join(paths.sysroot, "boot/grub2/grubenv"), "set", "saved_entry=ostree-1-rhcos")
    snap = read_snapshot(paths)
    booted = "rhcos-b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0"
    assert snap.DefaultEntry == snap.BootedEntry == "ostree-2-rhcos"
    assert snap.DefaultDeployment == snap.BootedDeployment == booted
    assert codes(snap) == ["saved-entry-ignored"]
    rollback = next(d for d in snap.Deployments if d.entry == "ostree-1-rhcos")
    assert rollback.rollback and not rollback.default


def test_greenboot_counter_ran_out(sysroot_3: OstreeSysroot) -> None:
    status = sysroot_3.admin_status()
    env = sysroot_3.write_grub(cfgs.bootupd_static(greenboot=True))
    # greenboot armed the counter after staging the update; the boot is still being counted down.
    editenv(env, "set", "boot_counter=2", "boot_success=0")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-3-fedora", "first-entry")
    assert snap.Problems == ()
    # The counter ran out: GRUB's default is 1, the second menu entry (the rollback deployment).
    for counter in ("0", "-1"):
        editenv(env, "set", f"boot_counter={counter}")
        snap = read_snapshot(sysroot_3.paths())
        assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-2-fedora", "greenboot-fallback")
        assert snap.DefaultDeployment == status[1].id
        assert [(p.code, p.subject) for p in snap.Problems] == [("boot-fallback", "ostree-3-fedora")]
    # greenboot-grub2-set-success after a healthy boot: boot_success=1, counter unset.
    editenv(env, "set", "boot_success=1")
    editenv(env, "unset", "boot_counter")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource, snap.Problems) == ("ostree-3-fedora", "first-entry", ())


def test_generated_config_with_fallback_counting(sysroot_3: OstreeSysroot) -> None:
    """A Silverblue-style grub2-mkconfig config: next_entry, then saved_entry; 08_fallback_counting last."""
    env = sysroot_3.write_grub(cfgs.generated())
    editenv(env, "set", "saved_entry=ostree-1-fedora")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.NextEntry, snap.DefaultEntrySource) == ("ostree-1-fedora", "", "saved_entry")
    editenv(env, "set", "next_entry=ostree-2-fedora")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.NextEntry, snap.DefaultEntrySource) == (
        "ostree-2-fedora",
        "ostree-2-fedora",
        "next_entry",
    )
    assert snap.Problems == ()
    editenv(env, "set", "boot_counter=0", "boot_success=0")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.NextEntry, snap.DefaultEntrySource) == ("ostree-2-fedora", "", "greenboot-fallback")
    assert codes(snap) == ["boot-fallback"]


def test_grubenv_default_variable_and_literal_default(sysroot_3: OstreeSysroot) -> None:
    env = sysroot_3.write_grub(cfgs.bootupd_static())
    editenv(env, "set", "default=ostree-2-fedora")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-2-fedora", "grubenv-default")
    editenv(env, "unset", "default")
    sysroot_3.write_grub(cfgs.generated(default="1"))  # GRUB_DEFAULT=1: the second menu entry
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-2-fedora", "grub.cfg")
    # A title works as well as an id (GRUB matches id, exact title, or index).
    title = next(e.title for e in snap.BootEntries if e.id == "ostree-1-fedora")
    sysroot_3.write_grub(cfgs.generated(default=title))
    assert read_snapshot(sysroot_3.paths()).DefaultEntry == "ostree-1-fedora"


def test_no_grub_cfg_or_one_that_cannot_be_evaluated(sysroot_3: OstreeSysroot) -> None:
    env = sysroot_3.write_grub(cfgs.bootupd_static())
    os.unlink(Path(env).with_name("grub.cfg"))
    snap = read_snapshot(sysroot_3.paths())
    assert snap.Bootloader == "grub2"
    assert (snap.DefaultEntry, snap.DefaultEntrySource, snap.DefaultDeployment) == ("", "none", "")
    assert [(p.code, p.subject) for p in snap.Problems] == [("grub-cfg-unsupported", "/boot/grub2/grub.cfg")]
    sysroot_3.write_grub(cfgs.bootupd_static())
    Path(env).with_name("custom.cfg").write_text("if cmostest 12; then set default=2; fi\n")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("", "none")
    assert codes(snap) == ["grub-cfg-unsupported"] and "cmostest" in snap.Problems[0].message


# --- the booted host ---------------------------------------------------------------


def _boot_mounted(tmp: Path) -> str:
    """A mount table in which /boot is a mount point (else boot-not-mounted, rightly, on a booted host)."""
    mi = tmp / "mountinfo-boot"
    mi.write_text("105 1 252:3 / /boot rw,relatime shared:4 - ext4 /dev/vda3 rw\n")
    return str(mi)


def _booted_run(tmp: Path, sr: OstreeSysroot, dep: StatusDeployment, extra: str = "") -> Path:
    """A run dir whose ostree-booted is what ostree-prepare-root writes (GLib-serialized a{sv})."""
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    st = os.stat(sr.deploy_dir(dep))
    (run / "ostree-booted").write_bytes(
        glib_serialize("a{sv}", f"{{'backing-root-device-inode': V('(tt)', ({st.st_dev}, {st.st_ino})){extra}}}")
    )
    return run


def test_booted_root_with_every_key(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    dep = sysroot_3.admin_status()[0]
    # Keys and types as ostree-prepare-root writes them with composefs, a signed commit,
    # a transient root and /etc (src/switchroot/ostree-prepare-root.c, src/libotcore/otcore-prepare-root.c).
    extra = (
        ", 'composefs': V('b', True), 'composefs.verity': V('b', True),"
        " 'composefs.signed': V('s', 'ed25519:AAAA'), 'root.transient': V('b', False),"
        " 'root.transient-ro': V('b', True), 'sysroot-ro': V('b', True),"
        " 'transient-etc': V('s', '/run/ostree/transient-etc'), 'some-future-key': V('u', 7)"
    )
    run = _booted_run(tmp_path, sysroot_3, dep, extra)
    snap = read_snapshot(sysroot_3.paths(run=str(run)))
    st = os.stat(sysroot_3.deploy_dir(dep))
    assert dict(snap.BootedRoot) == {
        "composefs": True,
        "composefs_verity": True,
        "composefs_signed": "ed25519:AAAA",
        "root_transient": False,
        "root_transient_ro": True,
        "sysroot_ro": True,
        "transient_etc": "/run/ostree/transient-etc",
        "backing_device": st.st_dev,
        "backing_inode": st.st_ino,
    }
    assert [k for k, _ in snap.BootedRoot] == list(model.BOOTED_ROOT_KEYS)
    assert snap.BootedDeployment == dep.id and snap.BootedEntry == "ostree-3-fedora"
    assert model.snapshot_to_plain(snap)["BootedRoot"]["sysroot_ro"] is True
    # Only some keys (no composefs): absent keys are omitted.
    run2 = tmp_path / "two"
    run2.mkdir()
    _booted_run(run2, sysroot_3, dep, ", 'root.transient': V('b', False), 'sysroot-ro': V('b', False)")
    snap = read_snapshot(sysroot_3.paths(run=str(run2 / "run")))
    assert dict(snap.BootedRoot) == {
        "root_transient": False,
        "sysroot_ro": False,
        "backing_device": st.st_dev,
        "backing_inode": st.st_ino,
    }


def test_booted_root_legacy_and_garbage(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    dep = sysroot_3.admin_status()[1]
    run = tmp_path / "run"
    run.mkdir()
    (run / "ostree-booted").write_bytes(b"")  # ostree < 2024.2 writes an empty file
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"root=UUID=0 ostree={sysroot_3.ostree_arg_of(dep)}\n")
    mi = _boot_mounted(tmp_path)
    snap = read_snapshot(sysroot_3.paths(run=str(run), cmdline=str(cmdline), mountinfo=mi))
    assert snap.BootedRoot == () and model.snapshot_to_plain(snap)["BootedRoot"] == {}
    assert snap.BootedDeployment == dep.id and snap.Problems == ()
    (run / "ostree-booted").write_bytes(b"\xff" * 40)
    snap = read_snapshot(sysroot_3.paths(run=str(run), cmdline=str(cmdline), mountinfo=mi))
    assert snap.BootedRoot == () and snap.BootedDeployment == dep.id  # found by ostree= still
    assert codes(snap) == ["run-file-unreadable"]


def test_booted_unknown(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "ostree-booted").write_bytes(glib_serialize("a{sv}", "{'backing-root-device-inode': V('(tt)', (1, 2))}"))
    snap = read_snapshot(sysroot_3.paths(run=str(run), mountinfo=_boot_mounted(tmp_path)))
    assert snap.OstreeBooted and snap.BootedDeployment == "" and snap.BootedEntry == ""
    assert [(p.code, p.subject) for p in snap.Problems] == [("booted-unknown", str(run / "ostree-booted"))]
    # Not booted at all (no ostree-booted): nothing to say.
    os.unlink(run / "ostree-booted")
    assert read_snapshot(sysroot_3.paths(run=str(run))).Problems == ()


@pytest.mark.parametrize("how", ["ostree-booted", "mountinfo"])
def test_bootversion_swap_while_booted(tmp_path: Path, sysroot_3_template: OstreeSysroot, how: str) -> None:
    """Booted into the default, then a cleanup swaps boot.N: the kernel's ostree= names a link that is gone."""
    sr = OstreeSysroot(tmp_path)
    copy_sysroot(sysroot_3_template.path, sr.path)
    status = sr.admin_status()
    booted = status[0]
    arg = sr.ostree_arg_of(booted)
    loader_before = os.readlink(os.path.join(sr.path, "boot", "loader"))
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(f"BOOT_IMAGE=/vmlinuz rw ostree={arg}\n")
    mountinfo = Path(_boot_mounted(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    if how == "ostree-booted":
        st = os.stat(sr.deploy_dir(booted))
        (run / "ostree-booted").write_bytes(
            glib_serialize("a{sv}", f"{{'backing-root-device-inode': V('(tt)', ({st.st_dev}, {st.st_ino}))}}")
        )
    else:
        (run / "ostree-booted").write_bytes(b"")
        rel = f"/ostree/deploy/{booted.osname}/deploy/{booted.checksum}.{booted.serial}"
        mountinfo.write_text(
            f"102 1 252:4 {rel} / rw,relatime shared:1 - xfs /dev/vda4 rw\n"
            "105 102 252:3 / /boot rw,relatime shared:4 - ext4 /dev/vda3 rw\n"
        )
    sr.undeploy(2)  # the oldest one: ostree writes the other bootversion and removes this one's links
    assert os.readlink(os.path.join(sr.path, "boot", "loader")) != loader_before
    assert not os.path.exists(sr.path + arg)  # the command line now names nothing
    paths = Paths(sysroot=sr.path, run=str(run), cmdline=str(cmdline), mountinfo=str(mountinfo))
    snap = read_snapshot(paths)
    assert snap.BootedDeployment == booted.id
    entry = next(d.entry for d in snap.Deployments if d.id == booted.id)
    assert entry and snap.BootedEntry == entry
    assert [e.id for e in snap.BootEntries if e.booted] == [entry]
    assert snap.Problems == ()


def test_pending_update_is_no_problem(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    """Booted into the second deployment (a newer one is the default, as after an upgrade)."""
    status = sysroot_3.admin_status()
    sysroot_3.write_grub(cfgs.bootupd_static(greenboot=True))
    run = _booted_run(tmp_path, sysroot_3, status[1])
    snap = read_snapshot(sysroot_3.paths(run=str(run)))
    assert snap.BootedDeployment == status[1].id and snap.DefaultDeployment == status[0].id
    assert snap.BootedEntry == "ostree-2-fedora" and snap.DefaultEntry == "ostree-3-fedora"
    assert codes(snap) == ["boot-not-mounted"]  # no mount table given; nothing about the pending update


# --- entry names: ostree >= 2024.5 and boot counting -----------------------------------


def _rename_entries(sr: OstreeSysroot, rename) -> None:
    """Give ostree 2022.7's entries the names newer ostree writes (the rig checks with ostree 2026.4
    writing them itself): ostree-N.conf (2024.5+) or ostree-N+T.conf (2025.3+, boot counting)."""
    d = sr.entries_dir()
    for name in os.listdir(d):
        new = rename(name)
        if new != name:
            os.rename(os.path.join(d, name), os.path.join(d, new))


def test_ostree_n_names_sort_as_grub_does(tmp_path: Path, sysroot_10_template: OstreeSysroot) -> None:
    sr = OstreeSysroot(tmp_path)
    copy_sysroot(sysroot_10_template.path, sr.path)
    _rename_entries(sr, lambda n: n.replace("-fedora.conf", ".conf"))
    sr.write_grub(cfgs.bootupd_static())
    snap = read_snapshot(sr.paths())
    # blscfg's order is by file name, version-aware: ostree-10 before ostree-9 ... ostree-1.
    assert [e.id for e in snap.BootEntries] == [f"ostree-{k}" for k in range(10, 0, -1)]
    assert snap.DefaultEntry == "ostree-10" and snap.DefaultDeployment == sr.admin_status()[0].id
    assert [d.id for d in snap.Deployments] == [s.id for s in sr.admin_status()]


def test_boot_counting_names(sysroot_3: OstreeSysroot) -> None:
    sysroot_3.write_grub(cfgs.bootupd_static())
    # A new deployment being tried (3 tries left), the others kept by systemd-bless-boot.
    _rename_entries(
        sysroot_3,
        lambda n: {"ostree-3-fedora.conf": "ostree-3+3.conf", "ostree-2-fedora.conf": "ostree-2+1-2.conf"}.get(
            n, n.replace("-fedora", "")
        ),
    )
    snap = read_snapshot(sysroot_3.paths())
    assert [(e.id, e.file, e.tries_left) for e in snap.BootEntries] == [
        ("ostree-3", "ostree-3+3.conf", 3),
        ("ostree-2", "ostree-2+1-2.conf", 1),
        ("ostree-1", "ostree-1.conf", -1),
    ]
    assert snap.DefaultEntry == "ostree-3" and snap.Problems == ()
    # Every try failed: no tries left on the newest entry.
    os.rename(
        os.path.join(sysroot_3.entries_dir(), "ostree-3+3.conf"),
        os.path.join(sysroot_3.entries_dir(), "ostree-3+0-3.conf"),
    )
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [("boot-fallback", "ostree-3")]
    # grub's default= may name the counted entry by GRUB's menu id (suffix included).
    env = os.path.join(sysroot_3.path, "boot/grub2/grubenv")
    Path(env).with_name("custom.cfg").write_text('set default="${saved_entry}"\n')
    editenv(env, "set", "saved_entry=ostree-2+1-2")
    assert read_snapshot(sysroot_3.paths()).DefaultEntry == "ostree-2"


def test_systemd_boot_sources(sysroot_3: OstreeSysroot) -> None:
    conf = Path(sysroot_3.entries_dir(), "..", "loader.conf")
    conf.write_text("timeout 3\n")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.Bootloader, snap.DefaultEntry, snap.DefaultEntrySource) == (
        "systemd-boot",
        "ostree-3-fedora",
        "first-entry",
    )
    conf.write_text("default ostree-2-*\n")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == ("ostree-2-fedora", "loader.conf")
    shutil.rmtree(sysroot_3.entries_dir())
    os.mkdir(sysroot_3.entries_dir())
    assert read_snapshot(sysroot_3.paths()).DefaultEntrySource == "none"
