"""mountinfo: every field, escapes, the prefilter; findmnt (libmount) as the oracle."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ostreewatch.errors import MountinfoError
from ostreewatch.parse.mountinfo import MountInfo, mangle, parse_line, parse_mountinfo
from tests.fixtures.oracles import findmnt_file, fuzz_settings

RHCOS = b"""99 102 252:4 / /sysroot ro,relatime - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
102 1 252:4 /ostree/deploy/rhcos/deploy/b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0 / rw,relatime shared:1 - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
103 102 252:4 /ostree/deploy/rhcos/deploy/b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0/etc /etc rw,relatime shared:2 - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
104 102 252:4 /ostree/deploy/rhcos/deploy/b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0/usr /usr ro,relatime shared:3 - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
133 102 252:4 /ostree/deploy/rhcos/var /var rw,relatime shared:4 - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
299 133 252:4 /ostree/deploy/rhcos/var/lib/containers/storage/overlay /var/lib/containers/storage/overlay rw,relatime - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
7886 133 252:4 /ostree/deploy/rhcos/deploy/b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0/etc/modprobe.d /var/lib/kubelet/pods/80389395-c0f4-4342-a2ee-2b8c31dbbdbc/volume-subpaths/etc/tuned/1 rw,relatime shared:2 - xfs /dev/vda4 rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota
"""


@pytest.mark.unit
def test_rhcos_lines() -> None:
    mounts, errors = parse_mountinfo(RHCOS)
    assert errors == ()
    assert len(mounts) == 7
    root = mounts[1]
    assert root == MountInfo(
        mount_id=102,
        parent_id=1,
        major=252,
        minor=4,
        root="/ostree/deploy/rhcos/deploy/b1df1247e3ad53173c1e13a913ec645d48a22f6a294e70e2ca5bda8c31f78d78.0",
        mount_point="/",
        options="rw,relatime",
        optional_fields=("shared:1",),
        fstype="xfs",
        source="/dev/vda4",
        super_options="rw,seclabel,attr2,inode64,logbufs=8,logbsize=32k,prjquota",
    )
    assert mounts[0].optional_fields == ()
    assert mounts[3].options.startswith("ro,")


@pytest.mark.unit
def test_escapes() -> None:
    line = rb"36 35 98:0 /a\040b\011c /mnt/x\012y\134z rw,noatime master:1 shared:7 propagate_from:2 unbindable - ext3 /dev/my\040disk rw,errors=continue"
    m = parse_line(line)
    assert m.root == "/a b\tc"
    assert m.mount_point == "/mnt/x\ny\\z"
    assert m.source == "/dev/my disk"
    assert m.optional_fields == ("master:1", "shared:7", "propagate_from:2", "unbindable")
    assert (m.fstype, m.super_options) == ("ext3", "rw,errors=continue")


@pytest.mark.unit
def test_dash_as_a_path_is_not_the_separator() -> None:
    # A mount point named "-" sits in field 5, before the optional fields.
    m = parse_line(b"1 2 0:1 - - rw - tmpfs - rw")
    assert m.root == "-" and m.mount_point == "-" and m.source == "-" and m.optional_fields == ()


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        b"1 2 0:1 / / rw shared:1 tmpfs none rw",  # no '-'
        b"1 2 0:1 / / rw - tmpfs none",  # too few after '-'
        b"1 2 0:1 / / rw - tmpfs none rw extra",  # too many after '-'
        b"x 2 0:1 / / rw - tmpfs none rw",
        b"1 2 01 / / rw - tmpfs none rw",
        b"1 2 0:1:2 / / rw - tmpfs none rw",
        b"1 2 0:1 /\xff / rw - tmpfs none rw",
        b"99999999999 2 0:1 / / rw - tmpfs none rw",
    ],
)
@pytest.mark.unit
def test_bad_lines(line: bytes) -> None:
    with pytest.raises(MountinfoError):
        parse_line(line)


@pytest.mark.unit
def test_bad_lines_are_collected_not_raised() -> None:
    data = RHCOS + b"garbage line\n" + b"1 2 0:1 / /boot rw - tmpfs none rw\n"
    mounts, errors = parse_mountinfo(data)
    assert len(mounts) == 8 and len(errors) == 1
    assert "line 8" in str(errors[0])


@pytest.mark.unit
def test_prefilter() -> None:
    wanted = ["/", "/sysroot", "/usr", "/etc", "/var", "/boot", "/boot/efi", "/a b"]
    extra = b"5 1 0:5 / /a\\040b rw - tmpfs none rw\n6 1 0:6 / /ab rw - tmpfs none rw\n"
    full, _ = parse_mountinfo(RHCOS + extra)
    filtered, errors = parse_mountinfo(RHCOS + extra, mount_points=wanted)
    assert errors == ()
    assert filtered == tuple(m for m in full if m.mount_point in wanted)
    assert [m.mount_point for m in filtered] == ["/sysroot", "/", "/etc", "/usr", "/var", "/a b"]


@pytest.mark.unit
def test_mangle_roundtrip() -> None:
    assert mangle("/a b\t\n\\") == rb"/a\040b\011\012\134"


# --- findmnt as the oracle ---------------------------------------------------------------

_PATH_CHARS = "ab/ \t\n\\-_.é"


def _random_path(rng: random.Random) -> str:
    return "/" + "".join(rng.choice(_PATH_CHARS) for _ in range(rng.randint(0, 12)))


def _generate(rng: random.Random, n: int) -> bytes:
    lines = []
    for i in range(n):
        opt = " ".join(rng.sample(["shared:1", "master:3", "propagate_from:2", "unbindable"], rng.randint(0, 3)))
        fields = [
            str(20 + i),
            str(rng.randint(1, 20 + i)),
            f"{rng.randint(0, 300)}:{rng.randint(0, 70000)}",
            mangle(_random_path(rng)).decode(),
            mangle(_random_path(rng)).decode(),
            rng.choice(["rw,relatime", "ro,nosuid,nodev", "rw"]),
        ]
        if opt:
            fields.append(opt)
        fields += [
            "-",
            rng.choice(["xfs", "tmpfs", "ext4", "fuse.sshfs"]),
            mangle(rng.choice(["/dev/vda4", "none", "my src", "a\\b", "tmpfs"])).decode(),
            rng.choice(["rw,seclabel", "rw,size=1024k,mode=755", "ro"]),
        ]
        lines.append(" ".join(fields))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("seed", range(3))
def test_like_findmnt(tmp_path, seed: int) -> None:
    data = _generate(random.Random(seed), 60)
    path = tmp_path / "mountinfo"
    path.write_bytes(data)
    theirs = findmnt_file(str(path))
    mine, errors = parse_mountinfo(data)
    assert errors == ()
    assert len(mine) == len(theirs) == 60
    for m, t in zip(mine, theirs):
        assert m.mount_id == t["id"]
        assert m.parent_id == t["parent"]
        assert f"{m.major}:{m.minor}" == t["maj:min"]
        assert m.root == t["fsroot"]
        assert m.mount_point == t["target"]
        assert m.source == t["source"]
        assert m.fstype == t["fstype"]
        assert m.options == t["vfs-options"]
        assert m.super_options == t["fs-options"]
        assert " ".join(m.optional_fields) == (t["opt-fields"] or "")


def test_rhcos_like_findmnt(tmp_path) -> None:
    path = tmp_path / "mountinfo"
    path.write_bytes(RHCOS)
    theirs = findmnt_file(str(path))
    mine, _ = parse_mountinfo(RHCOS)
    assert [(m.mount_point, m.root, " ".join(m.optional_fields)) for m in mine] == [
        (t["target"], t["fsroot"], t["opt-fields"] or "") for t in theirs
    ]


def test_own_mountinfo_like_findmnt(tmp_path) -> None:
    """This process's real mount table, read through a copy so both see the same lines."""
    with open("/proc/self/mountinfo", "rb") as f:
        data = f.read()
    path = tmp_path / "mountinfo"
    path.write_bytes(data)
    mine, errors = parse_mountinfo(data)
    assert errors == ()
    assert [(m.mount_id, m.mount_point) for m in mine] == [(t["id"], t["target"]) for t in findmnt_file(str(path))]


