"""GVariant deserializer: compared with GLib (python3-gi) on real serialized data."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import GVariantError
from ostreewatch.parse.gvariant import (
    parse_ostree_booted,
    parse_staged_deployment,
    parse_type,
    parse_variant,
)
from tests.fixtures.oracles import fuzz_settings, glib_batch, plain_value

# (type, python expression for GLib) covering every type, alignment and offset size.
CASES = [
    ("b", "True"),
    ("b", "False"),
    ("y", "255"),
    ("n", "-32768"),
    ("q", "65535"),
    ("i", "-2147483648"),
    ("u", "4294967295"),
    ("x", "-9223372036854775808"),
    ("t", "18446744073709551615"),
    ("d", "-1.5e300"),
    ("h", "3"),
    ("s", "''"),
    ("s", "'héllo ☃'"),
    ("o", "'/org/ostreewatch1'"),
    ("g", "'a{sv}'"),
    ("v", "V('(tt)', (2049, 123456789012))"),
    ("v", "V('v', V('s', 'deep'))"),
    ("ms", "None"),
    ("ms", "'x'"),
    ("ms", "''"),
    ("mi", "None"),
    ("mi", "7"),
    ("mmb", "None"),
    ("ay", "b'\\x00\\x01\\xff'"),
    ("ay", "b''"),
    ("an", "[1, -2, 3]"),
    ("at", "[]"),
    ("as", "['a', '', 'ccc']"),
    ("as", "['z' * 300] * 3"),
    ("as", "['y' * 70000]"),
    ("aas", "[[], ['a'], [], ['b', 'c']]"),
    ("a(si)", "[('a', 1), ('bb', 2)]"),
    ("a{sv}", "{'a': V('s', 'x'), 'b': V('b', True), 'c': V('as', ['p', 'q']), 'd': V('(tt)', (1, 2))}"),
    ("a{ss}", "{'k' * 300: 'v' * 70000}"),
    ("a{is}", "{1: 'one', -2: 'two'}"),
    ("()", "()"),
    ("a()", "[(), ()]"),
    ("(yyy)", "(1, 2, 3)"),
    ("(ayas)", "(b'ab', ['c'])"),
    ("(sib)", "('x', -5, True)"),
    ("(ybq)", "(1, False, 3)"),
    ("(dxnt)", "(1.5, -1, -2, 3)"),
    ("(s(ii)s)", "('a', (1, 2), 'bcd')"),
    ("(yt)", "(1, 2)"),
    ("(ty)", "(1, 2)"),
    ("(asmsay)", "(['a'], None, b'x')"),
    ("((y)(s))", "((1,), ('s',))"),
    ("a(yt)", "[(1, 2), (3, 4)]"),
    ("ama{sv}", "[None, {'k': V('u', 1)}]"),
]


@pytest.fixture(scope="module")
def serialized():
    hexes = glib_batch([("serialize", t, expr) for t, expr in CASES])
    back = glib_batch([("deserialize", t, h) for (t, _), h in zip(CASES, hexes)])
    return [(t, bytes.fromhex(h), value) for (t, _), h, (_normal, value) in zip(CASES, hexes, back)]


def test_every_case_like_glib(serialized) -> None:
    for type_string, data, glib_value in serialized:
        assert plain_value(parse_variant(data, type_string)) == glib_value, type_string


@pytest.mark.unit
def test_types() -> None:
    assert parse_type("a{sv}").alignment == 8
    assert parse_type("(yt)").fixed_size == 16
    assert parse_type("(ty)").fixed_size == 16
    assert parse_type("()").fixed_size == 1
    assert parse_type("(yy)").fixed_size == 2
    assert parse_type("as").fixed_size is None
    for bad in ("", "a", "(s", "{sv", "{vs}", "{s}", "z", "ss", "(s))", "a" * 200 + "s"):
        with pytest.raises(GVariantError):
            parse_variant(b"", bad)


@pytest.mark.parametrize(
    "type_string,data",
    [
        ("s", b"abc"),  # no NUL
        ("s", b"a\0b\0"),  # embedded NUL
        ("s", b"\xff\0"),  # not UTF-8
        ("i", b"\0\0\0"),  # wrong size
        ("b", b"\x02"),  # not 0/1
        ("as", b"a\0\x09"),  # offset beyond the data
        ("(su)", b"x\0"),  # too short
        ("v", b"abc"),  # no type separator
        ("v", b"\0zz"),  # bad inner type
        ("at", b"\0" * 7),  # partial element
    ],
)
@pytest.mark.unit
def test_malformed(type_string: str, data: bytes) -> None:
    with pytest.raises(GVariantError):
        parse_variant(data, type_string)


def test_ostree_booted(serialized) -> None:
    data = glib_batch(
        [
            (
                "serialize",
                "a{sv}",
                "{'backing-root-device-inode': V('(tt)', (64768, 1234567)), 'composefs': V('b', True)}",
            )
        ]
    )[0]
    d = parse_ostree_booted(bytes.fromhex(data))
    assert d["backing-root-device-inode"] == (64768, 1234567)
    assert d["composefs"] is True
    assert parse_ostree_booted(b"") == {}  # ostree < 2024.2 writes an empty file
    bad = glib_batch([("serialize", "a{sv}", "{'backing-root-device-inode': V('s', 'x')}")])[0]
    with pytest.raises(GVariantError):
        parse_ostree_booted(bytes.fromhex(bad))


STAGED = (
    "{'target': V('a{sv}', {'name': V('s', '838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941.0'),"
    " 'osname': V('s', 'rhcos'), 'bootcsum': V('s', 'abc123'), 'bootserial': V('i', 0)}),"
    " 'kargs': V('as', ['rw', 'ostree=/ostree/boot.1/rhcos/abc123/0']), 'overlay-initrds': V('as', []),"
    " 'locked': V('b', True)}"
)


def test_staged_deployment() -> None:
    data = bytes.fromhex(glib_batch([("serialize", "a{sv}", STAGED)])[0])
    d = parse_staged_deployment(data)
    assert d["osname"] == "rhcos"
    assert d["checksum"] == "838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941"
    assert d["serial"] == 0
    assert d["bootcsum"] == "abc123" and d["bootserial"] == 0
    assert d["kargs"] == ["rw", "ostree=/ostree/boot.1/rhcos/abc123/0"]
    assert d["locked"] is True


@pytest.mark.parametrize(
    "expr",
    [
        "{'kargs': V('as', [])}",  # no target
        "{'target': V('s', 'x')}",  # target not a dict
        "{'target': V('a{sv}', {'name': V('s', 'abc.0')})}",  # no osname
        "{'target': V('a{sv}', {'osname': V('s', 'os'), 'name': V('s', 'zz')})}",  # bad name
    ],
)
def test_staged_deployment_invalid(expr: str) -> None:
    data = bytes.fromhex(glib_batch([("serialize", "a{sv}", expr)])[0])
    with pytest.raises(GVariantError):
        parse_staged_deployment(data)


# --- differential fuzzing against GLib ----------------------------------------------------

FUZZ_TYPES = ["a{sv}", "(tt)", "as", "(sib)", "ms", "a(yt)", "v", "(asmsay)", "ay", "a{is}"]


def test_random_mutations_agree_with_glib(serialized) -> None:
    """Mutated real serializations: when GLib calls the data normal form we must agree
    on the value; otherwise we may raise GVariantError (never anything else)."""
    rng = random.Random(7)
    by_type = {}
    for t, data, _ in serialized:
        if t in FUZZ_TYPES and data:
            by_type.setdefault(t, []).append(data)
    requests = []
    for _ in range(600):
        t = rng.choice(sorted(by_type))
        data = bytearray(rng.choice(by_type[t]))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            pos = rng.randrange(len(data)) if data else 0
            if op < 0.6 and data:
                data[pos] = rng.randrange(256)
            elif op < 0.8 and data:
                del data[pos]
            else:
                data.insert(pos, rng.randrange(256))
        requests.append((t, bytes(data)))
    answers = glib_batch([("deserialize", t, d.hex()) for t, d in requests])
    agreed = 0
    for (t, data), (normal, glib_value) in zip(requests, answers):
        try:
            ours = plain_value(parse_variant(data, t))
        except GVariantError:
            assert not normal, (t, data.hex())
            continue
        if normal:
            assert ours == glib_value, (t, data.hex())
            agreed += 1
    assert agreed > 50  # the test really compared values


@fuzz_settings(max_examples=400)
@given(st.sampled_from(FUZZ_TYPES + ["a{sa{sv}}", "(ayy)", "maas", "d", "()"]), st.binary(max_size=200))
@pytest.mark.unit
def test_fuzz_random_bytes(type_string: str, data: bytes) -> None:
    with contextlib.suppress(GVariantError):
        parse_variant(data, type_string)
    for f in (parse_ostree_booted, parse_staged_deployment):
        with contextlib.suppress(GVariantError):
            f(data)


@fuzz_settings(max_examples=200)
@given(st.text(max_size=30), st.binary(max_size=40))
@pytest.mark.unit
def test_fuzz_type_strings(type_string: str, data: bytes) -> None:
    with contextlib.suppress(GVariantError):
        parse_variant(data, type_string)


@pytest.mark.unit
def test_deep_nesting_is_an_error_not_a_crash() -> None:
    # A variant holding a variant ... 10,000 deep: GLib itself refuses beyond 128.
    data = struct.pack("<i", 1) + b"\0i"
    nested = data
    for _ in range(5000):
        nested = nested + b"\0v"
    with pytest.raises(GVariantError):
        parse_variant(nested, "v")
