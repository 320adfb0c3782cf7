"""Boot outcomes around a staged update, with sid's ostree 2026.4 doing every step for real.

Each "boot" is ostree-prepare-root (2026.4) booting an entry of a sysroot on its own tmpfs
(tests/fixtures/modern.py), the daemon then watching what that boot shows. Boot 1 stages an
update (`ostree admin deploy --stage`); its "shutdown" is `ostree admin finalize-staged` run
inside a booted namespace with boot 1's /run/ostree/staged-deployment, what
ostree-finalize-staged.service runs at shutdown. To make the finalization fail for real, the
staged deployment's /etc is made immutable and the booted /etc holds an added file: ostree's
/etc merge fails and ostree itself writes /boot/ostree/finalize-failure.stamp.
Not real boots: the VM rig of the real-boots issue does those (docs/boot-outcome.md).
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable

from ostreewatch import bootstore, state
from tests.fixtures.modern import BootCapture, ModernSysroot, boot_prepare_root, modern_sysroot  # noqa: F401
from tests.fixtures.procs import busctl_plain, wait


def run_daemon(factory: Any, bus: Any, sr: ModernSysroot, boot: BootCapture, state_dir: Path, n: int) -> Any:
    """The daemon for 'boot' N: what BOOT shows, this boot's id N, the records in STATE_DIR."""
    boot_id = Path(boot.out) / "boot_id"
    boot_id.write_text(f"{n:032x}\n")
    d = factory(
        bus,
        state.Paths(sysroot=sr.path, mountinfo=boot.mountinfo, cmdline=boot.cmdline, run=boot.run),
        extra_args=["--state-dir", str(state_dir), "--boot-id-file", str(boot_id)],
    )
    d.wait_name()
    wait("LastBoot", lambda: busctl_plain(d.get_property("LastBoot")).get("boot_id") == f"{n:032x}")
    return d


def stage_and_record(
    sr: ModernSysroot, tmp_path: Path, bus: Any, factory: Any
) -> tuple[state.model.BootEntry, BootCapture, str]:
    """Boot 1: boot the default, stage fedora/x, let the daemon write the expectation down."""
    sr.build(2)
    entry = state.read_snapshot(sr.paths()).BootEntries[0]
    sr.commit("fedora/x", version="3", kver="6.1.3")
    boot1 = boot_prepare_root(
        sr, entry.file, tmp_path / "boot1", composefs=False, action='chroot "$B" ostree admin deploy --stage fedora/x'
    )
    staged = next(f"{d['stateroot']}-{d['checksum']}.{d['serial']}" for d in boot1.status_after if d["staged"])
    d = run_daemon(factory, bus, sr, boot1, tmp_path / "state", 1)
    assert busctl_plain(d.get_property("LastBoot"))["outcome"] == "first-record"
    assert d.get_property("StagedDeployment") == staged
    wait(
        "the staged deployment expected",
        lambda: (
            getattr(bootstore.load(str(tmp_path / "state")).boots[0].expectation, "staged_deployment", "") == staged
        ),
    )
    exp = bootstore.load(str(tmp_path / "state")).boots[0].expectation
    assert exp is not None and exp.expected_deployment == staged and exp.expected_entry == entry.id
    d.stop()
    return entry, boot1, staged


def finalize(sr: ModernSysroot, entry_file: str, boot1: BootCapture, out: Path, break_etc: str = "") -> str:
    """Boot 1's shutdown: ostree admin finalize-staged with boot 1's staged-deployment; its output."""
    staged_file = shlex.quote(os.path.join(boot1.run, "ostree", "staged-deployment"))
    log = shlex.quote(str(out / "finalize.log"))
    action = f'mkdir -p "$B/run/ostree" && cp {staged_file} "$B/run/ostree/"'
    if break_etc:
        # An /etc change to carry over, and a staged /etc that refuses it: the merge fails.
        action += f' && echo changed > "$B/etc/ostreewatch-test.conf" && chattr +i {shlex.quote(break_etc)}'
    action += f'; chroot "$B" ostree admin finalize-staged > {log} 2>&1 || echo "exit $?" >> {log}'
    if break_etc:
        action += f"; chattr -i {shlex.quote(break_etc)}"
    boot_prepare_root(sr, entry_file, out, composefs=False, action=action)
    return (out / "finalize.log").read_text()


