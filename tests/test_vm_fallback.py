"""Real boots (issue 18): a GRUB fallback by greenboot's counter, a power cut, a failed finalization.

One chain (tests/fixtures/vm.py) on bootupd's static grub.cfg with greenboot's drop-in
counting down in upstream GRUB script (tests/fixtures/grub_configs.py
rig_static_greenboot_upstream: GRUB 2.14 has no `decrement`), four boots:

- fb-a: A boots; an update B is staged (finalized at shutdown) and greenboot's
  set-counter step leaves boot_counter=1; a unit that says "OWVM RECORDED BOOT_ID" on
  ttyS1 once ostreewatchd wrote this boot's record is enabled.
- fb-b: GRUB counts 1 -> 0 and boots B, whose health check "fails" (nothing sets
  boot_success=1); QEMU is SIGKILLed as soon as the daemon wrote its first record (a
  power cut right after the daemon started, the hard reset of a failing boot).
- fb-c: GRUB's counter ran out: `set default=1` boots A, boot_counter=-1. LastBoot is a
  fallback judged against the killed boot's first expectation. Then greenboot's rollback
  (A made the default, the counter unset) and an update C staged whose /etc merge will
  fail at shutdown (its /etc made immutable, an /etc change to carry over).
- fb-d: ostree-finalize-staged failed: LastBoot says so with ostree's own text.

Oracles in the guest: /proc/cmdline and the BLS entries, `ostree admin status --json`,
`grub-editenv list`, the journal of ostree-boot-complete.service and of the previous
boot's ostree-finalize-staged.service, the marker with the killed boot's id.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fixtures import grub_configs
from tests.fixtures.vm import BootChain, make_chain, vm_work  # noqa: F401  (vm_work: a fixture)
from tests.test_vm_boot import (
    STAGE_UPDATE,
    dep_id,
    deployments,
    entry_of_cmdline,
    entry_of_deployment,
    grubenv_vars,
    journal,
    the,
)
from tests.vm import rig

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1800)]

GRUBENV = "/boot/grub/grubenv"
GREENBOOT_VARS = ("boot_counter", "boot_success", "fallback", "greenboot_next_deployment_id")

# A unit (in the booted /etc, carried into later deployments by ostree's /etc merge) that
# prints "OWVM RECORDED BOOT_ID" on ttyS1 once the daemon journaled this boot's outcome,
# which it does when the save of the records file (fsync, rename, fsync of the directory)
# has returned: the moment the host cuts the power in fb-b. (The file alone shows the new
# record as soon as it is renamed, before the directory's fsync.) A script file, not an
# ExecStart= line: systemd would expand the shell's $ itself.
RECORDED_UNIT = r"""
cat > /etc/owvm-recorded.sh <<'EOF'
id="$(tr -d - < /proc/sys/kernel/random/boot_id)"
for _ in $(seq 3000); do
    if journalctl -b -q -o cat MESSAGE_ID=5d939b4156054d0287495192d5bb7224 | grep -q .; then
        echo "OWVM RECORDED $id" > /dev/ttyS1
        exit 0
    fi
    sleep 0.2
done
echo "OWVM NOT-RECORDED $id" > /dev/ttyS1
EOF
cat > /etc/systemd/system/owvm-recorded.service <<'EOF'
[Unit]
Description=ostreewatch VM rig: say on ttyS1 when ostreewatchd has written this boot's record
DefaultDependencies=no
After=ostreewatch.service

[Service]
Type=exec
ExecStart=/bin/bash /etc/owvm-recorded.sh

[Install]
WantedBy=sysinit.target
EOF
rec enable-recorded.txt systemctl enable owvm-recorded.service
"""


def grubenv_edit(out: str, *args: str) -> str:
    """A guest line: grub-editenv on /boot's grubenv, remounted read-write in a private namespace (as greenboot)."""
    return f"rec {out} unshare -m sh -c 'mount -o remount,rw /boot && grub-editenv {GRUBENV} {' '.join(args)}'\n"


