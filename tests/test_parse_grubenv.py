"""grubenv: grub-editenv reads what we write and we write what grub-editenv writes, byte for byte."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import GrubenvError
from ostreewatch.parse.grubenv import (
    SIGNATURE,
    create_grubenv,
    list_grubenv,
    parse_grubenv,
    update_grubenv,
)
from tests.fixtures.oracles import fuzz_settings, grub_editenv, grub_editenv_list

NASTY = {
    "saved_entry": "ostree-2-fedora",
    "bs": "a\\b\\\\c\\",
    "nl": "line1\nline2\n",
    "eq": "k=v==w",
    "hash": "#not a comment",
    "empty": "",
    "utf8": "Fédora ☃",
    "mixed": "\\\n\\n",
}


def _expected_list(pairs) -> bytes:
    return b"".join(f"{k}={v}\n".encode() for k, v in pairs)


@pytest.fixture
def envfile(tmp_path):
    path = tmp_path / "grubenv"
    grub_editenv(str(path), "create")
    return path


def test_create_matches_grub_layout(envfile) -> None:
    ours = create_grubenv()
    theirs = envfile.read_bytes()
    assert len(ours) == len(theirs) == 1024
    assert ours.startswith(SIGNATURE) and theirs.startswith(SIGNATURE)
    assert parse_grubenv(theirs) == parse_grubenv(ours) == {}


def test_parse_what_grub_editenv_writes(envfile) -> None:
    grub_editenv(str(envfile), "set", *(f"{k}={v}" for k, v in NASTY.items()))
    data = envfile.read_bytes()
    assert parse_grubenv(data) == NASTY
    assert _expected_list(list_grubenv(data)) == grub_editenv_list(str(envfile))


def test_update_is_byte_identical_to_grub_editenv(envfile, tmp_path) -> None:
    start = envfile.read_bytes()
    grub_editenv(str(envfile), "set", *(f"{k}={v}" for k, v in NASTY.items()))
    ours = update_grubenv(start, NASTY)
    assert ours == envfile.read_bytes()
    # Shrink, grow and delete in the middle.
    changes = {"bs": "x", "nl": "much longer value than before\\\n", "eq": None, "saved_entry": "ostree-1"}
    grub_editenv(str(envfile), "set", "bs=x", "nl=much longer value than before\\\n")
    grub_editenv(str(envfile), "unset", "eq")
    grub_editenv(str(envfile), "set", "saved_entry=ostree-1")
    ours = update_grubenv(ours, changes)
    assert ours == envfile.read_bytes()
    mine = tmp_path / "mine"
    mine.write_bytes(ours)
    assert grub_editenv_list(str(mine)) == grub_editenv_list(str(envfile))


def test_other_variables_kept_in_order(envfile) -> None:
    grub_editenv(str(envfile), "set", "a=1", "saved_entry=x", "b=2", "c=3")
    data = envfile.read_bytes()
    out = update_grubenv(data, {"saved_entry": "yy"})
    assert list_grubenv(out) == [("a", "1"), ("saved_entry", "yy"), ("b", "2"), ("c", "3")]
    out = update_grubenv(data, {"saved_entry": None, "next_entry": "z"})
    assert list_grubenv(out) == [("a", "1"), ("b", "2"), ("c", "3"), ("next_entry", "z")]
    assert len(out) == 1024


def test_overflow(envfile) -> None:
    data = envfile.read_bytes()
    big = "x" * 1100
    proc = grub_editenv(str(envfile), "set", f"a={big}", check=False)
    assert proc.returncode != 0 and b"environment block too small" in proc.stderr
    assert envfile.read_bytes() == data
    with pytest.raises(GrubenvError, match="environment block too small"):
        update_grubenv(data, {"a": big})
    # Exactly filling the block works for both; one more byte fails for both.
    room = 1024 - len(data.rstrip(b"#")) - len("a=\n")
    ok = update_grubenv(data, {"a": "y" * room})
    grub_editenv(str(envfile), "set", "a=" + "y" * room)
    assert ok == envfile.read_bytes() and not ok.endswith(b"#")
    with pytest.raises(GrubenvError):
        update_grubenv(data, {"a": "y" * (room + 1)})
    # All or nothing: a failing update in a batch changes nothing (a new value is returned or none).
    with pytest.raises(GrubenvError):
        update_grubenv(ok, {"b": "1", "a": "y" * (room + 5)})


def test_bigger_block_keeps_size(tmp_path) -> None:
    path = tmp_path / "big"
    path.write_bytes(create_grubenv(4096))
    grub_editenv(str(path), "set", "saved_entry=" + "z" * 2000)
    theirs = path.read_bytes()
    assert len(theirs) == 4096
    assert update_grubenv(create_grubenv(4096), {"saved_entry": "z" * 2000}) == theirs


@pytest.mark.parametrize("name", ["", "a=b", "a\nb", "#a", "a\\b", "a\0"])
@pytest.mark.unit
def test_invalid_names(name: str) -> None:
    with pytest.raises(GrubenvError):
        update_grubenv(create_grubenv(), {name: "v"})


@pytest.mark.unit
def test_invalid_values() -> None:
    with pytest.raises(GrubenvError):
        update_grubenv(create_grubenv(), {"a": "x\0y"})
    with pytest.raises(GrubenvError):
        update_grubenv(create_grubenv(), {"a": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("data", [b"", b"# GRUB Environment Block", b"not a grubenv" + b"#" * 1011, b"\xff" * 1024])
@pytest.mark.unit
def test_not_a_block(data: bytes) -> None:
    with pytest.raises(GrubenvError):
        parse_grubenv(data)
    with pytest.raises(GrubenvError):
        update_grubenv(data, {"a": "b"})


def test_broken_block_reads_like_grub(tmp_path) -> None:
    """A line without '=' stops grub's reading; we return what grub returns."""
    data = bytearray(create_grubenv())
    body = b"a=1\nbroken line\nb=2\n"
    data[len(SIGNATURE) : len(SIGNATURE) + len(body)] = body
    path = tmp_path / "broken"
    path.write_bytes(bytes(data))
    assert _expected_list(list_grubenv(bytes(data))) == grub_editenv_list(str(path))