# --- nothing but MountinfoError escapes ------------------------------------------------


@fuzz_settings(max_examples=300)
@given(st.binary(max_size=500), st.none() | st.lists(st.text(max_size=8), max_size=4))
@pytest.mark.unit
def test_fuzz_random_bytes(data: bytes, points) -> None:
    mounts, errors = parse_mountinfo(data, mount_points=points)
    assert all(isinstance(e, MountinfoError) for e in errors)
    assert all(isinstance(m, MountInfo) for m in mounts)


@fuzz_settings(max_examples=300)
@given(st.data())
@pytest.mark.unit
def test_fuzz_mutated(data) -> None:
    base = bytearray(RHCOS)
    for _ in range(data.draw(st.integers(1, 10))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.sampled_from(b" \\-\n:0a\xff"))
    mounts, errors = parse_mountinfo(bytes(base))
    assert len(mounts) + len(errors) >= 1
    filtered, _ = parse_mountinfo(bytes(base), mount_points=["/", "/usr"])
    # The prefilter never returns a mount the full parse does not have.
    assert set(filtered) <= set(mounts)


def _storm(lines: int = 10000) -> bytes:
    """A Kubernetes-like mountinfo: the RHCOS lines plus thousands of pod tmpfs mounts."""
    rng = random.Random(0)
    out = RHCOS.decode().splitlines()
    for i in range(lines - len(out)):
        out.append(
            f"{9000 + i} 133 0:{300 + i} / /var/lib/kubelet/pods/{rng.getrandbits(128):032x}"
            f"/volumes/kubernetes.io~secret/token-{i} rw,relatime shared:{i} - tmpfs tmpfs rw,seclabel,size=4k"
        )
    return ("\n".join(out) + "\n").encode()


@pytest.mark.unit
def test_storm_prefilter_finds_the_same_mounts() -> None:
    data = _storm(3000)
    wanted = ("/", "/sysroot", "/usr", "/etc", "/var", "/boot", "/boot/efi")
    full, _ = parse_mountinfo(data)
    filtered, errors = parse_mountinfo(data, mount_points=wanted)
    assert errors == ()
    assert filtered == tuple(m for m in full if m.mount_point in wanted)
    assert len(full) == 3000 and len(filtered) == 5


if __name__ == "__main__":
    # Benchmark (not a test): python -m tests.test_parse_mountinfo
    import statistics
    import time

    storm = _storm()
    points = ("/", "/sysroot", "/usr", "/etc", "/var", "/boot", "/boot/efi")
    for label, mp in (("full", None), ("prefiltered", points)):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            found, _ = parse_mountinfo(storm, mp)
            times.append(time.perf_counter() - t0)
        print(
            f"{label}: 10000 lines -> {len(found)} mounts, median {statistics.median(times) * 1000:.1f} ms,"
            f" min {min(times) * 1000:.1f} ms"
        )
