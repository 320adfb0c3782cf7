"""Profiling target: read_snapshot in a loop (run under py-spy by bench/run.py when a rescan goal is missed).

python bench/profile_rescan.py SYSROOT MOUNTINFO CMDLINE RUN COUNT
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ostreewatch.state import Paths, read_snapshot  # noqa: E402


def main() -> None:
    sysroot, mountinfo, cmdline, run, count = sys.argv[1:6]
    paths = Paths(sysroot=sysroot, mountinfo=mountinfo, cmdline=cmdline, run=run)
    for _ in range(int(count)):
        read_snapshot(paths)


if __name__ == "__main__":
    main()