def test_a_finalized_staged_deployment_boots_as_staged(
    modern_sysroot: Any, tmp_path: Path, system_bus: Any, daemon_factory: Any
) -> None:
    sr: ModernSysroot = modern_sysroot("2026.4")
    entry, boot1, staged = stage_and_record(sr, tmp_path, system_bus, daemon_factory)
    log = finalize(sr, entry.file, boot1, tmp_path / "shutdown1")
    assert "exit" not in log, log
    assert not Path(sr.path, "boot/ostree/finalize-failure.stamp").exists()
    # Boot 2: the boot loader's first entry is now the finalized deployment.
    new = state.read_snapshot(sr.paths()).BootEntries[0]
    assert new.deployment == staged
    boot2 = boot_prepare_root(sr, new.file, tmp_path / "boot2", composefs=False)
    d = run_daemon(daemon_factory, system_bus, sr, boot2, tmp_path / "state", 2)
    last = busctl_plain(d.get_property("LastBoot"))
    assert last["outcome"] == "staged", last
    assert last["booted_deployment"] == last["expected_deployment"] == staged
    assert last["previous_boot_id"] == f"{1:032x}" and last["finalize_failed"] is False
    problems = [p["code"] for p in busctl_plain(d.get_property("Problems"))]
    assert "finalize-failed" not in problems and "boot-fallback" not in problems


def test_a_failed_finalization_is_recorded_with_ostrees_message(
    modern_sysroot: Any, tmp_path: Path, system_bus: Any, daemon_factory: Any
) -> None:
    sr: ModernSysroot = modern_sysroot("2026.4")
    entry, boot1, staged = stage_and_record(sr, tmp_path, system_bus, daemon_factory)
    staged_etc = os.path.join(sr.path, "ostree/deploy/fedora/deploy", staged.split("-", 1)[1], "etc")
    log = finalize(sr, entry.file, boot1, tmp_path / "shutdown1", break_etc=staged_etc)
    assert "During /etc merge" in log and "exit 1" in log, log
    stamp = Path(sr.path, "boot/ostree/finalize-failure.stamp")
    ostree_says = stamp.read_text().strip()  # written by ostree 2026.4 itself
    assert "During /etc merge" in ostree_says
    # Boot 2: the update never reached the boot loader; the old default boots.
    assert state.read_snapshot(sr.paths()).BootEntries[0].deployment == entry.deployment
    boot2 = boot_prepare_root(sr, entry.file, tmp_path / "boot2", composefs=False)
    d = run_daemon(daemon_factory, system_bus, sr, boot2, tmp_path / "state", 2)
    last = busctl_plain(d.get_property("LastBoot"))
    assert last["outcome"] == "other-entry", last
    assert last["finalize_failed"] is True and last["finalize_error"] == ostree_says
    assert last["expected_deployment"] == staged and last["booted_deployment"] == entry.deployment
    assert "not finalized" in last["reason"] and "During /etc merge" in last["reason"]
    problem = next(p for p in busctl_plain(d.get_property("Problems")) if p["code"] == "finalize-failed")
    assert ostree_says in problem["message"] and problem["subject"] == "/boot/ostree/finalize-failure.stamp"
    # ostree-boot-complete.service removes the stamp after our READY=1; the boot keeps its record.
    stamp.unlink()
    d.stop()
    d = run_daemon(daemon_factory, system_bus, sr, boot2, tmp_path / "state", 2)
    assert "finalize-failed" in [p["code"] for p in busctl_plain(d.get_property("Problems"))]
