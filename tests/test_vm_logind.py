"""Real reboots through the logind bridge (issue 22): `systemctl reboot --boot-loader-entry=ENTRY` in QEMU.

One chain (tests/fixtures/vm.py) on the generated-grub image (grub2-mkconfig's 00_header,
which reads next_entry) with two deployments and contrib/logind's opt-in units installed in
/etc and enabled as docs/logind.md says (tests/vm/build-image.sh --logind). systemd 262
from the sid tree is PID 1 and logind. Three boots:

- logind-a: logind's own answers (CanRebootToBootLoaderEntry, BootLoaderEntries,
  `systemctl reboot --boot-loader-entry=help`) against the entries on /boot and the daemon's
  BootEntries in menu order; then the guest reboots with
  `systemctl reboot --boot-loader-entry=ENTRY`, ENTRY the rollback's (not the default).
- logind-b: GRUB booted ENTRY (/proc/cmdline's ostree= against the entries and `ostree
  admin status`), LastBoot says next-entry, GRUB's 00_header cleared next_entry, and the
  previous boot's journal holds the shutdown step's audit record with logind as the caller.
- logind-c: the default again; then, in the same boot, bootupd's static grub.cfg put in
  place, the bridge's unit and logind restarted: logind must answer "na" and refuse the
  request (and "yes" again once the generated config is back).

Under TCG a boot takes 2-7 minutes on this shared machine (docs/vm-rig.md).
"""

from __future__ import annotations

import shlex

import pytest

from ostreewatch import journal as ow_journal
from tests.fixtures import grub_configs
from tests.fixtures.vm import BootChain, make_chain, vm_work  # noqa: F401  (vm_work: a fixture)
from tests.test_vm_boot import (
    ENTRY_OF,
    assert_agrees_with_ostree,
    assert_healthy_boot,
    assert_last_boot,
    deployments,
    entries,
    entry_of_cmdline,
    entry_of_deployment,
    grubenv_vars,
    journal,
    the,
)
from tests.vm import rig

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1800)]

# Each boot runs the bridge's program under TCG before logind starts (51-118 s here) and at
# shutdown (about 20 s); logind-c twice more. Under load (4 QEMUs on 2 cores) a boot took up to
# 521 s, close to the rig's 10 minutes.
TIMEOUT = 1.5 * rig.BOOT_TIMEOUT
LOGIN1 = "org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager"
REQUEST_FILE = "/run/systemd/reboot-to-boot-loader-entry"

# What logind reads and says (bash in the guest; $OUT the record dir). The daemon writes the
# entries tree once it has read the host: wait for it, as logind would only find it then.
LOGIND_RECORDS = f"""
for _ in $(seq 240); do [ -d /run/boot-loader-entries/loader/entries ] && break; sleep 0.5; done
rec logind-environ.txt sh -c 'tr "\\0" "\\n" < /proc/$(pidof systemd-logind)/environ'
rec logind-env.txt cat /run/ostreewatch/logind.env
rec ble.txt sh -c 'ls -la /run/boot-loader-entries /run/boot-loader-entries/ &&
    grep -H . /run/boot-loader-entries/loader/entries/*.conf'
rec systemd-version.txt systemctl --version
rec can-reboot.txt busctl call {LOGIN1} CanRebootToBootLoaderEntry
rec bl-entries.json busctl --json=short get-property {LOGIN1} BootLoaderEntries
rec help.txt systemctl reboot --boot-loader-entry=help
"""


def reboot_into_rollback_script() -> str:
    """logind-a: the records above, then the reboot into the rollback's entry (run by owvm-guest after its records)."""
    return (
        LOGIND_RECORDS
        + ENTRY_OF
        + 'rollback="$(busctl get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager '
        + "RollbackDeployment | cut -d'\"' -f2)\"\n"
        + 'target="$(entry_of "$rollback")"\n'
        + 'echo "$target" > target.txt\n'
        # owvm-guest runs end.sh in place of its poweroff, after every record (tests/vm/guest/owvm-guest).
        + 'echo "systemctl reboot --boot-loader-entry=$target" > end.sh\n'
    )


# The previous boot's records of the bridge's unit (its ExecStop= at that shutdown), read with
# -D: the image's two deployments were made before any boot, each with its own /etc and an empty
# machine-id, so a boot of the other deployment runs under another machine id, and plain
# `journalctl -b -1` (this machine's files only) answers "No journal boot entry found".
PREV = "journalctl -D /var/log/journal -b -1 -o json"
PREVIOUS_SHUTDOWN = f"""
rec journal-bridge-prev.json {PREV} -u ostreewatch-reboot-entry.service
rec journal-attempts-prev.json {PREV} MESSAGE_ID={ow_journal.MESSAGE_ID_WRITE_ATTEMPT}
rec machine-id.txt cat /etc/machine-id
"""


