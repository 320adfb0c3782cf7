"""The classification table of docs/boot-outcome.md: bootoutcome.judge, pure, case by case."""

from __future__ import annotations

from typing import Any

import pytest

from ostreewatch.bootoutcome import (
    BOOT_RECORD_KEYS,
    OUTCOMES,
    BootFacts,
    BootRecord,
    Expectation,
    expectation_from_dict,
    expectation_to_dict,
    judge,
)

A, B, C = "fedora-aaaa.0", "fedora-bbbb.0", "fedora-cccc.0"


def exp(**kw: Any) -> Expectation:
    base: dict[str, Any] = {
        "boot_id": "prev",
        "expected_entry": "ostree-2",
        "expected_deployment": A,
        "default_entry": "ostree-2",
    }
    base.update(kw)
    return Expectation(**base)


def facts(**kw: Any) -> BootFacts:
    base: dict[str, Any] = {"boot_id": "this", "booted_entry": "ostree-2", "booted_deployment": A, "timestamp": 7}
    base.update(kw)
    return BootFacts(**base)


# (name, expectation, facts, outcome, words the reason must contain)
CASES: list[tuple[str, Expectation | None, BootFacts, str, tuple[str, ...]]] = [
    ("plain reboot", exp(), facts(), "default", ("ostree-2", "as expected")),
    (
        "default by deployment, entry renumbered",
        exp(),
        facts(booted_entry="ostree-3", default_entry="ostree-3"),
        "default",
        (),
    ),
    (
        "one-shot pending and booted",
        exp(expected_entry="ostree-1", expected_deployment=B, next_entry="ostree-1", next_deployment=B),
        facts(booted_entry="ostree-1", booted_deployment=B),
        "next-entry",
        ("one-shot", "ostree-1"),
    ),
    (
        "one-shot pending, default booted",
        exp(expected_entry="ostree-1", expected_deployment=B, next_entry="ostree-1", next_deployment=B),
        facts(),
        "other-entry",
        ("one-shot", "pending"),
    ),
    (
        "staged finalized and booted",
        exp(expected_deployment=C, staged_deployment=C),
        facts(booted_entry="ostree-3", booted_deployment=C),
        "staged",
        (C, "finalized"),
    ),
    (
        "staged not finalized: the stamp",
        exp(expected_deployment=C, staged_deployment=C),
        facts(finalize_error="error: Failed to merge /etc: boom\n"),
        "other-entry",
        ("not finalized", "Failed to merge /etc"),
    ),
    (
        "greenboot counter ran out",
        exp(grubenv=(("boot_counter", "0"), ("boot_success", "0"))),
        facts(booted_entry="ostree-1", booted_deployment=B, grubenv={"boot_counter": "-1", "boot_success": "0"}),
        "fallback",
        ("greenboot", "boot_counter=-1", "it was 0 before"),
    ),
    (
        # Seen on a real boot (tests/test_vm_fallback.py): the boot before left boot_counter=0 and
        # boot_success=0, so the daemon's reader already expected GRUB's `set default=1` entry.
        "greenboot fallback foreseen by the previous boot's grubenv",
        exp(expected_entry="ostree-1", expected_deployment=B, grubenv=(("boot_counter", "0"), ("boot_success", "0"))),
        facts(booted_entry="ostree-1", booted_deployment=B, grubenv={"boot_counter": "-1", "boot_success": "0"}),
        "fallback",
        ("GRUB fell back to ostree-1", "foretold", "it was 0 before"),
    ),
    (
        "greenboot counter at 0 after a boot declared a success: no fallback",
        exp(grubenv=(("boot_counter", "0"), ("boot_success", "1"))),
        facts(grubenv={"boot_counter": "0", "boot_success": "0"}),
        "default",
        ("as expected",),
    ),
    (
        "greenboot counter -1 but the boot was declared a success",
        exp(),
        facts(booted_entry="ostree-1", booted_deployment=B, grubenv={"boot_counter": "-1", "boot_success": "1"}),
        "other-entry",
        ("no fallback evidence",),
    ),
    (
        "boot counting tries exhausted",
        exp(),
        facts(booted_entry="ostree-1", booted_deployment=B, tries={"ostree-2": (0, 3)}),
        "fallback",
        ("tries", "exhausted", "3 done"),
    ),
    (
        "boot counting tries left: no evidence",
        exp(),
        facts(booted_entry="ostree-1", booted_deployment=B, tries={"ostree-2": (1, 2)}),
        "other-entry",
        (),
    ),
    (
        "GRUB fallback variable",
        exp(fallback_entry="ostree-1", fallback_deployment=B),
        facts(booted_entry="ostree-1", booted_deployment=B),
        "fallback",
        ("fallback variable", "ostree-1"),
    ),
    (
        "GRUB fallback names another entry",
        exp(fallback_entry="ostree-1", fallback_deployment=B),
        facts(booted_entry="ostree-0", booted_deployment=C),
        "other-entry",
        (),
    ),
    (
        "menu choice",
        exp(),
        facts(booted_entry="ostree-1", booted_deployment=B),
        "other-entry",
        ("menu choice",),
    ),
    (
        "default changed while down",
        exp(),
        facts(booted_entry="ostree-1", booted_deployment=B, default_entry="ostree-1"),
        "other-entry",
        ("while the host was down", "ostree-1"),
    ),
    ("no previous record", None, facts(), "first-record", ("no record",)),
    (
        "booted unknown",
        exp(),
        facts(booted_entry="", booted_deployment=""),
        "other-entry",
        ("cannot be told",),
    ),
    (
        "entries only, no deployments known",
        exp(expected_deployment=""),
        facts(booted_deployment=""),
        "default",
        (),
    ),
    (
        "staged pending but booted the one-shot",
        exp(expected_deployment=C, staged_deployment=C, next_entry="ostree-1", next_deployment=B),
        facts(booted_entry="ostree-1", booted_deployment=B),
        "next-entry",
        (),
    ),
]


