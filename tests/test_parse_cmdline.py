"""Kernel command line: systemd's own splitting (systemd-run-generator) as the oracle."""

from __future__ import annotations

import os
import random
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import CmdlineError
from ostreewatch.parse.cmdline import get_arg, split_cmdline
from tests.fixtures.oracles import fuzz_settings

RHCOS = (
    "BOOT_IMAGE=(hd0,gpt3)/ostree/rhcos-838cd9a1/vmlinuz-4.18.0-305.40.1.el8_4.x86_64 random.trust_cpu=on "
    "console=tty0 console=ttyS0,115200n8 ignition.platform.id=metal "
    "ostree=/ostree/boot.0/rhcos/838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/0 "
    "ip=enp1s0:dhcp root=UUID=0a0d4701-04bf-45a2-8b9b-f761542a617a rw rootflags=prjquota\n"
)


@pytest.mark.unit
def test_rhcos() -> None:
    words = split_cmdline(RHCOS)
    assert words[0].startswith("BOOT_IMAGE=")
    assert words[-1] == "rootflags=prjquota"
    assert (
        get_arg(RHCOS, "ostree")
        == "/ostree/boot.0/rhcos/838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/0"
    )
    assert get_arg(RHCOS, "console") == "ttyS0,115200n8"  # the last one wins
    assert get_arg(RHCOS, "rw") == ""
    assert get_arg(RHCOS, "ro") is None
    assert get_arg(RHCOS, "root") == "UUID=0a0d4701-04bf-45a2-8b9b-f761542a617a"


@pytest.mark.parametrize(
    "text,words",
    [
        ("", []),
        ("   \t\n", []),
        ("a  b\tc\nd", ["a", "b", "c", "d"]),
        ('a="b c" d', ["a=b c", "d"]),
        ("x='y z'w", ["x=y zw"]),
        ("\"a\"'b'c", ["abc"]),
        ('""', [""]),
        ('a "b', ["a", "b"]),  # an unclosed quote runs to the end
        (r"a\ b", ["a\\", "b"]),  # backslashes are kept and do not escape
        ('"it\'s"', ["it's"]),
    ],
)
@pytest.mark.unit
def test_split(text: str, words) -> None:
    assert split_cmdline(text) == words


@pytest.mark.unit
def test_ostree_reads_the_first_and_ignores_quotes() -> None:
    text = "ostree=/ostree/boot.1/a/b/0 ostree=/ostree/boot.0/c/d/0 x=1 x=2"
    assert get_arg(text, "ostree") == "/ostree/boot.1/a/b/0"
    assert get_arg(text, "x") == "2"
    # ostree-prepare-root splits on spaces only and keeps quotes.
    assert get_arg('ostree="/a b"', "ostree") == '"/a'
    assert get_arg('ostree="/a b"', "ostree", ostree_style=False) == "/a b"
    assert get_arg("x=1 x=2", "x", ostree_style=True) == "1"
    assert get_arg("quiet\n", "ostree") is None
    assert get_arg("ostree=/x\n", "ostree") == "/x"


@pytest.mark.parametrize("key", ["", "a=b", None])
@pytest.mark.unit
def test_bad_key(key) -> None:
    with pytest.raises(CmdlineError):
        get_arg("a=b", key)


@pytest.mark.unit
def test_nul_is_an_error() -> None:
    with pytest.raises(CmdlineError):
        split_cmdline("a\0b")


def _systemd_run_values(cmdline: str, tmp_path) -> list:
    """The values systemd (systemd-run-generator) sees for each systemd.run= word."""
    out = tmp_path / "gen"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    out.mkdir()
    env = dict(os.environ, SYSTEMD_PROC_CMDLINE=cmdline)
    subprocess.run(
        ["/lib/systemd/system-generators/systemd-run-generator", str(out), str(out), str(out)],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )
    unit = out / "kernel-command-line.service"
    if not unit.exists():
        return []
    return [line[len("ExecStart=") :] for line in unit.read_text().splitlines() if line.startswith("ExecStart=")]


_FRAGMENTS = ["a", "b c", '"', "'", "\\", "=", "x=1", " ", "\t", "systemd.run=", " systemd.run=", "é", "-", "ok"]


@pytest.mark.parametrize("seed", range(3))
def test_split_like_systemd(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    compared = 0
    for _ in range(40):
        text = "systemd.run=" + "".join(rng.choice(_FRAGMENTS) for _ in range(rng.randint(1, 12)))
        theirs = _systemd_run_values(text, tmp_path)
        ours = [w[len("systemd.run=") :] for w in split_cmdline(text) if w.startswith("systemd.run=")]
        assert ours == theirs, repr(text)
        compared += len(theirs)
    assert compared > 20


@fuzz_settings(max_examples=300)
@given(st.text(max_size=200), st.sampled_from(["ostree", "root", "x", "rw"]))
@pytest.mark.unit
def test_fuzz(text: str, key: str) -> None:
    try:
        words = split_cmdline(text)
        assert all(isinstance(w, str) for w in words)
        get_arg(text, key)
    except CmdlineError:
        assert "\0" in text
