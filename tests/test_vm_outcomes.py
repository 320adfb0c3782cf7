"""How each boot turned out (issue 18), produced by real boots: the outcomes a plain boot never gives.

One chain on the generated-grub image (grub2-mkconfig's 00_header reads saved_entry and
next_entry; two deployments, so there are two entries from the first boot), three boots
(docs/boot-outcome.md "Made to happen by real boots", docs/vm-rig.md):

- outc-a: a torn /var/lib/ostreewatch/boots (a real records file cut in half, as a
  non-atomic writer cut by a power loss leaves it) is put in the stateroot's /var before
  the first boot: the daemon runs, sets it aside as boots.corrupt, publishes
  boot-record-corrupt and starts the history again (first-record).
- outc-b: while the VM is down, grub-editenv sets saved_entry to the entry outc-a did not
  boot: GRUB boots it, other-entry, and the history holds outc-a again.
- outc-c: GRUB's menu waits (a grubenv `timeout`, set while down) and the rig types Up and
  Enter on the serial console: the entry GRUB's default is not boots, other-entry.

Oracles: /proc/cmdline against the BLS entries on /boot, `ostree admin status --json`, the
grubenv GRUB read, the journal's _BOOT_ID, the bytes the host wrote and the guest read back.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from typing import Any

import pytest

from ostreewatch import bootoutcome, bootstore
from tests.fixtures import grub_configs
from tests.fixtures.vm import BootChain, make_chain, vm_work  # noqa: F401  (vm_work: a fixture)
from tests.test_vm_boot import (
    assert_agrees_with_ostree,
    assert_healthy_boot,
    dep_id,
    deployments,
    entries,
    entry_of_cmdline,
    grubenv_vars,
    journal,
    the,
)
from tests.vm import rig

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(1800)]

STATE_DIR = f"ostree/deploy/{rig.STATEROOT}/var/lib/ostreewatch"  # /var/lib/ostreewatch, on the physical root
MSG_BOOT_OUTCOME = "5d939b4156054d0287495192d5bb7224"
MSG_PROBLEM_APPEARED = "9bfbe0e2a307441eaf788b4dc8daa70c"
UP, ENTER = "\x1b[A", "\r"  # what a VT100 terminal sends; GRUB's serial terminfo input reads it
MENU_TIMEOUT = 60  # seconds GRUB's menu waits in outc-c (the image's header says 1)

# The state directory as the guest sees it, after the daemon started.
RECORD_STATE_DIR = """
rec state-dir.txt ls -la /var/lib/ostreewatch
rec boots-corrupt.sha256 sha256sum /var/lib/ostreewatch/boots.corrupt
rec boots.b64 base64 -w0 /var/lib/ostreewatch/boots
"""


def torn_records() -> bytes:
    """A records file of a boot that never was, cut in half: what a write without a rename leaves after a power cut."""
    record = bootoutcome.BootRecord(
        boot_id="0" * 32,
        previous_boot_id="",
        booted_entry="ostree-1",
        booted_deployment="debian-0.0",
        expected_entry="",
        expected_deployment="",
        outcome="first-record",
        reason="No expectation was recorded.",
        finalize_failed=False,
        finalize_error="",
        timestamp=1,
    )
    whole = bootstore.encode(
        [bootstore.StoredBoot(record, bootoutcome.Expectation(boot_id="0" * 32, expected_entry="ostree-1"))]
    )
    torn = whole[: len(whole) // 2]
    with pytest.raises(bootstore.BootStoreCorrupt):
        bootstore.decode(torn)
    return torn


def outcome_records(result: rig.BootResult) -> list[dict[str, Any]]:
    """The daemon's per-boot journal records (MESSAGE_ID_BOOT_OUTCOME) of this boot."""
    return [r for r in journal(result) if r.get("MESSAGE_ID") == MSG_BOOT_OUTCOME]


def boot_id(result: rig.BootResult) -> str:
    """The boot's id as the journal stamps the daemon's records (_BOOT_ID)."""
    ids = {r["_BOOT_ID"] for r in journal(result)}
    assert len(ids) == 1, ids
    return str(ids.pop())


