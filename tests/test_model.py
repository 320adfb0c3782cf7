"""model.py's tables agree with each other and with the interface (pure: no I/O)."""

from __future__ import annotations

import dataclasses

import pytest

from ostreewatch import model

pytestmark = pytest.mark.unit


def test_records_cover_every_record_property() -> None:
    record_properties = {n for n, sig in model.PROPERTY_SIGNATURES.items() if sig == "aa{sv}"}
    assert set(model.RECORDS) == record_properties


@pytest.mark.parametrize("name", sorted(model.RECORDS))
def test_record_keys_are_the_record_fields(name: str) -> None:
    kind = model.RECORDS[name]
    fields = {f.name for f in dataclasses.fields(kind.cls)}
    # BootEntry keeps some parsed keys (efi, first_options...) that are not published.
    assert set(kind.keys) <= fields
    if kind.cls is not model.BootEntry:
        assert set(kind.keys) == fields
    assert model.key_signatures(name) is kind.keys


def test_record_to_dict_uses_the_contract_keys() -> None:
    problem = model.Problem(code=model.ProblemCode.BOOT_FALLBACK.code, message="m", subject="s")
    assert model.record_to_dict(problem) == {"code": "boot-fallback", "message": "m", "subject": "s"}


def test_problem_codes_are_unique_and_described() -> None:
    codes = [c.code for c in model.ProblemCode]
    assert len(codes) == len(set(codes)) == len(model.PROBLEM_CODES)
    assert all(model.PROBLEM_CODES[c] for c in codes)
    assert not set(codes) & set(model.RETIRED_PROBLEM_CODES)