def test_duplicates_last_wins_and_set_changes_the_first(tmp_path) -> None:
    data = bytearray(create_grubenv())
    body = b"a=1\na=2\n"
    data[len(SIGNATURE) : len(SIGNATURE) + len(body)] = body
    path = tmp_path / "dup"
    path.write_bytes(bytes(data))
    assert parse_grubenv(bytes(data)) == {"a": "2"}
    grub_editenv(str(path), "set", "a=3")
    assert update_grubenv(bytes(data), {"a": "3"}) == path.read_bytes()


_OPS_NAMES = ["saved_entry", "next_entry", "boot_success", "menu_auto_hide", "x"]
_OPS_VALUES = ["", "1", "ostree-1", "a\\b", "c\nd", "=", "ü", "\\", "\n", "long" * 30]


@pytest.mark.parametrize("seed", range(3))
def test_random_sequences_like_grub_editenv(envfile, seed: int) -> None:
    rng = random.Random(seed)
    ours = envfile.read_bytes()
    for _ in range(25):
        name = rng.choice(_OPS_NAMES)
        value: str | None = None if rng.random() < 0.25 else rng.choice(_OPS_VALUES)
        try:
            new = update_grubenv(ours, {name: value})
        except GrubenvError:
            new = None
        if value is None:
            grub_editenv(str(envfile), "unset", name)
        else:
            proc = grub_editenv(str(envfile), "set", f"{name}={value}", check=False)
            assert (proc.returncode == 0) == (new is not None)
        if new is not None:
            ours = new
        assert ours == envfile.read_bytes()
    assert _expected_list(list_grubenv(ours)) == grub_editenv_list(str(envfile))


# --- nothing but GrubenvError escapes --------------------------------------------------


@fuzz_settings(max_examples=300)
@given(st.binary(max_size=300))
@pytest.mark.unit
def test_fuzz_random(data: bytes) -> None:
    for candidate in (data, SIGNATURE + data):
        with contextlib.suppress(GrubenvError):
            parse_grubenv(candidate)
        with contextlib.suppress(GrubenvError):
            update_grubenv(candidate, {"saved_entry": "x", "y": None})


@fuzz_settings(max_examples=300)
@given(st.data())
@pytest.mark.unit
def test_fuzz_mutated(data) -> None:
    block = bytearray(update_grubenv(create_grubenv(), {"a": "1\\2", "saved_entry": "s\nt"}))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(len(SIGNATURE), len(block) - 1))
        block[pos] = data.draw(st.sampled_from(b"#=\\\na\xff\0"))
    name = data.draw(st.sampled_from(["a", "saved_entry", "new"]))
    value = data.draw(st.none() | st.text(max_size=20))
    with contextlib.suppress(GrubenvError):
        parse_grubenv(bytes(block))
    try:
        out = update_grubenv(bytes(block), {name: value})
    except GrubenvError:
        return
    assert len(out) == len(block)
