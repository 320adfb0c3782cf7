"""The daemon's boot records: this boot judged at start, the expectation kept current (docs/boot-outcome.md).

`decorate(snapshot)` (the scan thread) adds LastBoot, BootHistory, BootAssessment and the boot
problems to each snapshot read; its first call, with the daemon's first snapshot, reads the
finalize stamp, loads the records and judges this boot against the previous boot's last
expectation (a small file read: no write before READY=1). `persist()` and `expect(snapshot)` run
in this module's own thread (`submit`), never on the event loop: the first writes this boot's
new record, the second writes the expectation down when what the boot loader will boot next
changed. Errors become problems, never exceptions.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from . import bootoutcome, bootstore, errors, layout, model
from .parse import bls
from .parse import grubenv as grubenv_parse
from .sysroot import Root

log = logging.getLogger("ostreewatch.boottracker")

# Written by ostree-finalize-staged when it fails; ostree-boot-complete.service (which the unit
# orders after this daemon's READY=1) prints and removes it.
FINALIZE_STAMP = "boot/ostree/finalize-failure.stamp"
STAMP_MAX = 64 * 1024
GRUBENV_MAX = 64 * 1024
# Outcomes that end a fallback: the boot went as expected.
AS_EXPECTED = ("default", "next-entry", "staged")
FAILED = model.ProblemCode.BOOT_RECORD_FAILED.code  # the records cannot be read or written


def read_boot_id(path: str) -> str:
    """This boot's id in systemd's form (32 hex digits, no dashes); raises OSError or ValueError."""
    with open(path, "rb") as f:
        text = f.read(256).decode("ascii").strip().replace("-", "").lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"{path}: not a boot id: {text[:40]!r}")
    return text


def _read_small(root: Root, rel: str, limit: int) -> bytes | None:
    """A file under the sysroot, or None when absent or unreadable (the daemon reports other problems)."""
    try:
        if not root.exists(rel):
            return None
        return root.read(rel, limit)
    except (errors.OstreewatchError, OSError):
        return None


def read_grubenv(sysroot: str) -> dict[str, str]:
    """The first grubenv's variables; {} when there is none or it cannot be parsed."""
    try:
        root = Root(sysroot)
    except errors.OstreewatchError:
        return {}
    for d in layout.GRUB_DIRS:
        data = _read_small(root, f"{d}/grubenv", GRUBENV_MAX)
        if data is not None:
            try:
                return grubenv_parse.parse_grubenv(data)
            except errors.GrubenvError:
                return {}
    return {}


def read_finalize_stamp(sysroot: str) -> str | None:
    """The text of ostree's finalize-failure.stamp; None when there is none."""
    try:
        root = Root(sysroot)
    except errors.OstreewatchError:
        return None
    data = _read_small(root, FINALIZE_STAMP, STAMP_MAX)
    return None if data is None else data.decode("utf-8", "replace")


def tries_of(snapshot: model.Snapshot) -> dict[str, tuple[int, int]]:
    """Entry id -> (tries left, tries done) for entries whose file name carries a boot counter."""
    out: dict[str, tuple[int, int]] = {}
    for e in snapshot.BootEntries:
        _, left, done = bls.split_boot_counting(e.file)
        if left is not None:
            out[e.id] = (left, done or 0)
    return out


def assessment(
    grubenv: dict[str, str], tries: dict[str, tuple[int, int]], boot_complete: bool | None = None
) -> tuple[tuple[str, Any], ...]:
    """BootAssessment's (key, value) pairs (model.BOOT_ASSESSMENT_KEYS)."""
    values: dict[str, Any] = {k: grubenv[k] for k in bootoutcome.GREENBOOT_VARS if k in grubenv}
    values["tries_left"] = {k: v[0] for k, v in tries.items()}
    values["tries_done"] = {k: v[1] for k, v in tries.items()}
    if boot_complete is not None:
        values["boot_complete"] = boot_complete
    return model.dict_items("BootAssessment", values)


def with_assessment(
    snapshot: model.Snapshot,
    grubenv: dict[str, str] | None = None,
    sysroot: str = "/",
    boot_complete: bool | None = None,
) -> model.Snapshot:
    """SNAPSHOT with BootAssessment filled in (GRUBENV, else read under SYSROOT)."""
    if grubenv is None:
        grubenv = read_grubenv(sysroot)
    return dataclasses.replace(snapshot, BootAssessment=assessment(grubenv, tries_of(snapshot), boot_complete))


def _entry_deployment(snapshot: model.Snapshot, entry_id: str) -> str:
    for e in snapshot.BootEntries:
        if e.id == entry_id:
            return e.deployment
    return ""


