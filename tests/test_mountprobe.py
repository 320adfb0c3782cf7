"""mountprobe: the cheap per-point probe must change exactly when a watched mount point changes.

Each case runs in a real private mount namespace (unshare), where mounts are made
with mount(8) and the probe looks at /proc/self/mountinfo's owner, as the daemon does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ostreewatch import mountprobe
from tests.fixtures.unshare import PRIVATE_MOUNT_NS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = r"""
import json, os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from ostreewatch import mountprobe
watched, other = sys.argv[2], sys.argv[3]
points = ("/", watched)
root = mountprobe.probe_root("/proc/self/mountinfo")
assert root == ("/proc/self/root", True), root
def probe():
    return mountprobe.probe(root[0], points)
def sh(*argv):
    subprocess.run(argv, check=True, capture_output=True)
out = {"start": probe()}
for i in range(50):  # unrelated mounts come and go
    sh("mount", "-t", "tmpfs", "tmpfs", other)
    sh("umount", other)
out["after_unrelated"] = probe()
sh("mount", "-t", "tmpfs", "tmpfs", watched)
out["mounted"] = probe()
sh("mount", "-o", "remount,ro", watched)
out["read_only"] = probe()
sh("mount", "-o", "remount,rw", watched)
sh("mount", "-o", "remount,bind,nosuid", watched)
out["nosuid"] = probe()
sh("umount", watched)
sh("mount", "-t", "tmpfs", "tmpfs", watched)
out["mounted_again"] = probe()
sh("umount", watched)
out["unmounted"] = probe()
print(json.dumps(out))
"""


def test_probe_changes_only_for_the_watched_point(tmp_path) -> None:
    watched, other = tmp_path / "watched", tmp_path / "other"
    watched.mkdir()
    other.mkdir()
    proc = subprocess.run(
        [
            *PRIVATE_MOUNT_NS,
            sys.executable,
            "-c",
            _SCRIPT,
            REPO,
            str(watched),
            str(other),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["start"] is not None and seen["start"][1] is not None
    assert seen["after_unrelated"] == seen["start"]
    assert seen["mounted"][1] != seen["start"][1]
    assert seen["mounted"][0] == seen["start"][0]  # "/" untouched throughout
    assert seen["read_only"][1][3] & os.ST_RDONLY and not seen["mounted"][1][3] & os.ST_RDONLY
    assert seen["read_only"][1][:3] == seen["mounted"][1][:3]  # same mount, other flags
    assert seen["nosuid"][1][3] & os.ST_NOSUID and not seen["nosuid"][1][3] & os.ST_RDONLY
    # A new mount at the same point is told apart from the old one even if the kernel
    # reuses the old id: the unique id (Linux >= 6.8) is never reused.
    if seen["mounted"][1][1]:
        assert seen["mounted_again"][1][0] != seen["mounted"][1][0]
    assert seen["unmounted"] == seen["start"]


@pytest.mark.unit
def test_a_plain_file_or_a_missing_point_is_not_probed(tmp_path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text("")
    assert mountprobe.probe_root(str(table)) is None
    got = mountprobe.probe("/proc/self/root", ("/", str(tmp_path / "absent")))
    assert got is not None and got[0] is not None and got[1] is None


@pytest.mark.unit
def test_proc_root_of_a_mountinfo_path() -> None:
    assert mountprobe.proc_root("/proc/1/mountinfo") == "/proc/1/root"
    assert mountprobe.proc_root("/proc/self/mountinfo") == "/proc/self/root"
    assert mountprobe.proc_root("/proc/1/../1/mountinfo") == "/proc/1/root"
    assert mountprobe.proc_root("/tmp/mountinfo") is None
    assert mountprobe.proc_root("/proc/1/mounts") is None
