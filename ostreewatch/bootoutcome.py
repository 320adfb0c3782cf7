"""How a boot turned out: the previous boot's last expectation against this boot's facts (pure).

docs/boot-outcome.md holds the table of outcomes and the evidence each needs. Nothing here
does I/O: ostreewatch/boottracker.py gathers the facts and keeps the records.
"""

from __future__ import annotations

from ._record import fields, frozen

# Imported by model.py before the daemon's READY=1: no typing, collections or dataclasses here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

OUTCOMES = ("default", "next-entry", "staged", "fallback", "other-entry", "first-record")

# LastBoot's and BootHistory's keys (dbus/org.ostreewatch1.Manager.xml) with their D-Bus signatures.
BOOT_RECORD_KEYS: dict[str, str] = {
    "boot_id": "s",
    "previous_boot_id": "s",
    "booted_entry": "s",
    "booted_deployment": "s",
    "expected_entry": "s",
    "expected_deployment": "s",
    "outcome": "s",
    "reason": "s",
    "finalize_failed": "b",
    "finalize_error": "s",
    "timestamp": "t",  # microseconds since the epoch (systemd's convention)
}

# The greenboot grubenv variables kept in an expectation and published in BootAssessment.
GREENBOOT_VARS = ("boot_counter", "boot_success", "fallback", "greenboot_next_deployment_id")


@frozen
class Expectation:
    """What the boot loader would boot next, as last published during one boot."""

    boot_id: str
    expected_entry: str = ""  # NextEntry if set, else DefaultEntry
    expected_deployment: str = ""  # the staged deployment when one is staged, else that entry's deployment
    default_entry: str = ""
    next_entry: str = ""
    next_deployment: str = ""
    staged_deployment: str = ""
    fallback_entry: str = ""  # the entry GRUB's `fallback` variable names, resolved; "" when unset
    fallback_deployment: str = ""
    grubenv: tuple[tuple[str, str], ...] = ()  # GREENBOOT_VARS that were set, as (name, value)
    timestamp: int = 0


@frozen
class BootFacts:
    """What this boot shows at the daemon's start."""

    boot_id: str
    booted_entry: str = ""
    booted_deployment: str = ""
    default_entry: str = ""  # the boot loader's default now (a change made while down shows here)
    grubenv: Mapping[str, str] = {}  # GREENBOOT_VARS as set now (never mutated: a shared default is safe)
    tries: Mapping[str, tuple[int, int]] = {}  # entry id -> (tries left, tries done)
    finalize_error: str | None = None  # finalize-failure.stamp's text; None when there is no stamp
    timestamp: int = 0


@frozen
class BootRecord:
    """One boot's judgement: the LastBoot dictionary."""

    boot_id: str
    previous_boot_id: str
    booted_entry: str
    booted_deployment: str
    expected_entry: str
    expected_deployment: str
    outcome: str
    reason: str
    finalize_failed: bool
    finalize_error: str
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict in BOOT_RECORD_KEYS order."""
        return {key: getattr(self, key) for key in BOOT_RECORD_KEYS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BootRecord:
        """A record back from to_dict's shape; raises ValueError on a missing key or a wrong type."""
        values: dict[str, Any] = {}
        for key, sig in BOOT_RECORD_KEYS.items():
            value = data.get(key)
            want: type = {"s": str, "b": bool, "t": int}[sig]
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f"boot record key {key!r}: expected {want.__name__}, got {value!r}")
            values[key] = value
        if values["outcome"] not in OUTCOMES:
            raise ValueError(f"unknown boot outcome {values['outcome']!r}")
        return cls(**values)


def expectation_to_dict(e: Expectation) -> dict[str, Any]:
    """An expectation as JSON-ready values."""
    out: dict[str, Any] = {k: getattr(e, k) for k in fields(Expectation)}
    out["grubenv"] = dict(e.grubenv)
    return out


def expectation_from_dict(data: Mapping[str, Any]) -> Expectation:
    """An expectation back from expectation_to_dict's shape; raises ValueError when malformed."""
    values: dict[str, Any] = {}
    for name in fields(Expectation):
        if name not in data:
            if name == "boot_id":
                raise ValueError("expectation without boot_id")
            continue
        value = data[name]
        if name == "grubenv":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError("expectation grubenv: not a string map")
            value = tuple(sorted(value.items()))
        elif name == "timestamp":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("expectation timestamp: not an integer")
        elif not isinstance(value, str):
            raise ValueError(f"expectation {name}: not a string")
        values[name] = value
    return Expectation(**values)


def _same(entry_a: str, dep_a: str, entry_b: str, dep_b: str) -> bool:
    """Same boot target: by deployment when both know it (entry files are renumbered), else by entry."""
    if dep_a and dep_b:
        return dep_a == dep_b
    return bool(entry_a) and entry_a == entry_b


def _greenboot_evidence(prev: Expectation, facts: BootFacts) -> str | None:
    """greenboot's counter ran out at this boot, as a clause; None when the grubenv does not say so."""
    if facts.grubenv.get("boot_counter") == "-1" and facts.grubenv.get("boot_success", "0") != "1":
        # greenboot's 08_greenboot.cfg sets boot_counter=-1 when it boots the rollback entry.
        before = dict(prev.grubenv).get("boot_counter")
        was = f" (it was {before} before)" if before not in (None, "-1") else ""
        return f"greenboot's boot counter ran out (boot_counter=-1, boot_success=0){was}"
    return None