def _grub_fallback_entry(snapshot: model.Snapshot, value: str) -> str:
    """The entry GRUB's `fallback` (a menu index or an entry id) names; "" when none matches."""
    value = value.strip().split()[0] if value.strip() else ""
    if value.isdigit():
        i = int(value)
        return snapshot.BootEntries[i].id if i < len(snapshot.BootEntries) else ""
    for e in snapshot.BootEntries:
        if value in (e.id, e.file[:-5] if e.file.endswith(".conf") else e.file, e.title):
            return e.id
    return ""


def expectation_of(
    snapshot: model.Snapshot, grubenv: dict[str, str], boot_id: str, now_us: int
) -> bootoutcome.Expectation:
    """What the boot loader will boot next, by this snapshot."""
    next_dep = _entry_deployment(snapshot, snapshot.NextEntry) if snapshot.NextEntry else ""
    default_dep = _entry_deployment(snapshot, snapshot.DefaultEntry) or snapshot.DefaultDeployment
    fallback = _grub_fallback_entry(snapshot, grubenv["fallback"]) if "fallback" in grubenv else ""
    return bootoutcome.Expectation(
        boot_id=boot_id,
        expected_entry=snapshot.NextEntry or snapshot.DefaultEntry,
        expected_deployment=snapshot.StagedDeployment or (next_dep if snapshot.NextEntry else default_dep),
        default_entry=snapshot.DefaultEntry,
        next_entry=snapshot.NextEntry,
        next_deployment=next_dep,
        staged_deployment=snapshot.StagedDeployment,
        fallback_entry=fallback,
        fallback_deployment=_entry_deployment(snapshot, fallback) if fallback else "",
        grubenv=tuple(sorted((k, grubenv[k]) for k in bootoutcome.GREENBOOT_VARS if k in grubenv)),
        timestamp=now_us,
    )


def after_finalize(previous: bootoutcome.Expectation | None, new: bootoutcome.Expectation) -> bootoutcome.Expectation:
    """NEW, still naming the staged deployment PREVIOUS expected when ostree has just finalized it.

    ostree-finalize-staged runs at shutdown while the daemon still watches: it writes the staged
    deployment's entry as the new default and removes the staged file, so the last expectation
    before the power goes off would say "the default" and the next boot could not be judged
    `staged`. A staged deployment that turns into the expected one is that finalization.
    """
    if (
        previous is not None
        and previous.staged_deployment
        and not new.staged_deployment
        and new.expected_deployment == previous.staged_deployment
    ):
        return dataclasses.replace(new, staged_deployment=previous.staged_deployment)
    return new


def _same_expectation(a: bootoutcome.Expectation | None, b: bootoutcome.Expectation) -> bool:
    return a is not None and dataclasses.replace(a, timestamp=0) == dataclasses.replace(b, timestamp=0)


