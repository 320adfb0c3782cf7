"""loader.conf: parse, rewrite only the `default` line, match the glob like bootctl."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import LoaderConfError
from ostreewatch.parse.loaderconf import LoaderConf, match_default, parse_loader_conf, set_default
from tests.fixtures.oracles import bootctl_list, fuzz_settings, write_esp

SAMPLE = (
    "# systemd-boot configuration\n"
    "timeout 3\n"
    "console-mode max\n"
    "   editor no   \r\n"
    "auto-entries yes\n"
    "auto-firmware no\n"
    "random-seed-mode always\n"
    "beep yes\n"
    "reboot-for-bitlocker no\n"
    "secure-boot-enroll manual\n"
    "\n"
    "#default old-*\n"
    'default "fedora-*"\n'
    "frobnicate 12\n"
    "keyonly\n"
)


@pytest.mark.unit
def test_parse_every_key() -> None:
    c = parse_loader_conf(SAMPLE)
    assert isinstance(c, LoaderConf)
    assert c.timeout == "3"
    assert c.console_mode == "max"
    assert c.editor == "no"
    assert c.auto_entries == "yes"
    assert c.auto_firmware == "no"
    assert c.random_seed_mode == "always"
    assert c.beep == "yes"
    assert c.reboot_for_bitlocker == "no"
    assert c.secure_boot_enroll == "manual"
    assert c.default == "fedora-*"  # sd-boot drops one pair of double quotes
    assert c.extra == (("frobnicate", "12"),)
    assert "".join(c.lines) == SAMPLE


@pytest.mark.unit
def test_last_wins_and_empty() -> None:
    assert parse_loader_conf("default a\ndefault b\n").default == "b"
    assert parse_loader_conf("") == LoaderConf()
    assert parse_loader_conf("default\n").default is None


@pytest.mark.unit
def test_set_default_replaces_only_that_line() -> None:
    out = set_default(SAMPLE, "ostree-*")
    assert out == SAMPLE.replace('default "fedora-*"\n', "default ostree-*\n")
    assert parse_loader_conf(out).default == "ostree-*"


@pytest.mark.unit
def test_set_default_keeps_crlf_and_indent() -> None:
    text = "timeout 3\r\n  default\tx\r\n# end\r\n"
    assert set_default(text, "y") == "timeout 3\r\n  default y\r\n# end\r\n"


@pytest.mark.unit
def test_set_default_adds_when_missing() -> None:
    assert set_default("timeout 3\n", "a.conf") == "timeout 3\ndefault a.conf\n"
    assert set_default("timeout 3", "a.conf") == "timeout 3\ndefault a.conf\n"
    assert set_default("", "a.conf") == "default a.conf\n"
    assert set_default("#default x\n", "a") == "#default x\ndefault a\n"


@pytest.mark.unit
def test_set_default_last_line_counts() -> None:
    text = "default a\ntimeout 1\ndefault b\n"
    assert set_default(text, "c") == "default a\ntimeout 1\ndefault c\n"
    assert parse_loader_conf(set_default(text, "c")).default == "c"


@pytest.mark.unit
def test_set_default_none_removes_all() -> None:
    text = "default a\ntimeout 1\n# default comment\ndefault b\n"
    assert set_default(text, None) == "timeout 1\n# default comment\n"
    assert parse_loader_conf(set_default(text, None)).default is None


@pytest.mark.parametrize("value", ["", " a", "a ", "a\nb", "a\rb", "a\0", '"quoted"', 3])
@pytest.mark.unit
def test_set_default_rejects(value) -> None:
    with pytest.raises(LoaderConfError):
        set_default("timeout 3\n", value)


@pytest.mark.unit
def test_other_separators_are_kept() -> None:
    # str.splitlines would split on \x0c and \x1c; loader.conf lines end only at \n.
    text = "timeout 3\x0c\ndefault a\x1cb\n"
    assert set_default(text, "z") == "timeout 3\x0c\ndefault z\n"


ORDER = ["ostree-3.conf", "ostree-2+1-1.conf", "Fedora-1.conf", "arch[1].conf", "ostree-1.conf"]


@pytest.mark.parametrize(
    "pattern,expected",
    [
        ("ostree-*", "ostree-3.conf"),  # the first in boot order wins
        ("OSTREE-2*", "ostree-2+1-1.conf"),  # case-insensitive; id without counting
        ("ostree-2.conf", "ostree-2+1-1.conf"),
        ("ostree-2+1-1.conf", None),  # the counting suffix is not part of the id
        ("fedora-?.conf", "Fedora-1.conf"),
        ("*-[12].conf", "ostree-2+1-1.conf"),
        ("*-[!3].conf", "ostree-2+1-1.conf"),
        ("*-[^23].conf", "Fedora-1.conf"),
        ("arch\\[1\\].conf", "arch[1].conf"),
        ("arch[1].conf", None),  # [1] is a class matching "1"
        ("ostree-1", None),  # ids include ".conf"
        ("*", "ostree-3.conf"),
        ("[", None),
        ("", None),
    ],
)
@pytest.mark.unit
def test_match_default(pattern: str, expected) -> None:
    assert match_default(pattern, ORDER) == expected


def test_set_default_is_what_bootctl_then_picks(tmp_path) -> None:
    entries = {f"ostree-{i}.conf": f"title {i}\nversion {i}\nlinux /v\n".encode() for i in (1, 2, 3)}
    conf = "# keep me\ntimeout 5\ndefault ostree-3.conf\n"
    write_esp(str(tmp_path), entries, set_default(conf, "OSTREE-1*"))
    _, default_id = bootctl_list(str(tmp_path))
    assert default_id == "ostree-1.conf"
    files = ["ostree-3.conf", "ostree-2.conf", "ostree-1.conf"]
    assert match_default(parse_loader_conf(set_default(conf, "OSTREE-1*")).default, files) == "ostree-1.conf"
    write_esp(str(tmp_path), entries, set_default(conf, None))
    _, default_id = bootctl_list(str(tmp_path))
    assert default_id == "ostree-3.conf"


# --- properties and fuzzing ---------------------------------------------------------------

_line = st.sampled_from(["default a", "timeout 3", "# c", "", "  default\tb  ", "editor no", "x y z", "default"])
_conf = st.lists(_line, max_size=8).map(lambda ls: "\n".join(ls)) | st.text(max_size=200)
_value = st.text(alphabet="abcAB-*?.[]!09+_", min_size=1, max_size=12).filter(
    lambda v: not (v[0] == '"' and v[-1] == '"')
)


@fuzz_settings(max_examples=300)
@given(_conf, _value)
@pytest.mark.unit
def test_set_default_property(text: str, value: str) -> None:
    try:
        out = set_default(text, value)
    except LoaderConfError:
        assert "\0" in text
        return
    assert parse_loader_conf(out).default == value
    cleared = set_default(out, None)
    assert parse_loader_conf(cleared).default is None
    # Every non-default line survives, in order (a newline may have been added to end the last one).
    before = set_default(text, None)
    assert cleared in (before, before + "\n", before + "\r\n")


@fuzz_settings(max_examples=300)
@given(st.text(max_size=300), st.text(max_size=20), st.lists(st.text(max_size=10), max_size=5))
@pytest.mark.unit
def test_fuzz_anything(text: str, pattern: str, files) -> None:
    for call in (
        lambda: parse_loader_conf(text),
        lambda: set_default(text, pattern or None),
        lambda: match_default(pattern, files),
    ):
        with contextlib.suppress(LoaderConfError):
            call()
