"""The hand-written matchers (no `re` before READY=1, issue 21) agree with the expressions they replace."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from ostreewatch import state
from ostreewatch.parse import bls, grubcfg, mountinfo, osrelease

CSUM = "0123456789abcdef" * 4
# Text made of the characters the expressions care about, plus pieces of the shapes they match.
_atoms = st.sampled_from(
    ["/", ".", "+", "-", "$", "{", "}", "=", "\\", "\n", "_", "?", "#", "a", "Z", "0", "7", "9", "٣", "é", " "]
    + ["ostree", "deploy", "boot.0", "boot.1", "boot.2", "loader", CSUM, CSUM[:63], "fedora", "conf", ".conf"]
)
texts = st.lists(_atoms, max_size=14).map("".join)


@settings(max_examples=3000, deadline=None)
@given(texts)
def test_state_matchers(text: str) -> None:
    m = re.fullmatch(r"([0-9a-f]{64})\.([0-9]+)", text)
    assert state._deploy_name(text) == (m.groups() if m else None)
    m = re.fullmatch(r"/?ostree/boot\.[01]/([^/]+)/([0-9a-f]{64})/([0-9]+)/?", text)
    assert state._ostree_arg(text) == (m.groups() if m else None)
    m = re.search(r"(?:^|/)ostree/deploy/([^/]+)/deploy/([0-9a-f]{64})\.([0-9]+)/?$", text)
    assert state._deploy_root(text) == (m.groups() if m else None)
    assert state._loader_n(text) == bool(re.fullmatch(r"loader\.[0-9]+", text))


def test_state_matchers_on_real_shapes() -> None:
    assert state._ostree_arg(f"/ostree/boot.1/fedora/{CSUM}/0") == ("fedora", CSUM, "0")
    assert state._deploy_root(f"/sysroot/ostree/deploy/fedora/deploy/{CSUM}.12/") == ("fedora", CSUM, "12")
    assert state._deploy_name(f"{CSUM}.3") == (CSUM, "3")


@settings(max_examples=3000, deadline=None)
@given(texts)
def test_bls_matchers(text: str) -> None:
    stem = text[:-5] if text.endswith(".conf") else text
    m = re.fullmatch(r"(.*)\+([0-9]+)(?:-([0-9]+))?", stem, re.DOTALL)
    if m is None or not m.group(1):
        expected: tuple[str, int | None, int | None] = (stem, None, None)
    else:
        left, done = int(m.group(2)), int(m.group(3)) if m.group(3) is not None else None
        too_big = left > 2**32 - 1 or (done is not None and done > 2**32 - 1)
        expected = (stem, None, None) if too_big else (m.group(1), left, done)
    assert bls.split_boot_counting(text) == expected
    valid = bool(re.fullmatch(r"[A-Za-z0-9_.+-]+", text)) and text.endswith(".conf")
    assert bls.valid_entry_file_name(text) == valid


@settings(max_examples=3000, deadline=None)
@given(texts)
def test_grubcfg_matchers(text: str) -> None:
    var = re.compile(r"\$(?:\{([A-Za-z0-9_?#@*]+)\}|([A-Za-z_][A-Za-z0-9_]*|[0-9?#@*]))")
    found = [(m.start(), m.end(), m.group(1) or m.group(2)) for m in var.finditer(text)]
    assert grubcfg._vars_in(text) == found
    for i in range(len(text)):
        m = var.match(text, i)
        assert grubcfg._var_at(text, i) == ((m.group(1) or m.group(2), m.end()) if m else None)
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", text, re.DOTALL)
    assert grubcfg._assignment(text) == (m.groups() if m else None)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([b"\\", b"0", b"1", b"3", b"4", b"7", b"8", b"a", b" "]), max_size=16).map(b"".join))
def test_mountinfo_unescape(raw: bytes) -> None:
    expected = re.sub(rb"\\([0-3][0-7][0-7])", lambda m: bytes((int(m.group(1), 8),)), raw)
    assert mountinfo._unescape(raw) == expected


@settings(max_examples=1000, deadline=None)
@given(texts)
def test_osrelease_names(text: str) -> None:
    parsed = osrelease.parse_os_release(f"{text}=x\n")
    assert (text in parsed) == bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text))
