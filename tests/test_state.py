"""read_snapshot against sysroots built by the real ostree tool, checked with `ostree admin status`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ostreewatch import model
from ostreewatch.errors import SysrootError
from ostreewatch.sample import paths_for as sample_paths
from ostreewatch.state import Paths, read_snapshot
from tests.fixtures.sysroots import USERNS, OstreeSysroot, StatusDeployment, _env, copy_sysroot


def codes(snap: model.Snapshot) -> list[str]:
    return sorted(p.code for p in snap.Problems)


def assert_agrees(sr: OstreeSysroot, snap: model.Snapshot) -> None:
    """Deployments, entries and boot links agree with what ostree wrote and with `ostree admin status`."""
    status = sr.admin_status()
    ordered = [d for d in snap.Deployments if d.index >= 0]
    assert [d.id for d in ordered] == [s.id for s in status]
    assert [d.index for d in ordered] == list(range(len(status)))
    assert [d.version for d in ordered] == [s.version for s in status]
    assert [d.pinned for d in ordered] == [s.pinned for s in status]
    assert [d.origin for d in ordered] == [s.refspec for s in status]
    # Every entry file is reported, and its ostree= really ends at its deployment's directory.
    files = sr.entry_files()
    assert sorted(e.file for e in snap.BootEntries) == files
    by_id = {d.id: d for d in snap.Deployments}
    for e in snap.BootEntries:
        dep = by_id[e.deployment]
        assert dep.entry == e.id
        assert os.path.realpath(sr.path + e.ostree) == os.path.realpath(sr.path + dep.path)
        assert e.ostree.endswith(f"/{dep.bootcsum}/{dep.bootserial}")
        with open(os.path.join(sr.entries_dir(), e.file)) as f:
            assert f"ostree={e.ostree}" in f.read()
    # ostree's order: index 0 carries the highest `version` and "(ostree:0)" in its title.
    assert [int(e.version) for e in snap.BootEntries] == sorted(
        (int(e.version) for e in snap.BootEntries), reverse=True
    )
    for i, d in enumerate(ordered):
        entry = next(e for e in snap.BootEntries if e.id == d.entry)
        assert entry.title.endswith(f"(ostree:{i})") or entry.title.endswith(f"(ostree:{d.osname}:{i})")
    # The deploy directories on disk are all there.
    # path is the host's view (/ostree/deploy/...), whatever directory the sysroot was read from.
    assert sorted(sr.path + d.path for d in snap.Deployments) == sr.deployment_dirs()
    assert all(d.path.startswith("/ostree/deploy/") for d in snap.Deployments)
    # Not booted: the default is index 0, the rollback the next one of its OS.
    assert snap.DefaultDeployment == status[0].id
    assert snap.DefaultEntry == ordered[0].entry
    same_os = [s for s in status[1:] if s.osname == status[0].osname]
    assert snap.RollbackDeployment == (same_os[0].id if same_os else "")
    assert not snap.BootedDeployment and not snap.OstreeBooted


@pytest.mark.parametrize("n", [1, 3, 10])
def test_deployments_agree_with_ostree(tmp_path: Path, n: int, request: pytest.FixtureRequest) -> None:
    sr = OstreeSysroot(tmp_path).build(n) if n == 1 else request.getfixturevalue(f"sysroot_{n}_template")
    snap = read_snapshot(sr.paths())
    assert len(snap.Deployments) == n
    assert_agrees(sr, snap)
    assert snap.Problems == ()
    assert snap.Bootloader == "none"
    if n == 10:  # ostree-10 sorts before ostree-9 (version-aware)
        assert snap.BootEntries[0].file == "ostree-10-fedora.conf"


def test_further_deploy_swaps_loader(sysroot_3: OstreeSysroot) -> None:
    before = read_snapshot(sysroot_3.paths())
    link_before = os.readlink(os.path.join(sysroot_3.path, "boot", "loader"))
    sysroot_3.commit("fedora/x", version="4", kver="6.1.4")
    sysroot_3.deploy("fedora/x")
    after = read_snapshot(sysroot_3.paths())
    assert os.readlink(os.path.join(sysroot_3.path, "boot", "loader")) != link_before
    assert_agrees(sysroot_3, after)
    assert len(after.Deployments) == 4
    assert after.Deployments[0].version == "4"
    assert [d.id for d in after.Deployments[1:]] == [d.id for d in before.Deployments]
    assert after.Problems == ()


def test_undeploy(sysroot_3: OstreeSysroot) -> None:
    before = read_snapshot(sysroot_3.paths())
    sysroot_3.undeploy(1)
    after = read_snapshot(sysroot_3.paths())
    assert_agrees(sysroot_3, after)
    assert [d.id for d in after.Deployments] == [before.Deployments[0].id, before.Deployments[2].id]
    assert after.Problems == ()


def test_pin(sysroot_3: OstreeSysroot) -> None:
    sysroot_3.pin(2)
    snap = read_snapshot(sysroot_3.paths())
    assert_agrees(sysroot_3, snap)
    assert [d.pinned for d in snap.Deployments] == [False, False, True]
    sysroot_3.pin(2, unpin=True)
    assert not any(d.pinned for d in read_snapshot(sysroot_3.paths()).Deployments)


def test_kargs_edit_in_place(sysroot_3: OstreeSysroot) -> None:
    before = read_snapshot(sysroot_3.paths())
    link = os.readlink(os.path.join(sysroot_3.path, "boot", "loader"))
    sysroot_3.kargs_edit_in_place("--append-if-missing=ostreewatch.test=1")
    after = read_snapshot(sysroot_3.paths())
    assert os.readlink(os.path.join(sysroot_3.path, "boot", "loader")) == link  # no swap
    assert_agrees(sysroot_3, after)
    assert all("ostreewatch.test=1" in e.options.split() for e in after.BootEntries)
    assert [d.id for d in after.Deployments] == [d.id for d in before.Deployments]


def test_two_os_names(tmp_path: Path) -> None:
    sr = OstreeSysroot(tmp_path).build(2, osname="fedora")
    sr.build(2, osname="debian", start=10, kver_prefix="5.10.")
    snap = read_snapshot(sr.paths())
    assert_agrees(sr, snap)
    assert {d.osname for d in snap.Deployments} == {"fedora", "debian"}
    assert all(e.file.endswith(("-fedora.conf", "-debian.conf")) for e in snap.BootEntries)
    # The rollback is the next deployment of the default's OS, not the next one in order.
    default = next(d for d in snap.Deployments if d.default)
    rollback = next(d for d in snap.Deployments if d.rollback)
    assert default.osname == rollback.osname == "debian"


# --- an imitated booted host ---------------------------------------------------


def _booted_paths(sr: OstreeSysroot, tmp: Path, dep: StatusDeployment, how: str) -> Paths:
    run = tmp / f"run-{how}"
    run.mkdir()
    (run / "ostree-booted").write_bytes(b"")
    cmdline = tmp / f"cmdline-{how}"
    mountinfo = tmp / f"mountinfo-{how}"
    cmdline.write_text("root=UUID=0 rw\n")
    mountinfo.write_text("")
    deploy_rel = f"/ostree/deploy/{dep.osname}/deploy/{dep.checksum}.{dep.serial}"
    if how == "cmdline":
        cmdline.write_text(f"BOOT_IMAGE=/vmlinuz root=UUID=0 rw ostree={sr.ostree_arg_of(dep)}\n")
    elif how == "mountinfo":
        mountinfo.write_text(
            f"102 1 252:4 {deploy_rel} / rw,relatime shared:1 - xfs /dev/vda4 rw\n"
            f"104 102 252:4 {deploy_rel}/usr /usr ro,relatime shared:3 - xfs /dev/vda4 rw\n"
            "105 102 252:3 / /boot rw,relatime shared:4 - ext4 /dev/vda3 rw\n"
        )
    elif how == "ostree-booted":
        from tests.fixtures.oracles import glib_serialize

        st = os.stat(sr.deploy_dir(dep))
        (run / "ostree-booted").write_bytes(
            glib_serialize("a{sv}", f"{{'backing-root-device-inode': V('(tt)', ({st.st_dev}, {st.st_ino}))}}")
        )
    return Paths(sysroot=sr.path, run=str(run), cmdline=str(cmdline), mountinfo=str(mountinfo))


@pytest.mark.parametrize("how", ["cmdline", "mountinfo", "ostree-booted"])
def test_booted_host_agrees_with_ostree(sysroot_3: OstreeSysroot, tmp_path: Path, how: str) -> None:
    """Booted into each deployment in turn: booted/pending/rollback agree with `ostree admin status` run there."""
    status = sysroot_3.admin_status()
    for index, dep in enumerate(status):
        marks = {s.id: s.marks for s in sysroot_3.booted_admin_status(index)}
        assert marks[dep.id] == ("*",)
        snap = read_snapshot(_booted_paths(sysroot_3, _mk(tmp_path / str(index)), dep, how))
        assert snap.OstreeBooted
        assert snap.BootedDeployment == dep.id
        by_id = {d.id: d for d in snap.Deployments}
        for sid, m in marks.items():
            d = by_id[sid]
            assert d.booted == ("*" in m)
            assert (d.default and not d.booted) == ("pending" in m)
            assert d.rollback == ("rollback" in m)
        # A pending update (the default is not the booted one) is no problem (booted-not-default is retired).
        assert set(codes(snap)) <= {"boot-not-mounted"}
        # Every route finds the booted entry: it is the booted deployment's entry.
        assert snap.BootedEntry == by_id[dep.id].entry
        assert [e.id for e in snap.BootEntries if e.booted] == [snap.BootedEntry]


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_booted_mount_problems(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    dep = sysroot_3.admin_status()[0]
    paths = _booted_paths(sysroot_3, tmp_path, dep, "mountinfo")
    assert read_snapshot(paths).Problems == ()
    rel = f"/ostree/deploy/{dep.osname}/deploy/{dep.checksum}.{dep.serial}"
    Path(paths.mountinfo).write_text(
        f"102 1 252:4 {rel} / rw,relatime shared:1 - xfs /dev/vda4 rw\n"
        f"104 102 252:4 {rel}/usr /usr rw,relatime shared:3 - xfs /dev/vda4 rw\n"
    )
    snap = read_snapshot(paths)
    assert codes(snap) == ["boot-not-mounted", "usr-writable"]
    usr = next(m for m in snap.Mounts if m.mount_point == "/usr")
    assert not usr.read_only and usr.propagation == "shared:3" and usr.device == "252:4"
    # An unlocked deployment may have a writable /usr.
    origin = Path(sysroot_3.deploy_dir(dep) + ".origin")
    origin.write_text(origin.read_text() + "unlocked=development\n")
    assert codes(read_snapshot(paths)) == ["boot-not-mounted"]


def test_mountinfo_unparsable(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    mi = tmp_path / "mi"
    # The first line is for a watched mount point (the prefilter keeps it) but has no valid mount id.
    mi.write_text("x1 1 252:4 / /boot rw - ext4 /dev/vda3 rw\n102 1 252:4 / / rw - xfs /dev/vda4 rw\n")
    snap = read_snapshot(sysroot_3.paths(mountinfo=str(mi)))
    assert codes(snap) == ["mountinfo-unparsable"]
    assert [m.mount_point for m in snap.Mounts] == ["/"]


# --- default entry: grubenv and loader.conf ---------------------------------------


def _grub_editenv(path: str, *args: str) -> None:
    import subprocess

    subprocess.run(["grub-editenv", path, *args], check=True, timeout=30)


def test_grubenv_saved_and_next_entry(sysroot_3: OstreeSysroot) -> None:
    # A generated (grub2-mkconfig) grub.cfg: it reads next_entry, then saved_entry.
    env = sysroot_3.write_grub()
    snap = read_snapshot(sysroot_3.paths())
    assert snap.Bootloader == "grub2" and snap.DefaultEntry == "ostree-3-fedora" and snap.Problems == ()
    assert snap.DefaultEntrySource == "first-entry"
    by_entry = {d.entry: d.id for d in snap.Deployments}
    _grub_editenv(
        env, "set", "saved_entry=ostree-1-fedora", f"ostreewatch_saved_deployment={by_entry['ostree-1-fedora']}"
    )
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.NextEntry, snap.DefaultEntrySource) == ("ostree-1-fedora", "", "saved_entry")
    assert snap.DefaultDeployment == by_entry["ostree-1-fedora"]
    assert [e.id for e in snap.BootEntries if e.default] == ["ostree-1-fedora"]
    assert snap.Problems == ()
    # A one-shot next_entry is what GRUB boots next (and only once).
    _grub_editenv(env, "set", "next_entry=ostree-2-fedora")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.NextEntry, snap.DefaultEntrySource) == (
        "ostree-2-fedora",
        "ostree-2-fedora",
        "next_entry",
    )
    assert snap.Problems == ()
    _grub_editenv(env, "unset", "next_entry")
    # The recorded deployment no longer matches the entry (entries were renumbered): a problem.
    _grub_editenv(env, "set", f"ostreewatch_saved_deployment={by_entry['ostree-3-fedora']}")
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [("default-entry-moved", "ostree-1-fedora")]
    _grub_editenv(env, "set", "saved_entry=ostree-9-fedora")
    _grub_editenv(env, "unset", "ostreewatch_saved_deployment")
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [("saved-entry-missing", "ostree-9-fedora")]
    assert snap.DefaultEntry == "ostree-3-fedora"  # the first entry
    with open(env, "r+b") as f:
        f.write(b"garbage")
    snap = read_snapshot(sysroot_3.paths())
    assert codes(snap) == ["grubenv-unparsable"] and snap.DefaultEntry == "ostree-3-fedora"


def test_loader_conf_default(sysroot_3: OstreeSysroot) -> None:
    conf = os.path.join(sysroot_3.path, "boot", "loader", "loader.conf")
    snap0 = read_snapshot(sysroot_3.paths())
    by_entry = {d.entry: d.id for d in snap0.Deployments}
    Path(conf).write_text(f"timeout 3\n#ostreewatch-deployment {by_entry['ostree-2-fedora']}\ndefault ostree-2-*\n")
    snap = read_snapshot(sysroot_3.paths())
    assert snap.Bootloader == "systemd-boot" and snap.DefaultEntry == "ostree-2-fedora" and snap.Problems == ()
    assert snap.DefaultDeployment == by_entry["ostree-2-fedora"]
    Path(conf).write_text(f"#ostreewatch-deployment {by_entry['ostree-1-fedora']}\ndefault ostree-2-*\n")
    assert [(p.code, p.subject) for p in read_snapshot(sysroot_3.paths()).Problems] == [
        ("default-entry-moved", "ostree-2-fedora")
    ]
    Path(conf).write_text("default nothing-*\n")
    snap = read_snapshot(sysroot_3.paths())
    assert codes(snap) == ["saved-entry-missing"] and snap.DefaultEntry == "ostree-3-fedora"


def test_repo_bootloader_setting(sysroot_3: OstreeSysroot) -> None:
    sysroot_3.run([f"--repo={sysroot_3.repo}", "config", "set", "sysroot.bootloader", "grub2"])
    assert read_snapshot(sysroot_3.paths()).Bootloader == "grub2"


def test_unsearchable_grub_dir_is_a_problem_not_none(sysroot_3: OstreeSysroot) -> None:
    """/boot/grub that cannot be searched (a sandbox's InaccessiblePaths=): Bootloader "none" says why.

    Read as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, as a mode-000 directory then refuses it.
    """
    import json
    import sys

    grub = Path(sysroot_3.write_grub()).parent
    assert read_snapshot(sysroot_3.paths()).Bootloader == "grub2"
    grub.chmod(0)
    try:
        code = (
            "import json, sys\n"
            "from ostreewatch.state import Paths, read_snapshot\n"
            "snap = read_snapshot(Paths(**json.loads(sys.argv[1])))\n"
            "print(json.dumps([snap.Bootloader, [(p.code, p.subject) for p in snap.Problems]]))\n"
        )
        caps = "-dac_override,-dac_read_search"
        r = subprocess.run(
            [
                "setpriv",
                f"--inh-caps={caps}",
                f"--bounding-set={caps}",
                sys.executable,
                "-c",
                code,
                json.dumps(vars(sysroot_3.paths())),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        grub.chmod(0o755)
    bootloader, problems = json.loads(r.stdout)
    rel = "/" + str(grub.relative_to(sysroot_3.path))
    assert bootloader == "none" and problems == [["grub-cfg-unsupported", rel]], r.stdout


def test_staged_deployment(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    from tests.fixtures.oracles import glib_serialize

    csum = "ab" * 32
    d = Path(sysroot_3.path, "ostree", "deploy", "fedora", "deploy", f"{csum}.0")
    (d / "usr" / "lib").mkdir(parents=True)
    (d / "usr" / "lib" / "os-release").write_text("VERSION=9\n")
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [("deployment-no-entry", f"fedora-{csum}.0")]
    paths = sysroot_3.paths()
    (Path(paths.run) / "ostree").mkdir()
    (Path(paths.run) / "ostree" / "staged-deployment").write_bytes(
        glib_serialize(
            "a{sv}", f"{{'target': V('a{{sv}}', {{'name': V('s', '{csum}.0'), 'osname': V('s', 'fedora')}})}}"
        )
    )
    snap = read_snapshot(paths)
    assert snap.Problems == ()
    assert snap.StagedDeployment == f"fedora-{csum}.0"
    assert snap.Deployments[0].id == f"fedora-{csum}.0" and snap.Deployments[0].staged
    assert snap.Deployments[0].index == -1 and snap.Deployments[0].version == "9"


# --- hostile sysroots ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fifo_and_huge_entries(sysroot_3: OstreeSysroot) -> None:
    entries = sysroot_3.entries_dir()
    os.mkfifo(os.path.join(entries, "zz-fifo.conf"))
    with open(os.path.join(entries, "zz-huge.conf"), "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MB that costs nothing
    os.symlink("/etc/passwd", os.path.join(entries, "zz-outside.conf"))
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [
        ("entry-unreadable", "zz-fifo"),
        ("entry-unreadable", "zz-huge"),
        ("entry-unreadable", "zz-outside"),
    ]
    assert len(snap.Deployments) == 3 and len(snap.BootEntries) == 3


def test_bad_entries(sysroot_3: OstreeSysroot) -> None:
    entries = sysroot_3.entries_dir()
    Path(entries, "bad-utf8.conf").write_bytes(b"title \xff\xfe\nlinux /x\n")
    Path(entries, "nokernel.conf").write_text("title no kernel\noptions quiet\n")
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [
        ("entry-no-kernel", "nokernel"),
        ("entry-unparsable", "bad-utf8"),
    ]
    assert "nokernel" in [e.id for e in snap.BootEntries]


def _boot_link_dir(sr: OstreeSysroot) -> Path:
    """ostree/boot.N as named by the entries."""
    arg = read_snapshot(sr.paths()).BootEntries[0].ostree
    return Path(sr.path, *arg.strip("/").split("/")[:2])


def test_symlink_loop_in_boot_links(sysroot_3: OstreeSysroot) -> None:
    link = _boot_link_dir(sysroot_3)
    link.unlink()
    os.symlink(link.name + ".loop", link)
    os.symlink(link.name, str(link) + ".loop")
    snap = read_snapshot(sysroot_3.paths())
    assert codes(snap) == ["deployment-no-entry"] * 3 + ["ostree-arg-unresolved"] * 3
    assert all("symbolic links" in p.message for p in snap.Problems if p.code == "ostree-arg-unresolved")


def test_link_outside_sysroot_is_not_followed(sysroot_3: OstreeSysroot) -> None:
    """A boot link to the deployment's absolute host path means a path inside the sysroot, as under chroot."""
    snap = read_snapshot(sysroot_3.paths())
    e = snap.BootEntries[0]
    boot_link = Path(sysroot_3.path + e.ostree)
    target = os.path.realpath(boot_link)
    boot_link.unlink()
    os.symlink(target, boot_link)  # absolute host path: outside, seen from the sysroot
    snap = read_snapshot(sysroot_3.paths())
    assert [(p.code, p.subject) for p in snap.Problems] == [
        ("deployment-no-entry", e.deployment),
        ("ostree-arg-unresolved", e.id),
    ]


# libostree's reorder (the system python's gi, as the daemon's helper uses it) as a writer
# that skips ostree's cleanup writes it (do_postclean false): the second deployment first.
# What it leaves is what a power cut between its link swap and its cleanup leaves
# (docs/vm-rig.md "Power cuts").
WRITE_WITHOUT_CLEANUP = """
import sys, gi
gi.require_version("OSTree", "1.0")
from gi.repository import OSTree, Gio
s = OSTree.Sysroot.new(Gio.File.new_for_path(sys.argv[1]))
s.load(None)
d = s.get_deployments()
opts = OSTree.SysrootWriteDeploymentsOpts()
opts.do_postclean = False
s.write_deployments_with_options([d[1], d[0]] + d[2:], opts, None)
"""


def ostree_boot_names(sysroot: OstreeSysroot) -> set[str]:
    """The boot.* names in ostree/ of SYSROOT."""
    return {n for n in os.listdir(Path(sysroot.path, "ostree")) if n.startswith("boot.")}


def test_stale_boot_dir_is_what_ostree_cleanup_removes(sysroot_3: OstreeSysroot) -> None:
    """A reorder by the real libostree without its cleanup leaves an unused boot link farm: stale-boot-dir, until
    `ostree admin cleanup` removes it (and the problem with it)."""
    assert "stale-boot-dir" not in codes(read_snapshot(sysroot_3.paths()))  # ostree's own writes clean up
    before = ostree_boot_names(sysroot_3)
    r = subprocess.run(
        [*USERNS, "/usr/bin/python3", "-c", WRITE_WITHOUT_CLEANUP, sysroot_3.path],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    left = ostree_boot_names(sysroot_3)
    snap = read_snapshot(sysroot_3.paths())
    stale = sorted(p.subject for p in snap.Problems if p.code == "stale-boot-dir")
    # Every boot.* name the cleanup will remove is named, and nothing the links in use need.
    sysroot_3.admin("cleanup")
    after = ostree_boot_names(sysroot_3)
    assert stale and stale == sorted(f"/ostree/{n}" for n in left - after), (before, left, after, snap.Problems)
    assert "stale-boot-dir" not in codes(read_snapshot(sysroot_3.paths()))
    # The order libostree wrote stands: the entries lead through the links in use.
    assert [d.id for d in snap.Deployments][:2] == [d.id for d in read_snapshot(sysroot_3.paths()).Deployments][:2]


def test_stale_boot_dir_of_the_other_bootversion(sysroot_3: OstreeSysroot) -> None:
    """ostree/boot.X, boot.X.0, boot.X.1 of the bootversion boot/loader does not name; a boot.B link not ostree's
    shape is not judged."""
    root = Path(sysroot_3.path)
    bootversion = int(os.readlink(root / "boot/loader")[-1])
    other = 1 - bootversion
    (root / f"ostree/boot.{other}.1").mkdir()
    os.symlink(f"boot.{other}.1", root / f"ostree/boot.{other}")
    problems = [(p.code, p.subject) for p in read_snapshot(sysroot_3.paths()).Problems]
    assert problems == [("stale-boot-dir", f"/ostree/boot.{other}"), ("stale-boot-dir", f"/ostree/boot.{other}.1")]
    link = root / f"ostree/boot.{bootversion}"
    target = os.readlink(link)
    link.unlink()
    os.symlink(f"elsewhere/{target}", link)  # not boot.B.0 or boot.B.1: the subbootversion is unknown
    assert [p.subject for p in read_snapshot(sysroot_3.paths()).Problems if p.code == "stale-boot-dir"] == [
        f"/ostree/boot.{other}",
        f"/ostree/boot.{other}.1",
    ]


def test_missing_loader_target_and_stale_loader(sysroot_3: OstreeSysroot) -> None:
    boot = Path(sysroot_3.path, "boot")
    current = os.readlink(boot / "loader")
    other = "loader.0" if current == "loader.1" else "loader.1"
    (boot / other).mkdir()
    assert [(p.code, p.subject) for p in read_snapshot(sysroot_3.paths()).Problems] == [
        ("stale-loader-dir", f"/boot/{other}")
    ]
    import shutil

    shutil.rmtree(boot / current)
    snap = read_snapshot(sysroot_3.paths())
    assert codes(snap) == ["deployment-no-entry"] * 3 + ["loader-link-dangling", "stale-loader-dir"]
    assert snap.BootEntries == () and snap.DefaultEntry == ""


def test_empty_entries_dir(sysroot_3: OstreeSysroot) -> None:
    for name in sysroot_3.entry_files():
        os.unlink(os.path.join(sysroot_3.entries_dir(), name))
    snap = read_snapshot(sysroot_3.paths())
    assert codes(snap) == ["deployment-no-entry"] * 3
    assert snap.BootEntries == () and snap.DefaultDeployment == "" and snap.RollbackDeployment == ""
    os.rmdir(sysroot_3.entries_dir())
    assert codes(read_snapshot(sysroot_3.paths())) == ["deployment-no-entry"] * 3 + ["entries-dir-missing"]


@pytest.mark.unit
def test_not_an_ostree_sysroot(tmp_path: Path) -> None:
    with pytest.raises(SysrootError):
        read_snapshot(Paths(sysroot=str(tmp_path)))
    (tmp_path / "file").write_text("")
    with pytest.raises(SysrootError):
        read_snapshot(Paths(sysroot=str(tmp_path / "file")))
    with pytest.raises(SysrootError):
        read_snapshot(Paths(sysroot=str(tmp_path / "missing")))


def test_copy_keeps_sysroot_readable(sysroot_3: OstreeSysroot, tmp_path: Path) -> None:
    """A copied sysroot (relative links) reads the same, but under its own paths."""
    copy = copy_sysroot(sysroot_3.path, tmp_path / "copy")
    a = read_snapshot(sysroot_3.paths())
    b = read_snapshot(
        Paths(
            sysroot=copy, run=str(tmp_path / "norun"), mountinfo=str(tmp_path / "none"), cmdline=str(tmp_path / "none")
        )
    )
    assert [d.id for d in a.Deployments] == [d.id for d in b.Deployments]
    # Both are read as the host they describe would see them.
    assert [d.path for d in a.Deployments] == [d.path for d in b.Deployments]
    assert all(d.path.startswith("/ostree/deploy/") for d in b.Deployments)


# --- the bundled sample -----------------------------------------------------------


@pytest.mark.unit
def test_sample() -> None:
    snap = read_snapshot(sample_paths())
    booted = "rhcos-b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0"
    assert snap.Problems == ()
    assert snap.Bootloader == "grub2" and snap.OstreeBooted
    assert snap.BootedDeployment == snap.DefaultDeployment == booted
    assert snap.BootedEntry == snap.DefaultEntry == "ostree-2-rhcos"
    # bootupd's static grub.cfg: the first entry in blscfg's order.
    assert snap.DefaultEntrySource == "first-entry" and snap.NextEntry == ""
    assert [e.id for e in snap.BootEntries] == ["ostree-2-rhcos", "ostree-1-rhcos"]
    assert [d.version for d in snap.Deployments] == ["410.84.202203081640-0", "49.84.202110081407-0"]
    assert snap.Deployments[1].rollback and snap.RollbackDeployment == snap.Deployments[1].id
    assert snap.Deployments[0].bootcsum.startswith("838cd9a1") and snap.Deployments[1].bootcsum.startswith("a10b07df")
    assert [m.mount_point for m in snap.Mounts] == ["/", "/sysroot", "/usr", "/etc", "/var", "/boot"]


@pytest.mark.unit
def test_every_problem_code_is_documented() -> None:
    """docs/problems.md documents exactly model.PROBLEM_CODES, and its retired ones RETIRED_PROBLEM_CODES."""
    import re

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "problems.md").read_text()
    current, _, retired_part = doc.partition("## Retired codes")
    documented = re.findall(r"^\| `([a-z-]+)` \|", current, re.M)
    retired = re.findall(r"^\| `([a-z-]+)` \|", retired_part, re.M)
    assert len(documented) == len(set(documented)) >= 16
    assert set(documented) == set(model.PROBLEM_CODES)
    # A retired code stays documented (scripts may match it) and is never emitted again.
    assert set(retired) == set(model.RETIRED_PROBLEM_CODES)
    assert not set(retired) & set(model.PROBLEM_CODES)
    # Every code in the table is emitted somewhere in the reader (no dead code in the table).
    # The reader's, and the boot records' (ostreewatch/boottracker.py, docs/boot-outcome.md).
    sources = [(root / "ostreewatch" / name).read_text() for name in ("state.py", "boottracker.py")]
    used = {name for text in sources for name in re.findall(r"ProblemCode\.([A-Z_]+)", text)}
    assert used == {c.name for c in model.ProblemCode}


@pytest.mark.parametrize("source", ["sample", "ostree-3", "ostree-3-loader-conf", "ostree-10"])
def test_entry_order_and_default_agree_with_bootctl(
    tmp_path: Path, source: str, request: pytest.FixtureRequest
) -> None:
    from tests.fixtures.oracles import bootctl_list, write_esp

    if source == "sample":
        paths = sample_paths()
    else:
        if source == "ostree-10":
            sr = request.getfixturevalue("sysroot_10_template")  # read only
        else:
            sr = OstreeSysroot(tmp_path)
            copy_sysroot(request.getfixturevalue("sysroot_3_template").path, sr.path)
        if source.endswith("loader-conf"):
            Path(sr.entries_dir(), "..", "loader.conf").write_text("timeout 3\ndefault OSTREE-2-*\n")
        paths = sr.paths()
    snap = read_snapshot(paths)
    entries_dir = Path(paths.sysroot, "boot", "loader", "entries")
    conf = Path(paths.sysroot, "boot", "loader", "loader.conf")
    esp = tmp_path / "esp"
    write_esp(
        str(esp), {p.name: p.read_bytes() for p in entries_dir.iterdir()}, conf.read_text() if conf.exists() else None
    )
    listed, default = bootctl_list(str(esp))
    assert [e.file for e in snap.BootEntries] == [e["id"] for e in listed]
    assert snap.DefaultEntry + ".conf" == default
    assert [e.title for e in snap.BootEntries] == [e.get("title", "") for e in listed]


def test_mounts_agree_with_findmnt(tmp_path: Path) -> None:
    """The sample's mount table, plus this process's own: Mounts agree with `findmnt -F`."""
    from tests.fixtures.oracles import findmnt_file

    for mountinfo in (sample_paths().mountinfo, "/proc/self/mountinfo"):
        copy = tmp_path / "mountinfo"
        copy.write_bytes(Path(mountinfo).read_bytes())
        paths = Paths(sysroot=sample_paths().sysroot, mountinfo=str(copy), cmdline=str(copy), run=str(tmp_path))
        snap = read_snapshot(paths)
        top = {}
        for fs in findmnt_file(str(copy)):
            if fs["target"] in model.WATCHED_MOUNT_POINTS:
                top[fs["target"]] = fs
        assert [m.mount_point for m in snap.Mounts] == [p for p in model.WATCHED_MOUNT_POINTS if p in top]
        for m in snap.Mounts:
            fs = top[m.mount_point]
            assert (
                m.mount_id,
                m.parent_id,
                m.device,
                m.root,
                m.source,
                m.fstype,
                m.options,
                m.super_options,
                m.propagation,
            ) == (
                fs["id"],
                fs["parent"],
                fs["maj:min"],
                fs["fsroot"],
                fs["source"],
                fs["fstype"],
                fs["vfs-options"],
                fs["fs-options"],
                fs["opt-fields"] or "",
            )
            assert m.read_only == ("ro" in fs["vfs-options"].split(","))


def test_status_inside_imitated_booted_host(sysroot_3: OstreeSysroot) -> None:
    """`ostreewatch status --offline --json` with every default (sysroot /, /proc, /run) inside the imitation
    that `ostree admin status` runs in: the same booted/pending/rollback, for each deployment in turn."""
    import json

    from tests.fixtures.sysroots import imitate_booted

    src = str(Path(__file__).resolve().parent.parent / "ostreewatch")
    status = sysroot_3.admin_status()
    for index, dep in enumerate(status):
        marks = {s.id: s.marks for s in sysroot_3.booted_admin_status(index)}
        arg = sysroot_3.ostree_arg_of(dep)
        p = imitate_booted(
            sysroot_3.path,
            sysroot_3.deploy_dir(dep),
            ["/usr/bin/python3", "-m", "ostreewatch.cli", "status", "--offline", "--json"],
            cmdline=f"rw ostree={arg}\n",
            binds=[(src, "/tmp/src/ostreewatch")],
            env={"PYTHONPATH": "/tmp/src"},
        )
        assert p.returncode == 0, p.stderr
        snap = json.loads(p.stdout)
        assert snap["OstreeBooted"] and snap["BootedDeployment"] == dep.id
        assert snap["BootedEntry"] == next(e["id"] for e in snap["BootEntries"] if e["ostree"] == arg)
        for d in snap["Deployments"]:
            assert d["path"] == f"/ostree/deploy/{d['osname']}/deploy/{d['checksum']}.{d['serial']}"
            m = marks[d["id"]]
            assert d["booted"] == ("*" in m)
            assert (d["default"] and not d["booted"]) == ("pending" in m)
            assert d["rollback"] == ("rollback" in m)
        assert [d["version"] for d in snap["Deployments"]] == [s.version for s in status]
        mounts = {m["mount_point"]: m for m in snap["Mounts"]}
        assert mounts["/"]["root"].endswith(f"/ostree/deploy/{dep.osname}/deploy/{dep.checksum}.{dep.serial}")
        # Booted into an older deployment = an update is pending: no problem (booted-not-default is retired).
        assert [p["code"] for p in snap["Problems"]] == []


@pytest.mark.timeout(120)
def test_random_hostile_mutations_never_raise(sysroot_3: OstreeSysroot) -> None:
    """Random damage (FIFOs, link loops, links out, garbage, huge sparse files, dirs for files) piles up:
    every read still returns a snapshot, and only problems say what is wrong."""
    import random
    import shutil

    rng = random.Random(20261127)
    paths = sysroot_3.paths()
    Path(paths.run, "ostree").mkdir()
    extra = [
        Path(paths.run, "ostree-booted"),
        Path(paths.run, "ostree", "staged-deployment"),
        Path(paths.cmdline),
        Path(paths.mountinfo),
    ]

    def candidates() -> list[Path]:
        out: list[Path] = list(extra)
        for top in ("boot", "ostree"):
            for dirpath, dirnames, filenames in os.walk(Path(sysroot_3.path, top)):
                if "repo" in dirnames:
                    dirnames.remove("repo")
                if dirpath.count("/") - sysroot_3.path.count("/") > 5:
                    dirnames[:] = []
                dirnames.sort()
                out += [Path(dirpath, n) for n in sorted(dirnames + filenames)]
        return out  # in a stable order, so the seed gives the same damage everywhere

    targets = ["/", "..", ".", "/etc/passwd", "/proc/self/fd/0", "/dev/zero", "../../../../../../..", "x/../../y"]
    seen: set = set()
    for step in range(60):
        victim = rng.choice(candidates())
        action = rng.choice(["fifo", "link", "garbage", "dir", "huge", "delete", "selflink"])
        if victim.is_dir() and not victim.is_symlink():
            shutil.rmtree(victim)
        elif victim.exists() or victim.is_symlink():
            victim.unlink()
        victim.parent.mkdir(parents=True, exist_ok=True)
        if action == "fifo":
            os.mkfifo(victim)
        elif action == "link":
            os.symlink(rng.choice(targets), victim)
        elif action == "selflink":
            os.symlink(victim.name, victim)
        elif action == "garbage":
            victim.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
        elif action == "dir":
            victim.mkdir()
        elif action == "huge":
            with open(victim, "wb") as f:
                f.truncate(200 * 1024 * 1024)
        try:
            snap = read_snapshot(paths)
        except SysrootError:
            continue  # ostree/deploy itself was hit: the one allowed error
        assert isinstance(snap, model.Snapshot), (step, action, victim)
        model.snapshot_to_plain(snap)
        seen.update(p.code for p in snap.Problems)
    assert len(seen) >= 5, seen  # the damage was really seen


def test_odd_names_and_options(sysroot_3: OstreeSysroot) -> None:
    entries = sysroot_3.entries_dir().encode()
    with open(os.path.join(entries, b"\xff\xfe.conf"), "w") as f:
        f.write("title bad name\nlinux /x\n")
    Path(sysroot_3.entries_dir(), "nul.conf").write_text('title nul\nlinux /x\noptions a="b ostree=/x\n')
    snap = read_snapshot(sysroot_3.paths())
    model.snapshot_to_plain(snap)
    import json

    json.dumps(model.snapshot_to_plain(snap), ensure_ascii=False).encode("utf-8")
    assert len(snap.Deployments) == 3 and all(d.entry for d in snap.Deployments)


def test_version_is_the_commit_version(sysroot_3: OstreeSysroot) -> None:
    """ostree admin status shows the commit's version; os-release is the fallback when the repo lacks it."""
    csum = sysroot_3.commit(
        "fedora/x",
        version="40.20240101.0",
        kver="6.9.0",
        os_release='NAME=Fedora\nVERSION="40 (CoreOS)"\nPRETTY_NAME="Fedora CoreOS 40"\n',
    )
    sysroot_3.deploy("fedora/x")
    snap = read_snapshot(sysroot_3.paths())
    assert_agrees(sysroot_3, snap)
    assert snap.Deployments[0].version == "40.20240101.0" and snap.Deployments[0].title == "Fedora CoreOS 40"
    os.unlink(os.path.join(sysroot_3.repo, "objects", csum[:2], csum[2:] + ".commit"))
    from ostreewatch import state

    state._COMMIT_VERSIONS.clear()  # versions are cached per commit (immutable objects); a new process
    assert read_snapshot(sysroot_3.paths()).Deployments[0].version == "40 (CoreOS)"