def other_entry(result: rig.BootResult) -> str:
    """The entry on /boot that RESULT's boot did not boot (the image has two)."""
    ids = sorted(entries(result))
    assert len(ids) == 2, ids
    booted = entry_of_cmdline(result)
    return [i for i in ids if i != booted][0]


def assert_state(result: rig.BootResult) -> dict[str, Any]:
    """Booted and default as ostree, the kernel and the grubenv say, once saved_entry names the default entry."""
    props = result.props()
    deps = deployments(result)
    saved = grubenv_vars(result.text("grubenv.txt")).get("saved_entry")
    assert props["OstreeBooted"] is True
    assert props["BootedDeployment"] == the(deps, "booted")
    assert props["BootedEntry"] == entry_of_cmdline(result)
    assert (props["DefaultEntry"], props["DefaultEntrySource"]) == (saved, "saved_entry"), props["DefaultEntry"]
    assert props["StagedDeployment"] == the(deps, "staged") == ""
    return props


def assert_judged(result: rig.BootResult, outcome: str, history: int) -> dict[str, Any]:
    """LastBoot is OUTCOME about this boot (the entry of /proc/cmdline, ostree's booted deployment), journaled once."""
    props = result.props()
    last = props["LastBoot"]
    assert last["outcome"] == outcome, last
    assert last["booted_entry"] == entry_of_cmdline(result), last
    assert last["booted_deployment"] == the(deployments(result), "booted"), last
    assert last["boot_id"] == boot_id(result), last
    assert last["reason"] and last["finalize_failed"] is False, last
    assert len(props["BootHistory"]) == history and props["BootHistory"][0] == last, props["BootHistory"]
    recs = outcome_records(result)
    assert [r.get("OSTREEWATCH_BOOT_OUTCOME") for r in recs] == [outcome], recs
    return dict(last)


@pytest.fixture(scope="module")
def outcome_chain(vm_work) -> BootChain:  # noqa: F811
    """grub2-mkconfig's config (reads saved_entry, next_entry), two deployments: two entries from the first boot."""
    return make_chain(rig.ImageOptions(grub_configs.rig_generated(), deployments=2), vm_work, "outcomes")


def test_outc_a_corrupt_records_set_aside(outcome_chain: BootChain) -> None:
    """A torn records file: the daemon runs, sets it aside as boots.corrupt, boot-record-corrupt, first-record."""
    torn = torn_records()
    with outcome_chain.image.mounted() as root:
        state = root / STATE_DIR
        state.mkdir(mode=0o755, parents=True, exist_ok=True)
        (state / bootstore.FILE_NAME).write_bytes(torn)
    r = outcome_chain.boot("outc-a", RECORD_STATE_DIR)
    units = r.units()
    assert units["ostreewatch.service"]["ActiveState"] == "active", units["ostreewatch.service"]
    assert units["ostreewatch.service"]["NRestarts"] == "0", units["ostreewatch.service"]
    assert r.text("failed.txt").strip() == "", r.text("failed.txt")
    props = assert_agrees_with_ostree(r, reads_saved_entry=True)
    # The torn bytes, as the host wrote them, are what the guest finds under the corrupt name.
    assert r.rc("boots-corrupt.sha256") == 0, r.text("boots-corrupt.sha256.err")
    assert r.text("boots-corrupt.sha256").split()[0] == hashlib.sha256(torn).hexdigest()
    codes = [p["code"] for p in props["Problems"]]
    assert codes == ["boot-record-corrupt"], props["Problems"]
    last = assert_judged(r, "first-record", 1)
    assert "/var/lib/ostreewatch/boots.corrupt" in last["reason"], last["reason"]
    # A new records file holds this boot again.
    assert r.rc("boots.b64") == 0, r.text("boots.b64.err")
    stored = bootstore.decode(base64.b64decode(r.text("boots.b64")))
    assert [b.record.to_dict() for b in stored] == [last]
    # No record worse than a notice but the problem's own (no traceback, no crash, no error).
    loud = [m for m in journal(r) if int(m.get("PRIORITY", 6)) <= 4]
    assert [(m.get("MESSAGE_ID"), m.get("OSTREEWATCH_PROBLEM_CODE")) for m in loud] == [
        (MSG_PROBLEM_APPEARED, "boot-record-corrupt")
    ], rig.journal_messages(loud)
    # While the host is down, saved_entry is set to the entry this boot did not boot.
    with outcome_chain.image.mounted() as root:
        env = root / "boot/grub/grubenv"
        subprocess.run(["grub-editenv", str(env), "set", f"saved_entry={other_entry(r)}"], check=True, timeout=60)