class BootTracker:
    """This boot's record and the history, for the daemon (see the module docstring)."""

    def __init__(self, state_dir: str, boot_id_file: str, sysroot: str) -> None:
        self.state_dir = state_dir
        self.boot_id_file = boot_id_file
        self.sysroot = sysroot
        self._lock = threading.Lock()
        self._boots: list[bootstore.StoredBoot] = []
        self._record: bootoutcome.BootRecord | None = None
        self._problems: tuple[model.Problem, ...] = ()  # of the records (corrupt file, cannot write)
        self._stamp: str | None = None
        self._stamp_known = False
        self._boot_id = ""
        self._began = False
        self._new = False
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="boots")

    # -- the scan thread --

    def decorate(self, snapshot: model.Snapshot, boot_complete: bool | None = None) -> model.Snapshot:
        """SNAPSHOT with the boot properties and problems added; the first call also judges this boot."""
        if not self._began:
            # With the first snapshot, before READY=1: ostree-boot-complete.service, ordered after
            # READY=1 by the unit, removes the stamp. Reading and judging cost a
            # small file read; the write of the new record waits for the records thread (persist).
            if not self._stamp_known:
                self._stamp = read_finalize_stamp(self.sysroot)
            self._judge(snapshot)
        grubenv = read_grubenv(self.sysroot)
        with self._lock:
            record, boots, problems = self._record, list(self._boots), list(self._problems)
        stamp = self._stamp
        if record is not None and record.finalize_failed:
            stamp = record.finalize_error
        if stamp is not None:
            text = stamp.strip() or "no detail"
            problems.append(
                model.Problem(
                    model.ProblemCode.FINALIZE_FAILED.code,
                    f"ostree could not finalize the staged deployment at the last shutdown: {text}",
                    "/" + FINALIZE_STAMP,
                )
            )
        fallback = self._fallback_since_expected(boots)
        if fallback is not None:
            problems.append(
                model.Problem(
                    model.ProblemCode.BOOT_FALLBACK.code,
                    f"boot {fallback.boot_id} fell back: {fallback.reason} No boot has gone as expected since.",
                    fallback.expected_entry or fallback.expected_deployment,
                )
            )
        return with_assessment(
            dataclasses.replace(
                snapshot,
                LastBoot=model.dict_items("LastBoot", record.to_dict()) if record is not None else (),
                BootHistory=tuple(b.record for b in boots),
                Problems=snapshot.Problems + tuple(problems),
            ),
            grubenv,
            boot_complete=boot_complete,
        )

    def set_finalize_stamp(self, text: str | None) -> None:
        """The stamp's text as read before READY=1 (ostreewatchd's main()); None: there was none."""
        self._stamp, self._stamp_known = text, True

    @staticmethod
    def _fallback_since_expected(boots: list[bootstore.StoredBoot]) -> bootoutcome.BootRecord | None:
        """The latest fallback not followed by a boot that went as expected."""
        for b in boots:
            if b.record.outcome in AS_EXPECTED:
                return None
            if b.record.outcome == "fallback":
                return b.record
        return None

    def _judge(self, snapshot: model.Snapshot) -> None:
        """Load the records and judge this boot against the previous boot's last expectation."""
        self._began = True
        problems: list[model.Problem] = []
        try:
            self._boot_id = read_boot_id(self.boot_id_file)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            self._set([], None, (model.Problem(FAILED, f"cannot read this boot's id: {e}", ""),))
            return
        loaded = bootstore.Loaded([])
        try:
            loaded = bootstore.load(self.state_dir)
        except OSError as e:
            problems.append(model.Problem(FAILED, f"cannot read the boot records: {e}", self.state_dir))
        lost = ""
        if loaded.corrupt:
            lost = f"{loaded.corrupt}; kept as {os.path.join(self.state_dir, bootstore.CORRUPT_NAME)}"
            problems.append(
                model.Problem(
                    model.ProblemCode.BOOT_RECORD_CORRUPT.code,
                    f"{loaded.corrupt}; kept as {bootstore.CORRUPT_NAME}, the history starts again",
                    os.path.join(self.state_dir, bootstore.FILE_NAME),
                )
            )
        facts = bootoutcome.BootFacts(
            boot_id=self._boot_id,
            booted_entry=snapshot.BootedEntry,
            booted_deployment=snapshot.BootedDeployment,
            default_entry=snapshot.DefaultEntry,
            grubenv={k: v for k, v in read_grubenv(self.sysroot).items() if k in bootoutcome.GREENBOOT_VARS},
            tries=tries_of(snapshot),
            finalize_error=self._stamp,
            timestamp=time.time_ns() // 1000,
        )
        boots, record, self._new = bootstore.begin_boot(loaded.boots, facts, history_lost=lost)
        self._set(boots, record, tuple(problems))

    # -- this module's thread --

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run FN(*ARGS) in the records thread (one at a time, in order)."""
        return self._executor.submit(fn, *args)

    def persist(self, snapshot: model.Snapshot) -> tuple[bootoutcome.BootRecord | None, bool]:
        """Write this boot's new record with SNAPSHOT's expectation (one save): (the record, new).

        new is False after a restart in the same boot (nothing is written then).
        """
        with self._lock:
            boots, record = list(self._boots), self._record
        if record is None or not self._new:
            return record, False
        exp = expectation_of(snapshot, read_grubenv(self.sysroot), self._boot_id, time.time_ns() // 1000)
        boots = bootstore.with_expectation(boots, exp)
        failed = self._save(boots)
        with self._lock:
            self._boots = boots
            self._problems += tuple(failed)
        return record, True

    def expect(self, snapshot: model.Snapshot) -> bool:
        """Write down what the boot loader will boot next when it changed; True when the records changed."""
        if not self._began or not self._boot_id:
            return False
        with self._lock:
            boots = list(self._boots)
        if not boots or boots[0].record.boot_id != self._boot_id:
            return False
        exp = expectation_of(snapshot, read_grubenv(self.sysroot), self._boot_id, time.time_ns() // 1000)
        exp = after_finalize(boots[0].expectation, exp)
        if _same_expectation(boots[0].expectation, exp):
            return False
        boots = bootstore.with_expectation(boots, exp)
        failed = self._save(boots)
        with self._lock:
            self._boots = boots
            before = self._problems
            self._problems = tuple(p for p in before if p.code != FAILED) + tuple(failed)
            return self._problems != before

    def _save(self, boots: list[bootstore.StoredBoot]) -> list[model.Problem]:
        try:
            os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
            bootstore.save(self.state_dir, boots)
        except OSError as e:
            return [model.Problem(FAILED, f"cannot write the boot records: {e}", self.state_dir)]
        return []

    def _set(
        self,
        boots: list[bootstore.StoredBoot],
        record: bootoutcome.BootRecord | None,
        problems: tuple[model.Problem, ...],
    ) -> None:
        with self._lock:
            self._boots, self._record, self._problems = boots, record, problems

    def close(self) -> None:
        """Finish the pending write (the last expectation), then stop the thread."""
        self._executor.shutdown(wait=True)