@pytest.mark.parametrize(("name", "prev", "now", "outcome", "words"), CASES, ids=[c[0] for c in CASES])
def test_judge(name: str, prev: Expectation | None, now: BootFacts, outcome: str, words: tuple[str, ...]) -> None:
    rec = judge(prev, now)
    assert rec.outcome == outcome, rec.reason
    for w in words:
        assert w in rec.reason, (w, rec.reason)
    # One sentence: ends with a full stop, no line break.
    assert rec.reason.endswith(".") and "\n" not in rec.reason
    assert rec.boot_id == "this" and rec.timestamp == now.timestamp
    assert rec.booted_entry == now.booted_entry and rec.booted_deployment == now.booted_deployment
    if prev is not None:
        assert rec.previous_boot_id == "prev"
        assert (rec.expected_entry, rec.expected_deployment) == (prev.expected_entry, prev.expected_deployment)


def test_every_outcome_is_produced() -> None:
    produced = {judge(p, f).outcome for _, p, f, _, _ in CASES}
    assert produced == set(OUTCOMES)


def test_finalize_failure_is_carried_on_any_outcome() -> None:
    one_shot = exp(expected_entry="ostree-1", expected_deployment=B, next_entry="ostree-1", next_deployment=B)
    rec = judge(one_shot, facts(booted_entry="ostree-1", booted_deployment=B, finalize_error="error: oops"))
    assert rec.outcome == "next-entry"
    assert rec.finalize_failed and rec.finalize_error == "error: oops"
    assert "could not finalize" in rec.reason
    # Seen on a real boot (tests/test_vm_fallback.py): ostree-finalize-staged removed the staged file
    # before it failed, so the last expectation had no staged deployment; the default booted, yet the
    # update did not: not as expected.
    rec = judge(exp(), facts(finalize_error="error: Finalizing staged deployment: oops"))
    assert rec.outcome == "other-entry"
    assert rec.finalize_failed and rec.finalize_error == "error: Finalizing staged deployment: oops"
    assert "not finalized" in rec.reason and "oops" in rec.reason
    empty = judge(exp(), facts(finalize_error=""))
    assert empty.finalize_failed and empty.finalize_error == ""
    assert not judge(exp(), facts()).finalize_failed


def test_first_record_names_the_previous_boot_id_when_known() -> None:
    rec = judge(None, facts(), previous_boot_id="older")
    assert rec.outcome == "first-record" and rec.previous_boot_id == "older"
    assert "older" in rec.reason


