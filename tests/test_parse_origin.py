"""Origin files: GLib's GKeyFile as the oracle, and origins written by the real ostree."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import OriginError
from ostreewatch.parse.origin import Origin, get_string, parse_keyfile, parse_origin
from tests.fixtures.oracles import fuzz_settings, glib_keyfile_batch


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[origin]\nrefspec=fedora:fedora/x86_64/coreos/stable\n", Origin("fedora:fedora/x86_64/coreos/stable")),
        ("[origin]\nbaserefspec=fedora/39/x86_64/silverblue\npackages=vim;\n", Origin("fedora/39/x86_64/silverblue")),
        (
            "[origin]\ncontainer-image-reference=ostree-unverified-registry:quay.io/fedora/fedora-coreos:stable\n",
            Origin("ostree-unverified-registry:quay.io/fedora/fedora-coreos:stable"),
        ),
        ("[origin]\nrefspec=r\n\n[libostree-transient]\npinned=true\n", Origin("r", pinned=True)),
        ("[origin]\nrefspec=r\n[libostree-transient]\npinned=false\n", Origin("r", pinned=False)),
        ("[origin]\nrefspec=r\n[libostree-transient]\npinned=1\n", Origin("r", pinned=True)),
        ("[origin]\nrefspec=r\nunlocked=hotfix\n", Origin("r", unlocked="hotfix")),
        ("[origin]\nrefspec=r\nunlocked=none\n", Origin("r")),
        ("# comment\r\n  [origin]  \r\n  refspec = a\\sb\\\\c  \r\n", Origin("a b\\c  ")),
        ("[origin]\nrefspec=old\nrefspec=new\n", Origin("new")),
        ("[origin]\nrefspec[de]=localized\nrefspec=plain\n", Origin("plain")),
        ("[other]\nx=1\n", Origin()),
        ("", Origin()),
    ],
)
@pytest.mark.unit
def test_examples(text: str, expected: Origin) -> None:
    assert parse_origin(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "refspec=x\n",  # key outside a group
        "[origin\nrefspec=x\n",  # broken header
        "[origin]\nno equals sign\n",
        "[origin]\n=value\n",
        "[origin]\nrefspec=a\\qb\n",  # bad escape in a key we read
        "[origin]\nrefspec=r\n[libostree-transient]\npinned=maybe\n",
        "[origin]\nrefspec=a\0b\n",
    ],
)
@pytest.mark.unit
def test_errors(text: str) -> None:
    with pytest.raises(OriginError):
        parse_origin(text)


@pytest.mark.unit
def test_bad_escape_elsewhere_is_ignored() -> None:
    # GLib only fails when the broken key is read.
    assert parse_origin("[origin]\nrefspec=r\nother=\\q\n") == Origin("r")


_PIECES = [
    "[origin]",
    "[libostree-transient]",
    "refspec=fedora:x",
    "refspec = a b ",
    "pinned=true",
    "  key=v\\s\\n",
    "#c",
    "",
    "x",
    "[a b]",
    "[]",
    "k[de]=v",
    "=v",
    "k=\\q",
    "k=a\\",
    "[g]x",
    "\t[g]",
    "k==v",
    "a b=c",
    "[x]\r",
    " k\t=\tv",
    "k=v\r",
    "[é]",
    "k=\\t\\r\\\\",
    "unlocked=development",
]


def _ours(text: str):
    groups = parse_keyfile(text)
    out = {}
    for g, keys in groups.items():
        out[g] = {}
        for k in keys:
            try:
                out[g][k] = get_string(groups, g, k)
            except OriginError:
                out[g][k] = "ERROR"
    return out


def test_like_glib_keyfile() -> None:
    rng = random.Random(1)
    texts = ["\n".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 6))) for _ in range(800)]
    answers = glib_keyfile_batch(texts)
    loaded = 0
    for text, answer in zip(texts, answers):
        if "error" in answer:
            with pytest.raises(OriginError):
                parse_keyfile(text)
            continue
        loaded += 1
        expected = {
            g: {k: ("ERROR" if isinstance(v, dict) else v) for k, v in keys.items()}
            for g, keys in answer["groups"].items()
        }
        assert _ours(text) == expected, repr(text)
    assert loaded > 100


def test_origins_written_by_ostree(sysroot_3) -> None:
    sysroot_3.pin(1)
    status = sysroot_3.admin_status()
    for dep in status:
        with open(sysroot_3.deploy_dir(dep) + ".origin", encoding="utf-8") as f:
            origin = parse_origin(f.read())
        assert origin.pinned == dep.pinned
        assert origin.refspec == "fedora/x"
        assert origin.unlocked == ""
    assert [d.pinned for d in status] == [False, True, False]


@fuzz_settings(max_examples=300)
@given(st.text(max_size=300))
@pytest.mark.unit
def test_fuzz_text(text: str) -> None:
    with contextlib.suppress(OriginError):
        parse_origin(text)


@fuzz_settings(max_examples=200)
@given(st.lists(st.sampled_from(_PIECES), max_size=8))
@pytest.mark.unit
def test_fuzz_pieces(pieces) -> None:
    try:
        o = parse_origin("\n".join(pieces))
    except OriginError:
        return
    assert isinstance(o.refspec, str) and isinstance(o.pinned, bool)