def static_no_script() -> str:
    """logind-c: bootupd's static grub.cfg in place, the bridge's unit and logind restarted; then back."""
    # The rig's header (tests/vm/build-image.sh) and bootupd's config as the rig's GRUB runs it.
    static = "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
    static += "set timeout=1\n" + grub_configs.rig_static()
    return (
        PREVIOUS_SHUTDOWN
        + "cp /boot/grub/grub.cfg grub.cfg.generated\n"
        + f"printf '%s' {shlex.quote(static)} > /boot/grub/grub.cfg.new\n"
        + "mv /boot/grub/grub.cfg.new /boot/grub/grub.cfg\n"
        # The bridge unit's ExecStart= (what a restart of it would run after its ExecStop=, which has
        # no request to apply here), then logind, which reads logind.env when it starts.
        + "restart_bridge() {\n"
        + "    /usr/libexec/ostreewatchd --runtime-dir=/run/ostreewatch --prepare-logind &&\n"
        + "        systemctl restart systemd-logind.service\n"
        + "}\n"
        + "rec static-restart.txt restart_bridge\n"
        + "rec static-logind-env.txt cat /run/ostreewatch/logind.env\n"
        + "rec static-ble.txt ls -la /run/boot-loader-entries\n"
        + f"rec static-can-reboot.txt busctl call {LOGIN1} CanRebootToBootLoaderEntry\n"
        # What systemctl asks first: refused here, so `systemctl reboot --boot-loader-entry=` fails
        # before any reboot (asked directly, so a wrong "yes" cannot reboot the guest mid-record).
        + 'target="$(cat ../logind-a/target.txt)"\n'
        + f'rec static-set.txt busctl call {LOGIN1} SetRebootToBootLoaderEntry s "$target"\n'
        + f"rec static-request.txt cat {REQUEST_FILE}\n"
        + "cp grub.cfg.generated /boot/grub/grub.cfg.new && mv /boot/grub/grub.cfg.new /boot/grub/grub.cfg\n"
        + "rec restored-restart.txt restart_bridge\n"
        + "for _ in $(seq 240); do [ -d /run/boot-loader-entries/loader/entries ] && break; sleep 0.5; done\n"
        + f"rec restored-can-reboot.txt busctl call {LOGIN1} CanRebootToBootLoaderEntry\n"
    )


@pytest.fixture(scope="module")
def logind_chain(vm_work) -> BootChain:  # noqa: F811
    """grub2-mkconfig's config (reads next_entry), two deployments, contrib/logind installed and enabled."""
    options = rig.ImageOptions(grub_configs.rig_generated(), deployments=2, logind=True)
    return make_chain(options, vm_work, "logind")


def listed_ids(text: str) -> list[str]:
    """Entry ids in `systemctl reboot --boot-loader-entry=help` output or a list, without `.conf`."""
    return [line.strip().removesuffix(".conf") for line in text.splitlines() if line.strip()]


def console_said_reboot(result: rig.BootResult) -> bool:
    """The guest kernel's last words were a restart (not a power-off): `-no-reboot` made QEMU exit on it."""
    return "reboot: Restarting system" in result.console


def test_logind_a_lists_the_entries_and_reboots_into_one(logind_chain: BootChain) -> None:
    """logind 262 answers yes, lists the daemon's entries in menu order; the guest reboots into the rollback's."""
    r = logind_chain.boot("logind-a", reboot_into_rollback_script(), timeout=TIMEOUT)
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    assert r.text("systemd-version.txt").startswith("systemd 26"), r.text("systemd-version.txt")
    # The opt-in pieces as an admin enables them: logind started with the variable.
    assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=1" in r.text("logind-env.txt").splitlines()
    assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=1" in r.text("logind-environ.txt").splitlines()
    menu = [e["id"] for e in props["BootEntries"]]
    assert len(menu) == 2 and set(menu) == set(entries(r)), (menu, entries(r))
    assert r.text("can-reboot.txt").strip() == 's "yes"', (r.text("can-reboot.txt"), r.text("can-reboot.txt.err"))
    listed = rig.unwrap(r.json("bl-entries.json"))
    assert [i.removesuffix(".conf") for i in listed] == menu, listed
    assert r.rc("help.txt") == 0, r.text("help.txt.err")
    assert listed_ids(r.text("help.txt")) == menu, r.text("help.txt")
    # The request: the rollback's entry, which is not the default one.
    target = r.text("target.txt").strip()
    assert target == entry_of_deployment(props, props["RollbackDeployment"]) != props["DefaultEntry"]
    assert props["BootedEntry"] == props["DefaultEntry"]
    # It was a reboot, asked and accepted (owvm-guest's end.sh), not the rig's poweroff.
    assert r.text("end.rc").strip() in ("0", ""), (r.text("end.rc"), r.text("end.log"))
    assert console_said_reboot(r), r.console[-3000:]