# greenboot-grub2-set-counter, which runs when an update is staged: boot_counter=N
# (greenboot's default is 3; 1 here, so one failing boot of B, then the fallback).
# boot_success=0 is already in the grubenv: GRUB's drop-in saved it at this boot.
FB_A = (
    RECORDED_UNIT
    + STAGE_UPDATE
    + grubenv_edit("set-counter.txt", "set", "boot_counter=1")
    + f"rec grubenv-list.txt grub-editenv {GRUBENV} list\n"
)

# The update C: staged like B; ostree merges /etc into it at shutdown. An /etc change to carry
# over and an immutable /etc in C make that merge fail (tests/test_daemon_boots_staged.py's
# method, here on the guest's ext4): ostree-finalize-staged fails and writes its stamp.
STAGED_DIR = (
    "dir=\"$(ostree admin status --json | python3 -c 'import json, sys\n"
    'd = [d for d in json.load(sys.stdin)["deployments"] if d.get("staged")][0]\n'
    'print(d["checksum"] + "." + str(d["serial"]))\')"\n'
)
FB_C = (
    f"rec grubenv-list.txt grub-editenv {GRUBENV} list\n"
    # greenboot's rollback when boot_counter=-1 (greenboot-rpm-ostree-grub2-check-fallback,
    # greenboot-rs handle_rollback): `rpm-ostree rollback`, then the counter unset.
    + "rec set-default.txt ostree admin set-default 1\n"
    + grubenv_edit("unset-counter.txt", "unset", "boot_counter")
    + "rec ostree-status-rolled-back.json ostree admin status --json\n"
    + STAGE_UPDATE.replace("update-B", "update-C").replace("version=B", "version=C")
    + "echo changed > /etc/ostreewatch-test.conf\n"
    + STAGED_DIR
    + 'echo "$dir" > staged-dir.txt\n'
    + "rec break-etc.txt unshare -m sh -c 'mount -o remount,rw /sysroot && "
    + 'chattr +i "/sysroot/ostree/deploy/debian/deploy/$0/etc" && '
    + 'lsattr -d "/sysroot/ostree/deploy/debian/deploy/$0/etc"\' "$dir"\n'
    + f"rec grubenv-after.txt grub-editenv {GRUBENV} list\n"
)

FB_D = (
    "rec stamp.txt cat /boot/ostree/finalize-failure.stamp\n"
    "rec boot-complete.json journalctl -b -o json -u ostree-boot-complete.service --no-pager\n"
    "rec finalize-prev.json journalctl -b -1 -o json -u ostree-finalize-staged.service --no-pager\n"
    f"rec grubenv-list.txt grub-editenv {GRUBENV} list\n"
)


@pytest.fixture(scope="module")
def fallback_chain(vm_work) -> BootChain:  # noqa: F811
    """bootupd's static grub.cfg with greenboot's counter in upstream GRUB script."""
    return make_chain(rig.ImageOptions(grub_configs.rig_static_greenboot_upstream()), vm_work, "fallback")


def codes(props: dict[str, Any]) -> list[str]:
    """The codes of the published Problems."""
    return [p["code"] for p in props["Problems"]]


def daemon_ran_clean(result: rig.BootResult) -> None:
    """ostreewatch.service active, never restarted, no error record from the daemon."""
    unit = result.units()["ostreewatch.service"]
    assert (unit["ActiveState"], unit.get("NRestarts", "0")) == ("active", "0"), unit
    errors = [r for r in journal(result) if int(r.get("PRIORITY", 6)) <= 3]
    assert errors == [], rig.journal_messages(errors)


def killed_boot_id(chain: BootChain) -> str:
    """The boot id the killed boot fb-b printed before the power cut."""
    r = chain.need("fb-b")
    serial = (r.dir.parent / "ttyS1.log").read_text(errors="replace")
    m = re.search(r"OWVM RECORDED ([0-9a-f]{32})", serial)
    assert m, serial
    return m.group(1)


