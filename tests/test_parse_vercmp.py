"""strverscmp_improved: systemd's own examples, properties, and bootctl as the oracle."""

from __future__ import annotations

import random
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.parse.vercmp import rpmvercmp
from ostreewatch.parse.vercmp import strverscmp_improved as cmp
from tests.fixtures.oracles import bootctl_list, fuzz_settings, write_esp

# From the comment of strverscmp_improved() in systemd's string-util-fundamental.c, oldest first.
SYSTEMD_ORDER = [
    "122.1",
    "123~rc1-1",
    "123",
    "123-a",
    "123-a.1",
    "123-1",
    "123-1.1",
    "123^post1",
    "123.a-1",
    "123.1-1",
    "123a-1",
    "124-1",
]


@pytest.mark.parametrize("older,newer", list(zip(SYSTEMD_ORDER, SYSTEMD_ORDER[1:])))
@pytest.mark.unit
def test_systemd_documented_order(older: str, newer: str) -> None:
    assert cmp(older, newer) == -1
    assert cmp(newer, older) == 1


@pytest.mark.parametrize(
    "older,newer",
    [
        ("ostree-9", "ostree-10"),
        ("ostree-2", "ostree-9"),
        ("ostree-2.conf", "ostree-10.conf"),
        ("1.10~rc1", "1.10"),
        ("1.10~rc1", "1.10~rc2"),
        ("1.10~", "1.10"),
        ("1.9", "1.10"),
        ("1.10", "1.10^1"),
        ("1.10-1", "1.10^1"),
        ("1.10^1", "1.10.1"),
        ("abc", "abcde"),
        ("a", "1"),  # numeric segments are newer than alphabetic ones
        ("", "0"),
        ("5.14.0-1.fc35", "5.14.0-2.fc35"),
        ("Ostree-4", "ostree-3"),  # plain byte order for letters: 'O' < 'o'
    ],
)
@pytest.mark.unit
def test_pairs(older: str, newer: str) -> None:
    assert cmp(older, newer) == -1
    assert cmp(newer, older) == 1


@pytest.mark.parametrize(
    "a,b",
    [
        ("00123", "123"),
        ("123_a", "123a"),
        ("", ""),
        ("1+2", "1_2"),
        ("ü1", "1"),  # non-ASCII characters are separators, as any invalid character
    ],
)
@pytest.mark.unit
def test_equal(a: str, b: str) -> None:
    assert cmp(a, b) == 0
    assert cmp(b, a) == 0


@pytest.mark.unit
def test_none_is_empty() -> None:
    assert cmp(None, "") == 0
    assert cmp(None, "1") == -1


_version_text = st.text(alphabet="0123456789abAB.-~^_+", max_size=12)


@fuzz_settings(max_examples=300)
@given(_version_text, _version_text)
@pytest.mark.unit
def test_antisymmetric(a: str, b: str) -> None:
    r = cmp(a, b)
    assert r in (-1, 0, 1)
    assert cmp(b, a) == -r
    assert cmp(a, a) == 0


@fuzz_settings(max_examples=300)
@given(st.text(), st.text())
@pytest.mark.unit
def test_any_text(a: str, b: str) -> None:
    assert cmp(a, b) in (-1, 0, 1)


def _version(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        parts.append(rng.choice(["", ".", "-", "~", "^", "_"]))
        parts.append(rng.choice([str(rng.randint(0, 12)), rng.choice(["a", "rc", "b", "Z", "0", "01"])]))
    return "".join(parts)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_versions_sort_like_bootctl(tmp_path, seed: int) -> None:
    """Same sort-key and machine-id: bootctl orders by version, newest first."""
    rng = random.Random(seed)
    versions = sorted({_version(rng) for _ in range(40)})
    entries = {
        f"e{i:02d}.conf": f"title T{i}\nsort-key k\nmachine-id m\nversion {v}\nlinux /vmlinuz\n".encode()
        for i, v in enumerate(versions)
    }
    write_esp(str(tmp_path), entries)
    listed, _ = bootctl_list(str(tmp_path))
    by_id = {e["id"]: e.get("version", "") for e in listed}
    got = [by_id[e["id"]] for e in listed]
    # bootctl's order must be non-increasing under our comparison (ties broken by id).
    for newer, older in zip(got, got[1:]):
        assert cmp(newer, older) >= 0, (newer, older)
    assert sorted(got) == sorted(v for v in versions)


@pytest.mark.parametrize("seed", [4, 5])
def test_ids_sort_like_bootctl(tmp_path, seed: int) -> None:
    """No sort-key: bootctl orders by id (file name with .conf), newest first."""
    rng = random.Random(seed)
    # bootctl 252 only accepts entry names made of [A-Za-z0-9_.+-] ('+' starts boot counting).
    names = sorted({"x" + _version(rng).replace("~", "").replace("^", "") for _ in range(40)})
    entries = {f"{n}.conf": b"title t\nlinux /vmlinuz\n" for n in names}
    write_esp(str(tmp_path), entries)
    listed, _ = bootctl_list(str(tmp_path))
    got = [e["id"] for e in listed]
    assert sorted(got) == sorted(entries)
    for newer, older in zip(got, got[1:]):
        assert cmp(newer, older) >= 0, (newer, older)  # ties: qsort order, unspecified


# --- rpmvercmp (Fedora grub2 blscfg's copy of rpm's vercmp) ---------------------------------


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ("1.0", "1.0", 0),
        ("1.0", "2.0", -1),
        ("2.0.1", "2.0", 1),
        ("2.0.1a", "2.0.1", 1),
        ("5.5p1", "5.5p2", -1),
        ("10xyz", "10.1xyz", -1),
        ("xyz10", "xyz10.1", -1),
        ("1.0", "1_0", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc2", -1),
        ("a", "1", -1),
        ("fc4", "fc.4", 0),
        ("3.0.0_fc", "3.0.0.fc", 0),
        ("1b.fc17", "1.fc17", -1),
        ("001", "1", 0),
        ("", "", 0),
        ("", "1", -1),
    ],
)
@pytest.mark.unit
def test_rpmvercmp_examples(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


def test_rpmvercmp_like_rpm() -> None:
    """rpm's own rpm.vercmp (through `rpm --eval` Lua) on random versions without '-' or '^'."""
    rng = random.Random(3)
    alphabet = "0123456789abAZ._~+"
    pairs = [
        (
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))),
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))),
        )
        for _ in range(400)
    ]
    lua = "".join(
        f'do local ok, r = pcall(rpm.vercmp, "{a}", "{b}"); print((ok and tostring(r) or "E") .. " ") end\n'
        for a, b in pairs
    )
    out = subprocess.run(
        ["rpm", "--eval", "%{lua: " + lua + "}"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert len(out) == len(pairs) and "E" not in out
    assert [rpmvercmp(a, b) for a, b in pairs] == [int(o) for o in out]


@fuzz_settings(max_examples=300)
@given(_version_text, _version_text)
@pytest.mark.unit
def test_rpmvercmp_antisymmetric(a: str, b: str) -> None:
    r = rpmvercmp(a, b)
    assert r in (-1, 0, 1) and rpmvercmp(b, a) == -r
