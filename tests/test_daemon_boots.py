"""Boot outcomes from the real daemon on a real bus: consecutive "boots" of a sysroot built by the real ostree.

A boot here is a daemon start with another --boot-id-file and an imitated booted host (an empty
run/ostree-booted and a mount table whose / is the deployment); what GRUB would do between boots
(clear a one-shot next_entry, greenboot's counter) is done with grub-editenv, GRUB's own tool.
These are not real boots: the VM rig of the real-boots issue makes them (docs/boot-outcome.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ostreewatch import bootstore, journal
from tests.fixtures.procs import busctl_plain, wait
from tests.fixtures.sysroots import OstreeSysroot

REPO = Path(__file__).resolve().parent.parent


class Host:
    """One sysroot and its state directory, booted again and again."""

    def __init__(
        self,
        sr: OstreeSysroot,
        tmp: Path,
        bus: Any,
        factory: Any,
        prefix: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> None:
        self.sr, self.tmp, self.bus, self.factory, self.prefix, self.extra = sr, tmp, bus, factory, prefix, extra
        self.state = tmp / "state"
        self.grubenv = sr.write_grub()
        self.n = 0
        self.d: Any = None

    def boot_id(self, n: int) -> str:
        return f"{n:032x}"

    def boot(self, index: int, same_boot: bool = False) -> Any:
        """Stop the running daemon, 'boot' deployment INDEX, start the daemon; it once LastBoot is there."""
        if self.d is not None:
            self.d.stop()
        if not same_boot:
            self.n += 1
        dep = self.sr.admin_status()[index]
        rel = f"/ostree/deploy/{dep.osname}/deploy/{dep.checksum}.{dep.serial}"
        d = self.tmp / f"boot{self.n}"
        (d / "run").mkdir(parents=True, exist_ok=True)
        (d / "run" / "ostree-booted").write_bytes(b"")
        (d / "mountinfo").write_text(f"102 1 252:4 {rel} / rw,relatime shared:1 - xfs /dev/vda4 rw\n")
        (d / "cmdline").write_text("root=UUID=0 rw\n")
        # The kernel's form, with dashes; the daemon keeps systemd's (journal _BOOT_ID) form.
        b = self.boot_id(self.n)
        (d / "boot_id").write_text(f"{b[:8]}-{b[8:12]}-{b[12:16]}-{b[16:20]}-{b[20:]}\n")
        self.d = self.factory(
            self.bus,
            self.sr.path,
            run=str(d / "run"),
            mountinfo=str(d / "mountinfo"),
            cmdline=str(d / "cmdline"),
            extra_args=["--state-dir", str(self.state), "--boot-id-file", str(d / "boot_id"), *self.extra],
            prefix=self.prefix,
        )
        self.d.wait_name()
        wait("LastBoot", lambda: self.last().get("boot_id") == b)
        return self.d

    def last(self) -> dict[str, Any]:
        return busctl_plain(self.d.get_property("LastBoot"))

    def history(self) -> list[dict[str, Any]]:
        return busctl_plain(self.d.get_property("BootHistory"))

    def problems(self) -> dict[str, dict[str, str]]:
        return {p["code"]: p for p in busctl_plain(self.d.get_property("Problems"))}

    def stored_expectation(self) -> Any:
        loaded = bootstore.load(str(self.state))
        assert loaded.corrupt == ""
        return loaded.boots[0].expectation

    def editenv(self, *args: str) -> None:
        subprocess.run(["grub-editenv", self.grubenv, *args], check=True, timeout=30)

    def entry_of(self, index: int) -> str:
        dep = self.sr.admin_status()[index]
        return next(e["id"]["data"] for e in self.d.get_property("BootEntries") if e["deployment"]["data"] == dep.id)


def test_consecutive_boots_are_judged(
    sysroot_3: OstreeSysroot, tmp_path: Path, system_bus: Any, daemon_factory: Any
) -> None:
    h = Host(sysroot_3, tmp_path, system_bus, daemon_factory)
    deps = [d.id for d in sysroot_3.admin_status()]

    # Boot 1: nothing recorded yet.
    h.boot(0)
    last = h.last()
    assert last["outcome"] == "first-record" and last["previous_boot_id"] == ""
    assert last["booted_deployment"] == deps[0] and last["booted_entry"] == h.entry_of(0)
    assert last["finalize_failed"] is False and last["timestamp"] > 1_600_000_000_000_000
    wait("the expectation written", lambda: h.stored_expectation() is not None)
    assert h.stored_expectation().expected_deployment == deps[0]
    assert oct((h.state / "boots").stat().st_mode & 0o777) == "0o644"

    # Boot 2: a plain reboot into the default.
    h.boot(0)
    assert h.last()["outcome"] == "default", h.last()
    assert h.last()["previous_boot_id"] == h.boot_id(1)
    assert [b["boot_id"] for b in h.history()] == [h.boot_id(2), h.boot_id(1)]

    # A one-shot set during boot 2 (GRUB's generated config reads next_entry) is written down at once.
    one_shot = h.entry_of(1)
    h.editenv("set", f"next_entry={one_shot}")
    wait("NextEntry", lambda: h.d.get_property("NextEntry") == one_shot)
    wait("the one-shot expected", lambda: h.stored_expectation().next_entry == one_shot)
    assert h.stored_expectation().expected_deployment == deps[1]
    # Boot 3: GRUB boots it and clears it (boot_once), as 00_header does: after the daemon stopped
    # (its last read at stop records what the boot loader holds then).
    h.d.stop()
    h.editenv("unset", "next_entry")
    h.boot(1)
    assert h.last()["outcome"] == "next-entry", h.last()
    assert h.last()["expected_entry"] == one_shot

    # Boot 4: the rollback entry again, with nothing pending: a menu choice.
    h.boot(1)
    assert h.last()["outcome"] == "other-entry", h.last()
    assert "menu choice" in h.last()["reason"]

    # Boot 5: greenboot's counter ran out (08_greenboot.cfg sets boot_counter=-1 and boots entry 1).
    h.editenv("set", "boot_counter=-1", "boot_success=0")
    h.boot(1)
    assert h.last()["outcome"] == "fallback", h.last()
    assert "greenboot" in h.last()["reason"]
    assert "boot-fallback" in h.problems()
    assessment = busctl_plain(h.d.get_property("BootAssessment"))
    assert assessment["boot_counter"] == "-1" and assessment["boot_success"] == "0"
    # No systemd on this private bus: whether boot-complete.target was reached is unknown, so absent
    # (tests/test_nspawn.py asks a real PID 1).
    assert "boot_complete" not in assessment and assessment["tries_left"] == {}
    # The daemon restarted within the same boot judges nothing again.
    h.boot(1, same_boot=True)
    assert [b["boot_id"] for b in h.history()][:2] == [h.boot_id(5), h.boot_id(4)]
    assert h.last()["outcome"] == "fallback" and "boot-fallback" in h.problems()

    # Boot 6: still not the default (greenboot's rollback kept): the fallback problem stays.
    h.editenv("unset", "boot_counter", "boot_success")
    h.boot(1)
    assert h.last()["outcome"] == "other-entry" and "boot-fallback" in h.problems()
    # Boot 7: the default boots as expected: the problem goes.
    h.boot(0)
    assert h.last()["outcome"] == "default" and "boot-fallback" not in h.problems()
    outcomes = [b["outcome"] for b in h.history()]
    assert outcomes == [
        "default",
        "other-entry",
        "fallback",
        "other-entry",
        "next-entry",
        "default",
        "first-record",
    ]

    # The CLI: the history as a table and as JSON, and the status line.
    env = h.d.env()
    r = subprocess.run(
        [sys.executable, "-m", "ostreewatch.cli", "boots", "--json", "--bus", h.d.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert [b["outcome"] for b in json.loads(r.stdout)["BootHistory"]] == outcomes
    r = subprocess.run(
        [sys.executable, "-m", "ostreewatch.cli", "boots", "--bus", h.d.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["BOOT", "OUTCOME", "BOOTED"]
    assert [line.split()[1] for line in lines[1:]] == outcomes
    r = subprocess.run(
        [sys.executable, "-m", "ostreewatch.cli", "status", "--bus", h.d.address],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr
    assert f"Last boot: default ({h.boot_id(7)[:8]}" in r.stdout


def test_a_one_shot_set_just_before_the_stop_is_in_the_records(
    sysroot_3: OstreeSysroot, tmp_path: Path, system_bus: Any, daemon_factory: Any
) -> None:
    """The logind bridge writes next_entry right before the daemon stops: the last read at stop catches it.

    A 10 s debounce stands for a read in flight or a debounce that SIGTERM cuts short on a host.
    """
    h = Host(sysroot_3, tmp_path, system_bus, daemon_factory, extra=("--debounce-ms", "10000"))
    h.boot(0)
    wait("the first expectation written", lambda: h.stored_expectation() is not None)
    one_shot = h.entry_of(1)
    h.editenv("set", f"next_entry={one_shot}")
    assert h.d.stop() == 0
    assert h.stored_expectation().next_entry == one_shot
    assert h.stored_expectation().expected_deployment == sysroot_3.admin_status()[1].id
    h.editenv("unset", "next_entry")
    h.boot(1)
    assert h.last()["outcome"] == "next-entry", h.last()


def test_corrupt_records_and_finalize_failure(
    sysroot_3: OstreeSysroot, tmp_path: Path, system_bus: Any, daemon_factory: Any
) -> None:
    h = Host(sysroot_3, tmp_path, system_bus, daemon_factory)
    h.boot(0)
    h.d.stop()
    # A torn file (half of it): set aside, reported, a fresh start; never a crash.
    data = (h.state / "boots").read_bytes()
    (h.state / "boots").write_bytes(data[: len(data) // 2])
    h.boot(0)
    assert h.last()["outcome"] == "first-record"
    # The reason says where the history went, not that the previous boot left nothing.
    assert "set aside" in h.last()["reason"] and str(h.state / "boots.corrupt") in h.last()["reason"]
    corrupt = h.problems()["boot-record-corrupt"]
    assert "boots.corrupt" in corrupt["message"] and corrupt["subject"] == str(h.state / "boots")
    assert (h.state / "boots.corrupt").read_bytes() == data[: len(data) // 2]
    assert len(h.history()) == 1

    # ostree-finalize-staged failed at the last shutdown: its stamp is read at start, with its text.
    stamp = Path(sysroot_3.path, "boot/ostree/finalize-failure.stamp")
    stamp.parent.mkdir(exist_ok=True)
    stamp.write_text("error: Finalizing staged deployment: Merging /etc: boom\n")
    h.boot(0)
    last = h.last()
    assert last["finalize_failed"] is True and "Merging /etc: boom" in last["finalize_error"]
    fin = h.problems()["finalize-failed"]
    assert "Merging /etc: boom" in fin["message"]
    assert "boot-record-corrupt" not in h.problems()  # that was the previous boot's
    # ostree-boot-complete.service removes the stamp; a restart in the same boot still knows.
    stamp.unlink()
    h.boot(0, same_boot=True)
    assert "finalize-failed" in h.problems()
    # The next boot without a stamp: gone.
    h.boot(0)
    assert "finalize-failed" not in h.problems() and h.last()["finalize_failed"] is False


def test_no_state_dir_keeps_no_records(sysroot_3: OstreeSysroot, system_bus: Any, daemon_factory: Any) -> None:
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--state-dir", ""])
    d.wait_name()
    assert d.get_property("LastBoot") == {} and d.get_property("BootHistory") == []
    assert not os.path.exists(os.path.join(d.tmp, "state"))


def test_one_journal_record_per_boot(
    sysroot_3: OstreeSysroot, tmp_path: Path, system_bus: Any, daemon_factory: Any, journald: Any
) -> None:
    """In a real systemd-journald: one boot-outcome record per boot, none for a restart within a boot."""
    h = Host(sysroot_3, tmp_path, system_bus, daemon_factory, prefix=tuple(journald.prefix()))
    h.boot(0)
    h.boot(1)
    h.boot(1, same_boot=True)
    h.d.stop()
    journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_STOPPING, timeout=30)
    records = journald.wait_for(MESSAGE_ID=journal.MESSAGE_ID_BOOT_OUTCOME, timeout=30)
    assert [r["OSTREEWATCH_BOOT_ID"] for r in records] == [h.boot_id(1), h.boot_id(2)]
    first, second = records
    assert first["OSTREEWATCH_BOOT_OUTCOME"] == "first-record" and first["PRIORITY"] == "6"
    assert second["OSTREEWATCH_BOOT_OUTCOME"] == "other-entry" and second["PRIORITY"] == "5"
    assert second["OSTREEWATCH_PREVIOUS_BOOT_ID"] == h.boot_id(1)
    assert second["OSTREEWATCH_BOOTED_DEPLOYMENT"] == sysroot_3.admin_status()[1].id
    assert second["OSTREEWATCH_EXPECTED_DEPLOYMENT"] == sysroot_3.admin_status()[0].id
    assert second["OSTREEWATCH_EXPECTED_ENTRY"] and second["OSTREEWATCH_BOOTED_ENTRY"]
    assert second["OSTREEWATCH_FINALIZE_FAILED"] == "no" and "menu choice" in second["OSTREEWATCH_REASON"]
    assert second["MESSAGE"].startswith(f"Boot {h.boot_id(2)}: other-entry. ")


def test_unusable_boot_id_or_state_dir_is_a_problem_not_a_crash(
    sysroot_3: OstreeSysroot, tmp_path: Path, system_bus: Any, daemon_factory: Any
) -> None:
    bad_id = tmp_path / "boot_id"
    bad_id.write_text("not a boot id\n")
    d = daemon_factory(system_bus, sysroot_3.paths(), extra_args=["--boot-id-file", str(bad_id)])
    d.wait_name()
    problems = {p["code"]: p for p in busctl_plain(d.get_property("Problems"))}
    assert "not a boot id" in problems["boot-record-failed"]["message"]
    assert d.get_property("LastBoot") == {} and d.alive()
    d.stop()
    # The state directory is a file: nothing can be written; the state is still published.
    state_file = tmp_path / "state"
    state_file.write_text("")
    good_id = tmp_path / "good_id"
    good_id.write_text("0123456789abcdef0123456789abcdef\n")
    d = daemon_factory(
        system_bus, sysroot_3.paths(), extra_args=["--state-dir", str(state_file), "--boot-id-file", str(good_id)]
    )
    d.wait_name()
    wait(
        "boot-record-failed",
        lambda: "boot-record-failed" in [p["code"] for p in busctl_plain(d.get_property("Problems"))],
    )
    assert busctl_plain(d.get_property("LastBoot"))["outcome"] == "first-record" and d.alive()
    assert len(d.get_property("Deployments")) == 3