def test_record_round_trip_and_types() -> None:
    rec = judge(exp(), facts())
    d = rec.to_dict()
    assert list(d) == list(BOOT_RECORD_KEYS)
    assert BootRecord.from_dict(d) == rec
    for key, bad in (("timestamp", True), ("finalize_failed", 1), ("outcome", "sideways"), ("boot_id", None)):
        with pytest.raises(ValueError):
            BootRecord.from_dict(dict(d, **{key: bad}))
    with pytest.raises(ValueError):
        BootRecord.from_dict({k: v for k, v in d.items() if k != "reason"})


def test_expectation_round_trip_and_bad_values() -> None:
    e = exp(staged_deployment=C, grubenv=(("boot_counter", "2"), ("boot_success", "0")), timestamp=5)
    assert expectation_from_dict(expectation_to_dict(e)) == e
    for bad in ({"boot_id": 3}, {"grubenv": {"a": 1}}, {"timestamp": "x"}, {"expected_entry": None}):
        with pytest.raises(ValueError):
            expectation_from_dict(dict(expectation_to_dict(e), **bad))
    with pytest.raises(ValueError):
        expectation_from_dict({})
    # Keys a newer daemon adds are ignored; missing optional keys take their defaults.
    assert expectation_from_dict({"boot_id": "x", "future": 1}) == Expectation(boot_id="x")


def test_judge_never_raises_and_always_answers_one_sentence() -> None:
    """Seeded random expectations and facts (ids drawn from a small pool so that they collide)."""
    import random

    rng = random.Random(18)
    pool = ["", "ostree-1", "ostree-2", "ostree-2+0-3", A, B, C, "x\ny", "é"]
    for _ in range(3000):
        prev = None
        if rng.random() > 0.1:
            prev = Expectation(
                boot_id=rng.choice(["p", ""]),
                **{
                    k: rng.choice(pool)
                    for k in (
                        "expected_entry",
                        "expected_deployment",
                        "default_entry",
                        "next_entry",
                        "next_deployment",
                        "staged_deployment",
                        "fallback_entry",
                        "fallback_deployment",
                    )
                },
                grubenv=tuple({("boot_counter", rng.choice(["0", "-1", "3"]))} if rng.random() > 0.5 else ()),
            )
        now = BootFacts(
            boot_id="this",
            booted_entry=rng.choice(pool),
            booted_deployment=rng.choice(pool),
            default_entry=rng.choice(pool),
            grubenv={"boot_counter": rng.choice(["-1", "0"]), "boot_success": rng.choice(["0", "1"])}
            if rng.random() > 0.5
            else {},
            tries={rng.choice(pool): (rng.randint(0, 2), rng.randint(0, 3))} if rng.random() > 0.5 else {},
            finalize_error=rng.choice([None, "", "error: x"]),
        )
        rec = judge(prev, now)
        assert rec.outcome in OUTCOMES
        assert rec.reason.endswith(".") and rec.reason[0].isupper()
        assert BootRecord.from_dict(rec.to_dict()) == rec


@pytest.mark.unit
def test_an_expectation_written_by_finalize_still_names_the_staged_deployment() -> None:
    """Seen on a real boot (tests/test_vm_boot.py, static-b): ostree-finalize-staged at shutdown made the
    staged deployment the default while the daemon watched; the next boot is still judged `staged`."""
    from ostreewatch.boottracker import after_finalize

    before = exp(expected_entry="ostree-1", expected_deployment=B, staged_deployment=B)
    finalized = exp(expected_entry="ostree-2", expected_deployment=B, default_entry="ostree-2")
    carried = after_finalize(before, finalized)
    assert carried.staged_deployment == B and carried.expected_entry == "ostree-2"
    assert judge(carried, facts(booted_deployment=B, booted_entry="ostree-2")).outcome == "staged"
    # Not a finalization: the staged deployment went away and another one is expected.
    other = exp(expected_entry="ostree-1", expected_deployment=C)
    assert after_finalize(before, other) == other
    assert after_finalize(None, finalized) == finalized
    assert after_finalize(finalized, finalized) == finalized
