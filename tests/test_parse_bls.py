"""BLS entries: parsing every key, boot counting, systemd-boot order; bootctl 252 as the oracle."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import BlsError
from ostreewatch.parse.bls import (
    BlsEntry,
    parse_entry,
    sort_entries,
    sort_entries_grub,
    split_boot_counting,
    valid_entry_file_name,
)
from ostreewatch.parse.loaderconf import match_default
from tests.fixtures.oracles import bootctl_list, fuzz_settings, write_esp

RHCOS_1 = b"""title Red Hat Enterprise Linux CoreOS 49.84.202110081407-0 (Ootpa) (ostree:1)
version 1
options random.trust_cpu=on console=tty0 console=ttyS0,115200n8 ignition.platform.id=metal $ignition_firstboot ostree=/ostree/boot.0/rhcos/a10b07df1aa66c008cd3b9acb17d765f0755702cadfa0090155dced4d2e9bfe0/0 ip=enp1s0:dhcp root=UUID=0a0d4701-04bf-45a2-8b9b-f761542a617a rw rootflags=prjquota
linux /ostree/rhcos-a10b07df1aa66c008cd3b9acb17d765f0755702cadfa0090155dced4d2e9bfe0/vmlinuz-4.18.0-305.19.1.el8_4.x86_64
initrd /ostree/rhcos-a10b07df1aa66c008cd3b9acb17d765f0755702cadfa0090155dced4d2e9bfe0/initramfs-4.18.0-305.19.1.el8_4.x86_64.img
"""
RHCOS_2 = b"""title Red Hat Enterprise Linux CoreOS 410.84.202203081640-0 (Ootpa) (ostree:0)
version 2
options random.trust_cpu=on console=tty0 console=ttyS0,115200n8 ignition.platform.id=metal $ignition_firstboot ostree=/ostree/boot.0/rhcos/838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/0 ip=enp1s0:dhcp root=UUID=0a0d4701-04bf-45a2-8b9b-f761542a617a rw rootflags=prjquota
linux /ostree/rhcos-838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/vmlinuz-4.18.0-305.40.1.el8_4.x86_64
initrd /ostree/rhcos-838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/initramfs-4.18.0-305.40.1.el8_4.x86_64.img
"""

FULL = (
    b"# a comment\r\n"
    b"\r\n"
    b"  title  Fedora Linux 38 (Workstation)  \r\n"
    b"version\t6.1.0-1.fc38\n"
    b"machine-id 6a9857a393724b7a981ebb5b8495b9ea\n"
    b"sort-key fedora\n"
    b"linux /6a98/6.1.0/linux\n"
    b"initrd /6a98/6.1.0/microcode\n"
    b"options root=UUID=1 ro\n"
    b"initrd /6a98/6.1.0/initrd\n"
    b"options quiet   splash\n"
    b"   # indented comment\n"
    b"devicetree /dt/board.dtb\n"
    b"devicetree-overlay /o1 /o2\n"
    b"devicetree-overlay /o3\n"
    b"architecture x64\n"
    b"efi /EFI/fedora/x.efi\n"
    b"grub_users $grub_users\n"
    b"grub_class fedora\n"
    b"keyonly\n"
)


@pytest.mark.unit
def test_every_key() -> None:
    e = parse_entry("6a98-6.1.0+3-1.conf", FULL)
    assert e == BlsEntry(
        id="6a98-6.1.0",
        file="6a98-6.1.0+3-1.conf",
        title="Fedora Linux 38 (Workstation)",
        version="6.1.0-1.fc38",
        sort_key="fedora",
        machine_id="6a9857a393724b7a981ebb5b8495b9ea",
        linux="/6a98/6.1.0/linux",
        efi="/EFI/fedora/x.efi",
        initrd=("/6a98/6.1.0/microcode", "/6a98/6.1.0/initrd"),
        options="root=UUID=1 ro quiet   splash",
        first_options="root=UUID=1 ro",
        devicetree="/dt/board.dtb",
        devicetree_overlay="/o1 /o2 /o3",
        architecture="x64",
        tries_left=3,
        tries_done=1,
        extra=(("grub_users", "$grub_users"), ("grub_class", "fedora")),
    )


@pytest.mark.unit
def test_rhcos_sample() -> None:
    e = parse_entry("ostree-2-rhcos.conf", RHCOS_2)
    assert e.id == "ostree-2-rhcos"
    assert e.version == "2"
    assert e.title.endswith("(ostree:0)")
    assert "ostree=/ostree/boot.0/rhcos/838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/0" in e.options
    assert e.initrd == (
        "/ostree/rhcos-838cd9a10892dbd5e32ffdbec249a4c0db18f6d1c56f416f7a59a2f806f55941/initramfs-4.18.0-305.40.1.el8_4.x86_64.img",
    )
    assert e.tries_left is None and e.tries_done is None


@pytest.mark.unit
def test_repeated_single_key_last_wins() -> None:
    assert parse_entry("a.conf", b"title one\ntitle two\n").title == "two"


@pytest.mark.unit
def test_empty_and_comment_only() -> None:
    e = parse_entry("a.conf", b"")
    assert e.id == "a" and e.title == "" and e.initrd == () and e.options == ""
    assert parse_entry("a.conf", b"#title x\n\n   \n").title == ""


@pytest.mark.unit
def test_bom_and_tabs() -> None:
    e = parse_entry("a.conf", "\ufefftitle\tX\t\n".encode())
    assert e.title == "X"


@pytest.mark.parametrize("data", [b"title \xff\xfe\n", b"title ok\noptions \xc3\x28\n", b"title a\0b\n"])
@pytest.mark.unit
def test_invalid_bytes(data: bytes) -> None:
    with pytest.raises(BlsError):
        parse_entry("bad.conf", data)


@pytest.mark.parametrize("name", ["", "a/b.conf", "x\0.conf"])
@pytest.mark.unit
def test_invalid_name(name: str) -> None:
    with pytest.raises(BlsError):
        parse_entry(name, b"title t\n")


@pytest.mark.parametrize(
    "name,expected",
    [
        ("ostree-1.conf", ("ostree-1", None, None)),
        ("ostree-1+3.conf", ("ostree-1", 3, None)),
        ("ostree-1+0-5.conf", ("ostree-1", 0, 5)),
        ("a+b+2-1.conf", ("a+b", 2, 1)),
        ("a+.conf", ("a+", None, None)),
        ("a+1-.conf", ("a+1-", None, None)),
        ("a+-1.conf", ("a+-1", None, None)),
        ("+3.conf", ("+3", None, None)),
        ("a+99999999999.conf", ("a+99999999999", None, None)),
        ("noconf+2", ("noconf", 2, None)),
    ],
)
@pytest.mark.unit
def test_split_boot_counting(name: str, expected) -> None:
    assert split_boot_counting(name) == expected


@fuzz_settings(max_examples=300)
@given(st.text(alphabet="ab+-0123456789.conf", max_size=20))
@pytest.mark.unit
def test_split_boot_counting_property(name: str) -> None:
    ident, left, done = split_boot_counting(name)
    stem = name[:-5] if name.endswith(".conf") else name
    if left is None:
        assert ident == stem and done is None
    else:
        suffix = stem[len(ident) :]
        assert suffix.startswith("+") and ident
        counters = suffix[1:].split("-")
        assert int(counters[0]) == left
        assert (int(counters[1]) if len(counters) == 2 else None) == done


@pytest.mark.unit
def test_split_boot_counting_rejects_non_text() -> None:
    with pytest.raises(BlsError):
        split_boot_counting(None)  # type: ignore[arg-type]


@pytest.mark.unit
def test_valid_entry_file_name() -> None:
    assert valid_entry_file_name("ostree-1-fedora.conf")
    assert valid_entry_file_name("a_b.c+3-1.conf")
    for bad in ("a~1.conf", "a b.conf", "ä.conf", "a.txt", "a:b.conf"):
        assert not valid_entry_file_name(bad)


# --- order and default against bootctl 252 --------------------------------------------

HAND_WRITTEN: dict[str, bytes] = {
    "fedora-6.1.conf": b"title Fedora 6.1\nsort-key fedora\nmachine-id aaaa\nversion 6.1\nlinux /v\n",
    "fedora-6.1-rc.conf": b"title Fedora rc\nsort-key fedora\nmachine-id aaaa\nversion 6.1~rc1\nlinux /v\n",
    "fedora-6.10.conf": b"title Fedora 6.10\nsort-key fedora\nmachine-id aaaa\nversion 6.10\nlinux /v\n",
    "fedora-other-mid.conf": b"title other\nsort-key fedora\nmachine-id 0000\nversion 1\nlinux /v\n",
    "fedora-nomid.conf": b"title nomid\nsort-key fedora\nversion 9\nlinux /v\n",
    "arch.conf": b"title arch\nsort-key arch\nversion 1.10~rc1\nlinux /v\n",
    "arch-1.10.conf": b"title arch 1.10\nsort-key arch\nversion 1.10\nlinux /v\n",
    "ostree-2.conf": b"title o2\nversion 2\nlinux /v\n",
    "ostree-9.conf": b"title o9\nversion 9\nlinux /v\n",
    "ostree-10.conf": b"title o10\nversion 10\nlinux /v\n",
    "ostree-11+0-3.conf": b"title o11 failed\nversion 11\nlinux /v\n",
    "ostree-3+2.conf": b"title o3 counting\nversion 3\nlinux /v\n",
    "Ostree-4.conf": b"title O4\nlinux /v\n",
    "zz-efi.conf": b"title efi only\nefi /EFI/x.efi\n",
    "a.conf": b"title a\nlinux /v\n",
    "a-1.conf": b"title a-1\nlinux /v\n",
}


def _ours(entries: dict[str, bytes]) -> list[BlsEntry]:
    return sort_entries(parse_entry(name, data) for name, data in entries.items())


def _bootctl_files(listed) -> list[str]:
    return [e["path"].rsplit("/", 1)[1] for e in listed]


@pytest.mark.parametrize(
    "loader_conf,pattern",
    [
        (None, None),
        ("timeout 3\ndefault ostree-*\n", "ostree-*"),
        ("default OSTREE-9*\n", "OSTREE-9*"),
        ("# c\ndefault fedora-6.1?.conf\n", "fedora-6.1?.conf"),
        ("default ostree-3.conf\n", "ostree-3.conf"),  # the id has no counting suffix
        ("default [a]*\n", "[a]*"),
        ("default nomatch*\n", "nomatch*"),
    ],
)
def test_order_and_default_like_bootctl(tmp_path, loader_conf, pattern) -> None:
    write_esp(str(tmp_path), HAND_WRITTEN, loader_conf)
    listed, default_id = bootctl_list(str(tmp_path))
    ours = _ours(HAND_WRITTEN)
    assert [e.file for e in ours] == _bootctl_files(listed)
    assert [e.id + ".conf" for e in ours] == [e["id"] for e in listed]
    files = [e.file for e in ours]
    chosen = match_default(pattern, files) if pattern else None
    if chosen is None:
        chosen = files[0]  # no match: the first entry
    assert split_boot_counting(chosen)[0] + ".conf" == default_id


def test_rhcos_like_bootctl(tmp_path) -> None:
    entries = {"ostree-1-rhcos.conf": RHCOS_1, "ostree-2-rhcos.conf": RHCOS_2}
    write_esp(str(tmp_path), entries)
    listed, default_id = bootctl_list(str(tmp_path))
    ours = _ours(entries)
    assert [e.file for e in ours] == _bootctl_files(listed) == ["ostree-2-rhcos.conf", "ostree-1-rhcos.conf"]
    assert default_id == "ostree-2-rhcos.conf"
    for mine, theirs in zip(ours, listed):
        assert mine.options == theirs["options"]
        assert list(mine.initrd) == theirs["initrd"]
        assert mine.linux == theirs["linux"]
        assert mine.title == theirs["title"]
        assert mine.version == theirs["version"]


def test_fields_like_bootctl(tmp_path) -> None:
    write_esp(str(tmp_path), {"6a98-6.1.0+3-1.conf": FULL})
    (theirs,), _ = bootctl_list(str(tmp_path))
    mine = parse_entry("6a98-6.1.0+3-1.conf", FULL)
    assert theirs["title"] == mine.title
    assert theirs["version"] == mine.version
    assert theirs["sortKey"] == mine.sort_key
    assert theirs["machineId"] == mine.machine_id
    assert theirs["linux"] == mine.linux
    assert theirs["efi"] == mine.efi
    assert theirs["initrd"] == list(mine.initrd)
    assert theirs["options"] == mine.options
    assert theirs["devicetree"] == mine.devicetree
    assert theirs["devicetreeOverlay"] == mine.devicetree_overlay.split()
    assert theirs["architecture"] == mine.architecture
    assert (theirs["triesLeft"], theirs["triesDone"]) == (mine.tries_left, mine.tries_done)


def _random_entries(rng: random.Random, n: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    while len(out) < n:
        stem = rng.choice(["ostree", "fedora", "Fedora", "a", "x-1.2", "deb_12"]) + rng.choice(
            ["", "-1", "-2", "-10", ".5", "-1.10", "-9-rhcos"]
        )
        counting = rng.choice(["", "", "+0", "+1", "+3-1", "+0-2"])
        name = stem + counting + ".conf"
        if any(n.startswith(stem + "+") or n == stem + ".conf" for n in out):
            continue  # same id twice: bootctl's tie order is its qsort's, unspecified
        lines = ["title " + name]
        if rng.random() < 0.5:
            lines.append("sort-key " + rng.choice(["fedora", "arch", "Fedora"]))
            if rng.random() < 0.7:
                lines.append("machine-id " + rng.choice(["aa", "bb", "0f"]))
            if rng.random() < 0.8:
                lines.append("version " + rng.choice(["1", "1.10", "1.10~rc1", "1.9", "2^post", "2-1", "10"]))
        lines.append("linux /vmlinuz")
        out[name] = ("\n".join(lines) + "\n").encode()
    return out


@pytest.mark.parametrize("seed", range(4))
def test_random_sets_like_bootctl(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    entries = _random_entries(rng, 14)
    write_esp(str(tmp_path), entries)
    listed, default_id = bootctl_list(str(tmp_path))
    ours = _ours(entries)
    theirs = _bootctl_files(listed)

    # Full ties (same sort-key, machine-id, version and id) are left to qsort: compare the keys.
    def key(f: str):
        e = parse_entry(f, entries[f])
        return (e.tries_left == 0, not e.sort_key, e.sort_key, e.machine_id, e.version if e.sort_key else "", e.id)

    assert [key(e.file) for e in ours] == [key(f) for f in theirs]
    assert default_id == ours[0].id + ".conf"


# --- nothing but BlsError escapes ------------------------------------------------------

_names = st.text(min_size=1, max_size=30) | st.sampled_from(["a.conf", "ostree-1+2-3.conf", "x+.conf"])


@fuzz_settings(max_examples=300)
@given(_names, st.binary(max_size=400))
@pytest.mark.unit
def test_fuzz_random_bytes(name: str, data: bytes) -> None:
    try:
        e = parse_entry(name, data)
    except BlsError:
        return
    assert isinstance(e, BlsEntry)
    sort_entries([e, e])


@fuzz_settings(max_examples=300)
@given(st.data())
@pytest.mark.unit
def test_fuzz_mutated_entries(data) -> None:
    base = bytearray(data.draw(st.sampled_from([FULL, RHCOS_1, RHCOS_2])))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base)))
        op = data.draw(st.sampled_from(["ins", "del", "set"]))
        byte = data.draw(st.integers(0, 255))
        if op == "ins":
            base.insert(pos, byte)
        elif pos < len(base):
            if op == "del":
                del base[pos]
            else:
                base[pos] = byte
    try:
        entries = [parse_entry("m+1.conf", bytes(base)), parse_entry("ostree-2.conf", RHCOS_2)]
    except BlsError:
        return
    assert len(sort_entries(entries)) == 2


def test_ostree_written_entries_like_bootctl(sysroot_3, tmp_path) -> None:
    """Entries the real ostree wrote (ostree-1..3): same order and default as bootctl."""
    sysroot_3.pin(1)
    esp = tmp_path / "esp"
    entries = {}
    for name in sysroot_3.entry_files():
        with open(f"{sysroot_3.entries_dir()}/{name}", "rb") as f:
            entries[name] = f.read()
    assert len(entries) == 3
    write_esp(str(esp), entries)
    listed, default_id = bootctl_list(str(esp))
    ours = _ours(entries)
    assert [e.file for e in ours] == _bootctl_files(listed)
    assert default_id == ours[0].id + ".conf"
    assert ours[0].title.endswith("(ostree:0)")
    for mine, theirs in zip(ours, listed):
        assert mine.options == theirs["options"]
        assert list(mine.initrd) == theirs.get("initrd", [])
        assert mine.version == theirs["version"]


# --- grub2 blscfg order ---------------------------------------------------------------------


@pytest.mark.unit
def test_grub_order_by_nvr_of_file_name() -> None:
    names = [
        "ostree-1-rhcos.conf",
        "ostree-2-rhcos.conf",
        "ostree-10-rhcos.conf",
        "ostree-9.conf",
        "kernel-5.14.0-362.fc38.conf",
        "kernel-5.14.0-70.fc38.conf",
        "kernel-6.1.0-1.fc38.conf",
    ]
    entries = [parse_entry(n, b"title t\nversion 99\nsort-key zzz\nlinux /v\n") for n in names]
    got = [e.file for e in sort_entries_grub(entries)]
    assert got == [
        "ostree-10-rhcos.conf",
        "ostree-9.conf",
        "ostree-2-rhcos.conf",
        "ostree-1-rhcos.conf",
        "kernel-6.1.0-1.fc38.conf",
        "kernel-5.14.0-362.fc38.conf",
        "kernel-5.14.0-70.fc38.conf",
    ]


@pytest.mark.unit
def test_grub_order_of_rhcos_sample() -> None:
    entries = [parse_entry("ostree-1-rhcos.conf", RHCOS_1), parse_entry("ostree-2-rhcos.conf", RHCOS_2)]
    assert [e.file for e in sort_entries_grub(entries)] == ["ostree-2-rhcos.conf", "ostree-1-rhcos.conf"]
    # grub uses only the first options line.
    e = parse_entry("x.conf", b"linux /v\noptions a\noptions b\n")
    assert e.first_options == "a" and e.options == "a b"