def test_fallback_a_update_staged_with_a_boot_counter(fallback_chain: BootChain) -> None:
    """A boots; GRUB's upstream-script drop-in saved boot_success=0; B staged; greenboot's counter set to 1."""
    r = fallback_chain.boot("fb-a", FB_A)
    daemon_ran_clean(r)
    props = r.props()
    assert props["BootedDeployment"] == the(deployments(r), "booted") != ""
    assert props["LastBoot"]["outcome"] == "first-record"
    # The drop-in ran in GRUB 2.14: its save_env wrote boot_success=0 (no counter yet).
    assert grubenv_vars(r.text("grubenv.txt")).get("boot_success") == "0", r.text("grubenv.txt")
    assert "boot_counter" not in grubenv_vars(r.text("grubenv.txt"))
    assert r.rc("stage.txt") == 0, r.text("stage.txt.err")
    staged = r.props("props-staged.json")["StagedDeployment"]
    assert staged == the(deployments(r, "ostree-status-staged.json"), "staged") != ""
    assert r.rc("set-counter.txt") == 0, r.text("set-counter.txt.err")
    env = grubenv_vars(r.text("grubenv-list.txt"))
    assert (env.get("boot_counter"), env.get("boot_success")) == ("1", "0"), env
    assert r.rc("enable-recorded.txt") == 0, r.text("enable-recorded.txt.err")
    after = r.props("props-after.json")["BootAssessment"]
    assert (after.get("boot_counter"), after.get("boot_success")) == ("1", "0"), after


def test_fallback_b_power_cut_after_the_daemon_recorded(fallback_chain: BootChain) -> None:
    """B boots (the counter 1 -> 0); QEMU is SIGKILLed once the daemon wrote this boot's first record."""
    fallback_chain.need("fb-a")
    r = fallback_chain.boot("fb-b", kill_at=("RECORDED", 0.0))
    serial = (r.dir.parent / "ttyS1.log").read_text(errors="replace")
    if "OWVM RECORDED" not in serial or "OWVM DONE" in serial:
        fallback_chain.broken = "fb-b: not killed after the daemon's record"
        pytest.fail(f"the power cut did not happen after the daemon's first record: {serial!r}")
    assert not r.dir.exists()  # killed: the guest recorded nothing
    assert re.fullmatch(r"[0-9a-f]{32}", killed_boot_id(fallback_chain))


def test_fallback_c_grub_fell_back(fallback_chain: BootChain) -> None:
    """GRUB's counter ran out: A boots, boot_counter=-1; LastBoot fallback, boot-fallback, BootAssessment as grubenv."""
    a = fallback_chain.need("fb-a")
    a_id, b_id = a.props()["BootedDeployment"], a.props("props-staged.json")["StagedDeployment"]
    r = fallback_chain.boot("fb-c", FB_C)
    daemon_ran_clean(r)
    assert r.text("failed.txt").strip() == "", r.text("failed.txt")
    props = r.props()
    deps = deployments(r)
    # ostree still has B first (the default), A booted: GRUB, not ostree, chose A.
    assert dep_id(deps[0]) == b_id and the(deps, "booted") == a_id == props["BootedDeployment"]
    assert props["BootedEntry"] == entry_of_cmdline(r) == entry_of_deployment(props, a_id)
    env = grubenv_vars(r.text("grubenv-list.txt"))
    assert (env.get("boot_counter"), env.get("boot_success")) == ("-1", "0"), env
    last = props["LastBoot"]
    assert last["outcome"] == "fallback", last
    # The killed boot's grubenv (boot_counter=0, boot_success=0) already made GRUB's fallback
    # certain: its expectation named A, and the boot is still a fallback (bootoutcome.judge).
    assert "boot counter ran out" in last["reason"] and "(it was 0 before)" in last["reason"], last
    assert "foretold" in last["reason"], last
    assert (last["expected_deployment"], last["booted_deployment"]) == (a_id, a_id), last
    # Two boot-fallback problems: the reader's (the grubenv says the counter ran out) and the
    # records' (this boot fell back; kept until a boot goes as expected).
    fell_back = [p for p in props["Problems"] if p["code"] == "boot-fallback"]
    assert any(last["boot_id"] in p["message"] for p in fell_back), props["Problems"]
    assessment = props["BootAssessment"]
    assert {k: assessment[k] for k in GREENBOOT_VARS if k in assessment} == {
        k: env[k] for k in GREENBOOT_VARS if k in env
    }


