"""os-release: real files, a POSIX shell as the oracle (os-release is meant to be sourceable)."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import OsReleaseError
from ostreewatch.parse.osrelease import parse_os_release
from tests.fixtures.oracles import fuzz_settings

RHCOS = """NAME="Red Hat Enterprise Linux CoreOS"
VERSION="410.84.202203081640-0"
ID="rhcos"
ID_LIKE="rhel fedora"
VERSION_ID="4.10"
PLATFORM_ID="platform:el8"
PRETTY_NAME="Red Hat Enterprise Linux CoreOS 410.84.202203081640-0 (Ootpa)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:redhat:enterprise_linux:8::coreos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://docs.openshift.com/container-platform/4.10/"
BUG_REPORT_URL="https://bugzilla.redhat.com/"
REDHAT_BUGZILLA_PRODUCT="OpenShift Container Platform"
REDHAT_BUGZILLA_PRODUCT_VERSION="4.10"
REDHAT_SUPPORT_PRODUCT="OpenShift Container Platform"
REDHAT_SUPPORT_PRODUCT_VERSION="4.10"
OPENSHIFT_VERSION="4.10"
RHEL_VERSION="8.4"
OSTREE_VERSION='410.84.202203081640-0'
"""


@pytest.mark.unit
def test_rhcos() -> None:
    d = parse_os_release(RHCOS)
    assert d["PRETTY_NAME"] == "Red Hat Enterprise Linux CoreOS 410.84.202203081640-0 (Ootpa)"
    assert d["OSTREE_VERSION"] == "410.84.202203081640-0"
    assert d["ID_LIKE"] == "rhel fedora"
    assert len(d) == 19


@pytest.mark.parametrize(
    "text,expected",
    [
        ("", {}),
        ("# c\n\n  \nA=1\n", {"A": "1"}),
        ('A="x \\"y\\" \\$z \\`w\\` \\\\ \\n"\n', {"A": 'x "y" $z `w` \\ \\n'}),
        ("A='a \\ b \"c\"'\n", {"A": 'a \\ b "c"'}),
        ("A=plain\\ value  \n", {"A": "plain value"}),
        ('A="multi\nline"\nB=2\n', {"A": "multi\nline", "B": "2"}),
        ("A=\"con\"'cat'ed\n", {"A": "concated"}),
        ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
        ("A=1\nA=2\n", {"A": "2"}),
        ("no equals here\nB=2\n", {"B": "2"}),  # ignored, as systemd does
        ("1BAD=x\nB-C=y\nOK_1=z\n", {"OK_1": "z"}),  # invalid names ignored
        ("  A = spaced\n", {"A": "spaced"}),
        ("A=\n", {"A": ""}),
        ("A=x # not a comment\n", {"A": "x # not a comment"}),
        ('A=con"cat"\n', {"A": 'con"cat"'}),  # a quote inside an unquoted part is literal
        ('A="a" "b" c\n', {"A": "abc"}),  # blanks between parts are skipped
        ("A=x\\ \nB=y  \n", {"A": "x ", "B": "y"}),  # an escaped trailing blank stays
        ("A=a\\\nb\n", {"A": "ab"}),  # backslash-newline continues the line
        ("; c\n# c \\\nA=1\n", {"A": "1"}),  # systemd >= 254: a comment ends at its newline
        ("A=1\rB=2", {"A": "1", "B": "2"}),
        ('A="unterminated\n', {"A": "unterminated\n"}),  # runs to the end, as systemd
        ("A='x", {"A": "x"}),
        ("A", {}),
    ],
)
@pytest.mark.unit
def test_examples(text: str, expected) -> None:
    assert parse_os_release(text) == expected


@pytest.mark.parametrize("text", ["A=a\0b\n", b"A=1"])
@pytest.mark.unit
def test_errors(text: str) -> None:
    with pytest.raises(OsReleaseError):
        parse_os_release(text)


def test_real_files() -> None:
    files = [
        f
        for f in ("/usr/lib/os-release", "/etc/os-release", "/var/cache/ostreewatch/bookworm-root/usr/lib/os-release")
        if os.path.exists(f)
    ]
    assert files
    for path in files:
        with open(path, encoding="utf-8") as f:
            d = parse_os_release(f.read())
        assert d["ID"] and d["PRETTY_NAME"]
        assert d == _shell_values(path, sorted(d))


def test_os_release_of_ostree_deployments(sysroot_3) -> None:
    status = sysroot_3.admin_status()
    for dep in status:
        with open(os.path.join(sysroot_3.deploy_dir(dep), "usr/lib/os-release"), encoding="utf-8") as f:
            d = parse_os_release(f.read())
        assert d["VERSION"] == d["OSTREE_VERSION"] == dep.version


def _shell_values(path: str, keys) -> dict:
    """Source the file in sh and print each KEY's value (NUL-separated)."""
    script = '. "$1"; shift; for k in "$@"; do eval "printf \'%s\\0\' \\"\\${$k}\\""; done'
    out = subprocess.run(
        ["env", "-i", "sh", "-c", script, "sh", path, *keys], capture_output=True, check=True, timeout=30
    ).stdout
    values = out.split(b"\0")[:-1]
    return dict(zip(keys, (v.decode("utf-8") for v in values)))


_CHUNKS = ["a", "B c", "é", "#", "=", "x y", "-", ".", "(1)", "/"]
_ESCAPABLE = ['\\"', "\\\\", "\\$", "\\`"]


def _random_value(rng: random.Random) -> str:
    kind = rng.choice(["plain", "double", "single", "mixed"])
    body = "".join(rng.choice(_CHUNKS) for _ in range(rng.randint(0, 4)))
    if kind == "plain":
        return body.replace(" ", "\\ ").replace("#", "x").replace("(", "").replace(")", "")
    if kind == "double":
        return '"' + body + "".join(rng.choice(_ESCAPABLE) for _ in range(rng.randint(0, 3))) + '"'
    if kind == "single":
        return "'" + body + "\\" + "'"
    return '"' + body + "'" + '"' + "'" + body + '"' + "'"


@pytest.mark.parametrize("seed", range(3))
def test_like_sh(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    keys = []
    for i in range(30):
        key = f"K{i}"
        keys.append(key)
        lines.append(rng.choice(["", "  ", "# comment\n"]) + f"{key}={_random_value(rng)}")
    path = tmp_path / "os-release"
    text = "\n".join(lines) + "\n"
    path.write_text(text, encoding="utf-8")
    assert parse_os_release(text) == _shell_values(str(path), keys)


@fuzz_settings(max_examples=300)
@given(st.text(max_size=300))
@pytest.mark.unit
def test_fuzz(text: str) -> None:
    try:
        d = parse_os_release(text)
    except OsReleaseError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in d.items())


@fuzz_settings(max_examples=200)
@given(st.lists(st.sampled_from(['A="', "B='", "C=x", "\\", "\n", "#", '"', "'", " ", "D=\\\n"]), max_size=12))
@pytest.mark.unit
def test_fuzz_pieces(pieces) -> None:
    with contextlib.suppress(OsReleaseError):
        parse_os_release("".join(pieces))
