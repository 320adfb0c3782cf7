"""Scenario f of issue 17: power cuts (QEMU SIGKILLed) during SetDefaultDeployment and SetDefaultEntry.

What is a full boot and what is an offline judgement (CI's 90 minutes cannot hold 16 TCG
boots of 1-2 minutes each; tests/vm/powercut.py has the mechanics):
- one full boot to multi-user of the generated-grub image (grub2-mkconfig's config: reads
  saved_entry; two deployments), up to the moment before the write; the VM is saved there;
- per kill, that moment restored on a fresh copy-on-write overlay of the disk: the daemon
  really writes in the guest (a busctl call), and QEMU is SIGKILLed a seeded random delay
  after the call began, the delays spread over the write's measured duration (one moment
  in each of N equal slots of 0..1.1 x the duration);
- each killed disk judged offline: ext4 replays its journal on a raw copy; GRUB 2.14
  (grub-emu, sid tree) runs the image's grub.cfg and must boot an entry whose ostree=
  leads to a deployment ostree lists (never a prompt); `ostree admin status --json`
  (ostree 2026.x, user namespace) reads; `ostreewatch status --offline --json` lists the
  same deployments, default first, and says GRUB boots what grub-emu boots; any leftover
  (boot/loader.N beside the link, loader.tmp, a temp file, an unreferenced ostree/boot.N.M)
  is named by a published problem (an ostree/boot.* one by stale-boot-dir);
- some killed disks (2 for SetDefaultDeployment, 1 for SetDefaultEntry, chosen by the
  seed) are booted for real: the kernel boots the deployment grub-emu said, and the
  daemon in the guest agrees with ostree and /proc/cmdline.
OSTREEWATCH_POWERCUT_SEED=N repeats a run; the kill moments and outcomes are printed (-s).
A cut inside libostree's reorder can leave an unused ostree/boot.N.M (docs/vm-rig.md "Power
cuts"): it must be published as stale-boot-dir, as every ostree/boot.* leftover.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import grub_configs
from tests.fixtures.vm import KEEP
from tests.vm import powercut, rig

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.timeout(2400)]

SEED = int(os.environ.get("OSTREEWATCH_POWERCUT_SEED", "0") or 0) or int(time.time())


@pytest.fixture(scope="module")
def armed() -> Iterator[powercut.Armed]:
    """The generated-grub image with two deployments, booted once and saved just before the write."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="ow-vm-powercut-", dir="/var/tmp"))
    options = rig.ImageOptions(grub_configs.rig_generated(), deployments=2)
    image = rig.build_image(options, work / "image")
    start = time.monotonic()
    a = powercut.arm(image, work / "arm")
    print(
        f"\npower cut: seed {SEED}; boot to the armed moment {a.boot_seconds:.0f} s, saved in "
        f"{time.monotonic() - start:.0f} s"
    )
    yield a
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)


def power_cuts(armed: powercut.Armed, method: str, kills: int, real_boots: int) -> None:
    """The write once to its end (its duration, the final state), then KILLS cuts judged offline, REAL_BOOTS booted."""
    rng = random.Random(f"{SEED}-{method}")
    started = time.monotonic()
    full = powercut.restore_and_write(armed, f"{method}-complete", method, None)
    assert full.write_seconds is not None
    done = powercut.judge(armed.image, full.disk, full.label)
    print(f"\n{method}: the write took {full.write_seconds:.1f} s to its reply; complete: {done.summary()}")
    assert done.failures == [], done.failures
    # The rollback is the target: ostree's order changes, or only saved_entry (the order stays).
    assert done.grub_deployment == done.ostree_ids[0 if method == "SetDefaultDeployment" else 1], done.summary()
    new_default = done.grub_deployment
    span = 1.1 * full.write_seconds
    delays = [rng.uniform(span * i / kills, span * (i + 1) / kills) for i in range(kills)]
    booted = set(rng.sample(range(kills), real_boots))
    outcomes: list[tuple[powercut.Run, powercut.Judgement]] = []
    for i, delay in enumerate(delays):
        run = powercut.restore_and_write(armed, f"{method}-kill{i}", method, delay)
        j = powercut.judge(armed.image, run.disk, run.label)
        outcomes.append((run, j))
        ended = "after the reply" if run.ended_before_kill else "before the reply"
        print(f"  kill {i}: {delay:5.2f} s after the call began ({ended}): {j.summary()}", flush=True)
    failures = [
        f"kill {i} at {r.delay:.2f} s: {'; '.join(j.failures)}" for i, (r, j) in enumerate(outcomes) if j.failures
    ]
    for i in sorted(booted):
        run, j = outcomes[i]
        with powercut.raw_image(armed.image, run.disk, f"kill{i}") as image:
            r = image.boot(f"pc-{method}-kill{i}")
        props = r.props()
        deps = [f"{d['stateroot']}-{d['checksum']}.{d['serial']}" for d in r.json("ostree-status.json")["deployments"]]
        booted_dep = next(
            (
                f"{d['stateroot']}-{d['checksum']}.{d['serial']}"
                for d in r.json("ostree-status.json")["deployments"]
                if d.get("booted")
            ),
            "",
        )
        problems = sorted({p["code"] for p in props["Problems"]})
        print(
            f"  kill {i} booted in {r.seconds:.0f} s: {booted_dep[-12:]} (grub-emu said {j.grub_deployment[-12:]}), "
            f"problems {problems or 'none'}"
        )
        if booted_dep != j.grub_deployment:
            failures.append(f"kill {i}: booted {booted_dep}, grub-emu said {j.grub_deployment}")
        # No next_entry was written: the entry booted is the default one.
        if (props["BootedDeployment"], props["DefaultDeployment"], deps) != (booted_dep, booted_dep, j.ostree_ids):
            failures.append(
                f"kill {i}: the daemon in the guest says booted {props['BootedDeployment']}, default "
                f"{props['DefaultDeployment']}; ostree: {booted_dep}, {deps} (offline {j.ostree_ids})"
            )
        silent = powercut.unpublished(j.leftovers, [p["subject"] for p in props["Problems"]])
        if silent:
            failures.append(f"kill {i}: leftovers the booted daemon does not publish: {silent}")
        _, unnamed = powercut.stale_boot_dirs(j.leftovers, props["Problems"])
        if unnamed:
            failures.append(f"kill {i}: the booted daemon does not publish as stale-boot-dir: {unnamed}")
    changed = sum(1 for _, j in outcomes if j.grub_deployment == new_default)
    print(
        f"{method}: {kills} cuts, {changed} left the new default, {kills - changed} the old one; "
        f"{real_boots} booted; {time.monotonic() - started:.0f} s"
    )
    stale = [f"kill {i}: {j.stale_boot}" for i, (_, j) in enumerate(outcomes) if j.stale_boot]
    print(f"{method}: ostree/boot leftovers, each published as stale-boot-dir: {'; '.join(stale) or 'none'}")
    assert failures == [], "\n".join(failures)


def test_f_power_cut_during_set_default_deployment(armed: powercut.Armed) -> None:
    """10 power cuts during SetDefaultDeployment(the rollback): GRUB boots a deployment; ostree, daemon, GRUB agree."""
    power_cuts(armed, "SetDefaultDeployment", kills=10, real_boots=2)


def test_f_power_cut_during_set_default_entry(armed: powercut.Armed) -> None:
    """5 power cuts during SetDefaultEntry(the rollback's entry) on grub2-mkconfig's config: the same checks."""
    power_cuts(armed, "SetDefaultEntry", kills=5, real_boots=1)