def _greenboot_foreseen(prev: Expectation, facts: BootFacts) -> str | None:
    """A greenboot fallback the previous boot's grubenv made certain (so it was the expected entry); None else.

    With boot_counter 0 (or -1) and boot_success not 1 left in the grubenv, GRUB's drop-in
    takes its fallback branch at the next boot: the daemon's expectation already names the
    rollback entry (the reader runs grub.cfg with that grubenv), yet the boot is a fallback.
    """
    env = dict(prev.grubenv)
    if env.get("boot_counter") not in ("0", "-1") or env.get("boot_success", "0") == "1":
        return None
    return _greenboot_evidence(prev, facts)


def _fallback_evidence(prev: Expectation, facts: BootFacts) -> str | None:
    """The boot loader's own evidence that it fell back, as a clause; None when there is none."""
    greenboot = _greenboot_evidence(prev, facts)
    if greenboot is not None:
        return greenboot
    tries = facts.tries.get(prev.expected_entry)
    if tries is not None and tries[0] == 0:
        return f"boot counting's tries for {prev.expected_entry} are exhausted (0 left, {tries[1]} done)"
    if prev.fallback_entry and _same(
        prev.fallback_entry, prev.fallback_deployment, facts.booted_entry, facts.booted_deployment
    ):
        return f"GRUB's fallback variable names {prev.fallback_entry}, which booted"
    return None


def judge(prev: Expectation | None, facts: BootFacts, previous_boot_id: str = "", history_lost: str = "") -> BootRecord:
    """This boot's record: PREV (the previous boot's last expectation, None when unknown) against FACTS.

    HISTORY_LOST: why the stored records were set aside (a corrupt file), named in a first record.
    """
    finalize_failed = facts.finalize_error is not None
    fin_error = (facts.finalize_error or "").strip()
    fin_clause = f"; ostree could not finalize the staged deployment ({fin_error or 'no detail'})"

    def record(outcome: str, reason: str, expected_entry: str = "", expected_deployment: str = "") -> BootRecord:
        if finalize_failed and "finalize" not in reason:
            reason = reason.rstrip(".") + fin_clause + "."
        return BootRecord(
            boot_id=facts.boot_id,
            previous_boot_id=prev.boot_id if prev is not None else previous_boot_id,
            booted_entry=facts.booted_entry,
            booted_deployment=facts.booted_deployment,
            expected_entry=expected_entry,
            expected_deployment=expected_deployment,
            outcome=outcome,
            reason=reason,
            finalize_failed=finalize_failed,
            finalize_error=fin_error,
            timestamp=facts.timestamp,
        )

    if prev is None:
        if history_lost:
            return record(
                "first-record",
                f"No expectation is known: the boot records were set aside ({history_lost}), "
                "so there is no record of what it would boot.",
            )
        why = f"the previous boot {previous_boot_id} left" if previous_boot_id else "there is"
        return record("first-record", f"No expectation was recorded: {why} no record of what it would boot.")
    exp_entry, exp_dep = prev.expected_entry, prev.expected_deployment
    booted = facts.booted_entry or facts.booted_deployment or "an unknown entry"

    def out(outcome: str, reason: str) -> BootRecord:
        return record(outcome, reason, exp_entry, exp_dep)

    if not facts.booted_entry and not facts.booted_deployment:
        return out("other-entry", "The booted entry and deployment cannot be told, so the boot is not as expected.")
    if prev.staged_deployment:
        if facts.booted_deployment == prev.staged_deployment:
            return out(
                "staged", f"The staged deployment {prev.staged_deployment} was finalized at shutdown and booted."
            )
        if finalize_failed:
            return out(
                "other-entry",
                f"The staged deployment {prev.staged_deployment} was not finalized "
                f"({fin_error or 'finalize-failure.stamp has no detail'}), so {booted} booted instead.",
            )
    if prev.next_entry and _same(prev.next_entry, prev.next_deployment, facts.booted_entry, facts.booted_deployment):
        return out("next-entry", f"The one-shot entry {prev.next_entry} was pending and booted.")
    if (
        not prev.next_entry
        and not prev.staged_deployment
        and _same(exp_entry, exp_dep, facts.booted_entry, facts.booted_deployment)
    ):
        foreseen = _greenboot_foreseen(prev, facts)
        if foreseen is not None:
            return out("fallback", f"GRUB fell back to {booted}, as the previous boot's grubenv foretold: {foreseen}.")
        if finalize_failed:
            # ostree-finalize-staged removes the staged file before it tries, and the daemon, still
            # watching at shutdown, wrote down an expectation without it (seen on a real boot,
            # tests/test_vm_fallback.py). The stamp says an update was staged and did not boot.
            return out(
                "other-entry",
                f"A staged deployment was not finalized at the last shutdown "
                f"({fin_error or 'finalize-failure.stamp has no detail'}), so {booted} booted instead.",
            )
        return out("default", f"The default entry {exp_entry or exp_dep} booted, as expected.")
    expected = exp_entry or exp_dep or "nothing known"
    evidence = _fallback_evidence(prev, facts)
    if evidence is not None:
        return out("fallback", f"Expected {expected} but {booted} booted: {evidence}.")
    if facts.default_entry and facts.default_entry == facts.booted_entry and facts.default_entry != prev.default_entry:
        return out(
            "other-entry",
            f"Expected {expected} but {booted} booted: the boot loader's default became "
            f"{facts.default_entry} while the host was down.",
        )
    if prev.next_entry:
        return out(
            "other-entry",
            f"The one-shot entry {prev.next_entry} was pending but {booted} booted, with no fallback evidence.",
        )
    return out(
        "other-entry",
        f"Expected {expected} but {booted} booted, with no fallback evidence (a menu choice, or a change "
        "made while the host was down).",
    )