def test_fallback_c_judged_against_the_killed_boots_first_record(fallback_chain: BootChain) -> None:
    """After the power cut: the records file was readable; the killed boot's record and expectation were used."""
    r = fallback_chain.need("fb-c")
    a = fallback_chain.need("fb-a")
    killed = killed_boot_id(fallback_chain)
    props = r.props()
    assert "boot-record-corrupt" not in codes(props) and "boot-record-failed" not in codes(props)
    assert props["LastBoot"]["previous_boot_id"] == killed
    history = props["BootHistory"]
    assert [h["boot_id"] for h in history] == [props["LastBoot"]["boot_id"], killed, a.props()["LastBoot"]["boot_id"]]
    b_id = a.props("props-staged.json")["StagedDeployment"]
    assert (history[1]["outcome"], history[1]["booted_deployment"]) == ("staged", b_id), history[1]


def test_fallback_c_rollback_and_a_doomed_update_staged(fallback_chain: BootChain) -> None:
    """greenboot's rollback made A the default, the counter unset; C staged with an immutable /etc."""
    r = fallback_chain.need("fb-c")
    a_id = fallback_chain.need("fb-a").props()["BootedDeployment"]
    assert r.rc("set-default.txt") == 0, r.text("set-default.txt.err")
    assert dep_id(deployments(r, "ostree-status-rolled-back.json")[0]) == a_id
    assert r.rc("unset-counter.txt") == 0, r.text("unset-counter.txt.err")
    assert "boot_counter" not in grubenv_vars(r.text("grubenv-after.txt"))
    assert r.rc("stage.txt") == 0, r.text("stage.txt.err")
    staged = r.props("props-staged.json")["StagedDeployment"]
    assert staged == the(deployments(r, "ostree-status-staged.json"), "staged") != ""
    assert staged.endswith(r.text("staged-dir.txt").strip())
    assert r.rc("break-etc.txt") == 0, r.text("break-etc.txt.err")
    assert "i" in r.text("break-etc.txt").split()[0], r.text("break-etc.txt")


def test_fallback_d_finalize_failed(fallback_chain: BootChain) -> None:
    """ostree-finalize-staged failed at shutdown: finalize_failed with ostree's text, finalize-failed, not staged."""
    c = fallback_chain.need("fb-c")
    a_id = fallback_chain.need("fb-a").props()["BootedDeployment"]
    c_id = c.props("props-staged.json")["StagedDeployment"]
    r = fallback_chain.boot("fb-d", FB_D)
    daemon_ran_clean(r)
    props = r.props()
    deps = deployments(r)
    assert props["BootedDeployment"] == the(deps, "booted") == a_id
    assert props["BootedEntry"] == entry_of_cmdline(r)
    assert c_id not in [dep_id(d) for d in deps]
    # ostree's own words: ostree-boot-complete.service printed the stamp and removed it.
    said = [m for m in rig.journal_messages(r.json_lines("boot-complete.json")) if "failed on previous boot" in m]
    assert len(said) == 1, rig.journal_messages(r.json_lines("boot-complete.json"))
    ostree_says = said[0].split("failed on previous boot: ", 1)[1].strip()
    assert "During /etc merge" in ostree_says, ostree_says
    if r.rc("stamp.txt") == 0:
        assert r.text("stamp.txt").strip() == ostree_says
    finalize_log = rig.journal_messages(r.json_lines("finalize-prev.json"))
    assert any(ostree_says in m for m in finalize_log), finalize_log
    assert [line for line in r.text("failed.txt").splitlines() if line.strip()] == [
        line for line in r.text("failed.txt").splitlines() if "ostree-boot-complete.service" in line
    ]
    last = props["LastBoot"]
    assert last["finalize_failed"] is True and last["finalize_error"] == ostree_says, last
    # ostree-finalize-staged removed the staged file before it failed, and the daemon, still watching,
    # wrote that down at shutdown: the last expectation names A, the stamp says C did not boot.
    assert last["outcome"] == "other-entry" != "staged", last
    assert last["booted_deployment"] == a_id != c_id, last
    assert "not finalized" in last["reason"] and ostree_says in last["reason"], last
    problem = next(p for p in props["Problems"] if p["code"] == "finalize-failed")
    assert ostree_says in problem["message"] and problem["subject"] == "/boot/ostree/finalize-failure.stamp"
    assert len(props["BootHistory"]) == 4 and props["BootHistory"][0] == last
