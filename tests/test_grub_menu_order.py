"""GRUB's menu order of BLS entries, upstream 2.14 vs Fedora's, and which one a host gets (issue 19 class 4).

Upstream GRUB 2.14 (grub-core/commands/blsuki.c, blsuki_add_entry): each entry is
inserted before the first one it compares greater than with gnulib's filevercmp
(grub-core/lib/gnulib/filevercmp.c) on the whole file name, `.conf` included;
`version` and `sort-key` are never read for the order; the menu id is the file name
less `.conf`, boot-counting suffix included. Checked against grub-emu 2.14 by
tests/test_grub_differential.py.

Fedora (rhboot/grub2 grub-core/commands/blscfg.c): read_entry keeps the file name
less `.conf`; bls_add_entry inserts before the first entry e for which
bls_cmp(entry, e) == 1, and drops an entry for which it is 0; bls_cmp is split_cmp:
split_package_string cuts NAME-VERSION-RELEASE at the last two `-` (a missing part
bubbles up), then vercmp (rpm's algorithm) on name, version, release in that order.
No Fedora GRUB runs here: these tests follow that source, case by case.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ostreewatch.parse import grubcfg
from ostreewatch.parse.bls import parse_entry, sort_entries_grub
from ostreewatch.state import read_snapshot
from tests.fixtures import grub_configs as cfgs
from tests.fixtures.sysroots import OstreeSysroot


def _fedora(names: list[str]) -> list[str]:
    return [e.file for e in sort_entries_grub(parse_entry(n, b"title t\nlinux /v\n") for n in names)]


# --- upstream GRUB 2.14: filevercmp on the file name -----------------------------------------------


@pytest.mark.parametrize(
    "a,b,sign",
    [
        ("ostree-10.conf", "ostree-9.conf", 1),  # digits compare as numbers
        ("ostree-2+3.conf", "ostree-2.conf", 1),  # the counting suffix counts: `+` sorts after the end
        ("ostree-2-fedora.conf", "ostree-2.conf", 1),
        ("a.conf", "a.conf", 0),
        ("a~rc.conf", "a.conf", -1),  # `~` before anything, the end included
        (".hidden.conf", "a.conf", -1),  # a leading dot sorts first
        ("ostree-01.conf", "ostree-1.conf", 0),  # leading zeros skipped
        ("a.tar.conf", "a.conf", 1),  # the suffix (.tar.conf) is cut, then compared again
    ],
)
def test_filevercmp(a: str, b: str, sign: int) -> None:
    r = grubcfg.filevercmp(a, b)
    assert (r > 0) - (r < 0) == sign
    r = grubcfg.filevercmp(b, a)
    assert (r > 0) - (r < 0) == -sign


def test_blsuki_order_is_by_file_name_highest_first() -> None:
    names = ["ostree-1.conf", "ostree-10.conf", "ostree-2+3.conf", "ostree-9-fedora.conf", "ostree-2+0-1.conf"]
    assert grubcfg.blsuki_order(names) == [
        "ostree-10.conf",
        "ostree-9-fedora.conf",
        "ostree-2+3.conf",
        "ostree-2+0-1.conf",
        "ostree-1.conf",
    ]


# --- Fedora rhboot/grub2 blscfg: split_cmp on NAME-VERSION-RELEASE -----------------------------------


def test_fedora_new_ostree_names() -> None:
    # "ostree-10": release "10", no second '-': version takes the release (bubble up), name "ostree".
    assert _fedora(["ostree-9.conf", "ostree-10.conf", "ostree-2.conf"]) == [
        "ostree-10.conf",
        "ostree-9.conf",
        "ostree-2.conf",
    ]


def test_fedora_boot_counting_names() -> None:
    # "ostree-2+1-2": release "2", version "2+1", name "ostree"; vercmp skips '+' as a separator.
    assert _fedora(["ostree-9+1-2.conf", "ostree-10+3.conf", "ostree-2+0-3.conf"]) == [
        "ostree-10+3.conf",
        "ostree-9+1-2.conf",
        "ostree-2+0-3.conf",
    ]


def test_fedora_old_names_with_a_dash_in_the_os_name() -> None:
    # "ostree-2-fedora-coreos": release "coreos", version "fedora", name "ostree-2": the serial is in the name.
    assert _fedora(["ostree-1-fedora-coreos.conf", "ostree-10-fedora-coreos.conf", "ostree-2-fedora-coreos.conf"]) == [
        "ostree-10-fedora-coreos.conf",
        "ostree-2-fedora-coreos.conf",
        "ostree-1-fedora-coreos.conf",
    ]


def test_fedora_and_upstream_differ_on_mixed_names() -> None:
    # vercmp("ostree", "ostree-2"): equal segments, then only the second has characters left: it is newer.
    names = ["ostree-3.conf", "ostree-2-fedora-coreos.conf", "ostree-1-fedora-coreos.conf"]
    assert _fedora(names) == ["ostree-2-fedora-coreos.conf", "ostree-1-fedora-coreos.conf", "ostree-3.conf"]
    assert grubcfg.blsuki_order(names) == names


def test_neither_reads_version_or_sort_key() -> None:
    entries = [
        parse_entry("ostree-1.conf", b"title a\nversion 9\nsort-key a\nlinux /v\n"),
        parse_entry("ostree-2.conf", b"title b\nversion 1\nsort-key z\nlinux /v\n"),
    ]
    assert [e.file for e in sort_entries_grub(entries)] == ["ostree-2.conf", "ostree-1.conf"]
    assert grubcfg.blsuki_order([e.file for e in entries]) == ["ostree-2.conf", "ostree-1.conf"]


# --- which order a host gets ---------------------------------------------------------------------

MIXED = {"ostree-3-fedora.conf": "ostree-3.conf", "ostree-2-fedora.conf": "ostree-2-fedora-coreos.conf"}
MIXED["ostree-1-fedora.conf"] = "ostree-1-fedora-coreos.conf"


@pytest.mark.parametrize(
    "directory,module,first",
    [
        ("boot/grub2", "", "ostree-2-fedora-coreos"),  # Fedora's layout: rhboot's blscfg
        ("boot/grub", "", "ostree-3"),  # upstream's layout: blsuki
        ("boot/grub2", "x86_64-efi/blsuki.mod", "ostree-3"),  # the module decides over the layout
        ("boot/grub", "i386-pc/blscfg.mod", "ostree-2-fedora-coreos"),
    ],
)
def test_the_host_decides_the_flavour(sysroot_3: OstreeSysroot, directory: str, module: str, first: str) -> None:
    entries = Path(sysroot_3.entries_dir())
    for old, new in MIXED.items():
        (entries / old).rename(entries / new)
    sysroot_3.write_grub(cfgs.bootupd_static(), directory)
    if module:
        path = Path(sysroot_3.path) / directory / module
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    snap = read_snapshot(sysroot_3.paths())
    assert (snap.DefaultEntry, snap.DefaultEntrySource) == (first, "first-entry")
    assert snap.BootEntries[0].id == first
    assert os.path.isdir(entries)