def test_logind_b_the_requested_entry_booted_once(logind_chain: BootChain) -> None:
    """GRUB booted the requested entry; the one-shot is gone; the shutdown step's audit record says logind asked."""
    a = logind_chain.need("logind-a")
    target = a.text("target.txt").strip()
    r = logind_chain.boot("logind-b", PREVIOUS_SHUTDOWN, timeout=TIMEOUT)
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    # The oracles: /proc/cmdline's ostree= is the target entry's, and ostree says that deployment booted.
    assert entry_of_cmdline(r) == target == props["BootedEntry"]
    assert the(deployments(r), "booted") == a.props()["RollbackDeployment"] == props["BootedDeployment"]
    # GRUB's 00_header cleared next_entry as it booted it; nothing is pending.
    assert grubenv_vars(r.text("grubenv.txt")).get("next_entry", "") == "", r.text("grubenv.txt")
    assert props["NextEntry"] == ""
    # The daemon of logind-a saw the shutdown step's next_entry before it stopped: its last
    # expectation was the one-shot entry.
    last = assert_last_boot(props, "next-entry", 2)
    assert last["expected_entry"] == target, last
    # The shutdown step of logind-a: one audited SetNextEntry, logind's request as the origin.
    assert r.rc("journal-attempts-prev.json") == 0, r.text("journal-attempts-prev.json.err")
    attempts = r.json_lines("journal-attempts-prev.json")
    assert len(attempts) == 1, attempts
    assert attempts[0]["_BOOT_ID"] == a.props()["LastBoot"]["boot_id"] == last["previous_boot_id"]
    rec = attempts[0]
    assert rec.get("_SYSTEMD_UNIT") == "ostreewatch-reboot-entry.service", rec
    assert (rec["OSTREEWATCH_METHOD"], rec["OSTREEWATCH_RESULT"]) == ("SetNextEntry", "granted"), rec
    assert rec["OSTREEWATCH_ENTRY"] == target and rec["OSTREEWATCH_CALLER_UNIT"] == "systemd-logind.service", rec
    # The daemon of logind-a, as the standard record has it: it saw the one-shot before it stopped.
    prev_daemon = journal(r, "journal-unit-prev.json")
    assert prev_daemon and {m["_BOOT_ID"] for m in prev_daemon} == {rec["_BOOT_ID"]}
    assert any("NextEntry none -> " + target in m for m in rig.journal_messages(prev_daemon))
    said = rig.journal_messages(r.json_lines("journal-bridge-prev.json"))
    applied = f"next boot: entry {target} (requested through systemd-logind in {REQUEST_FILE})"
    assert any(applied in m for m in said), said


def test_logind_c_default_again_and_static_grub_says_no(logind_chain: BootChain) -> None:
    """The boot after the one-shot runs the default; on bootupd's static grub.cfg logind answers "na" and refuses."""
    a = logind_chain.need("logind-a")
    r = logind_chain.boot("logind-c", static_no_script(), timeout=TIMEOUT)
    assert_healthy_boot(r)
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    assert props["BootedDeployment"] == a.props()["BootedDeployment"]
    assert entry_of_cmdline(r) == a.props()["DefaultEntry"] == props["BootedEntry"]
    assert_last_boot(props, "default", 3)
    # One shot: logind-b's shutdown wrote nothing (no request was left).
    assert r.rc("journal-bridge-prev.json") == 0, r.text("journal-bridge-prev.json.err")
    prev_boot = {m["_BOOT_ID"] for m in r.json_lines("journal-bridge-prev.json")}
    assert prev_boot == {logind_chain.need("logind-b").props()["LastBoot"]["boot_id"]}, prev_boot
    assert r.json_lines("journal-attempts-prev.json") == []
    said = rig.journal_messages(r.json_lines("journal-bridge-prev.json"))
    assert any("no boot loader entry was requested" in m for m in said), said
    # bootupd's static grub.cfg never reads next_entry: the bridge turns logind's support off.
    assert r.rc("static-restart.txt") == 0, r.text("static-restart.txt.err")
    assert "SYSTEMD_REBOOT_TO_BOOT_LOADER_ENTRY=0" in r.text("static-logind-env.txt").splitlines()
    assert r.rc("static-ble.txt") != 0  # no /run/boot-loader-entries
    assert r.text("static-can-reboot.txt").strip() == 's "na"', r.text("static-can-reboot.txt")
    assert r.rc("static-set.txt") != 0, r.text("static-set.txt")
    assert r.rc("static-request.txt") != 0  # logind wrote no request
    # The generated config back: yes again.
    assert r.rc("restored-restart.txt") == 0, r.text("restored-restart.txt.err")
    assert r.text("restored-can-reboot.txt").strip() == 's "yes"', r.text("restored-can-reboot.txt")