def test_outc_b_other_entry_from_a_change_while_down(outcome_chain: BootChain) -> None:
    """saved_entry changed offline: GRUB boots that entry, other-entry against outc-a's expectation; history again."""
    a = outcome_chain.need("outc-a")
    r = outcome_chain.boot("outc-b")
    assert_healthy_boot(r)  # boot-record-corrupt was outc-a's only
    assert_agrees_with_ostree(r, reads_saved_entry=True)
    # GRUB booted its default, saved_entry's entry: DefaultDeployment is the booted one now, not
    # ostree's first (DefaultDeployment is "the deployment the default entry boots").
    assert assert_state(r)["DefaultDeployment"] == the(deployments(r), "booted") != dep_id(deployments(r)[0])
    # GRUB read the saved_entry set offline, and booted it.
    chosen = other_entry(a)
    assert grubenv_vars(r.text("grubenv.txt")).get("saved_entry") == chosen
    assert entry_of_cmdline(r) == chosen
    last = assert_judged(r, "other-entry", 2)
    # What outc-a expected: its own entry (GRUB's default with no saved_entry, which it booted), as the
    # daemon published it before shutting down.
    assert "saved_entry" not in grubenv_vars(a.text("grubenv.txt"))
    assert last["expected_entry"] == entry_of_cmdline(a) == a.props("props-after.json")["DefaultEntry"]
    assert last["expected_deployment"] == the(deployments(a), "booted") != last["booted_deployment"]
    assert last["previous_boot_id"] == boot_id(a)
    assert "default became" in last["reason"], last["reason"]
    # The history holds outc-a again, as it was published then.
    assert r.props()["BootHistory"][1] == a.props()["LastBoot"]
    # For outc-c: GRUB's menu waits MENU_TIMEOUT seconds for the keys (load_env reads `timeout` after the header's).
    with outcome_chain.image.mounted() as root:
        env = root / "boot/grub/grubenv"
        subprocess.run(["grub-editenv", str(env), "set", f"timeout={MENU_TIMEOUT}"], check=True, timeout=60)


def test_outc_c_other_entry_from_a_menu_choice(outcome_chain: BootChain) -> None:
    """Up and Enter in GRUB's menu on the serial console: the entry above the default boots, other-entry."""
    a, b = outcome_chain.need("outc-a"), outcome_chain.need("outc-b")
    # The menu lists entry 0 first: the one outc-a booted with an empty grubenv (default 0). The
    # default now is saved_entry, outc-b's entry, the second line; Up highlights the first.
    r = outcome_chain.boot("outc-c", console_keys=[("GNU GRUB", ""), ("automatically", UP + ENTER)])
    assert_healthy_boot(r)
    assert_agrees_with_ostree(r, reads_saved_entry=True)
    assert assert_state(r)["DefaultDeployment"] == the(deployments(b), "booted") != the(deployments(r), "booted")
    env = grubenv_vars(r.text("grubenv.txt"))
    assert env.get("timeout") == str(MENU_TIMEOUT)
    assert env.get("saved_entry") == entry_of_cmdline(b) != entry_of_cmdline(r)
    assert entry_of_cmdline(r) == entry_of_cmdline(a)
    last = assert_judged(r, "other-entry", 3)
    assert last["expected_entry"] == entry_of_cmdline(b) == b.props("props-after.json")["DefaultEntry"]
    assert last["expected_deployment"] == the(deployments(b), "booted")
    assert last["previous_boot_id"] == boot_id(b)
    # Not the offline-change sentence: the default is what it was when outc-b shut down.
    assert "default became" not in last["reason"], last["reason"]
    assert r.props()["BootHistory"][1:] == [b.props()["LastBoot"], a.props()["LastBoot"]]
