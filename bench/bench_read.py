"""Time read_snapshot on the bundled sample and on real ostree sysroots of 10 and 100 deployments.

    .venv/bin/python bench/bench_read.py [--runs 21] [--sizes 10,100]

Sysroots are built by the real ostree tool (tests/fixtures/sysroots.py, in a
user namespace) in a temp dir removed afterwards. Each figure is the median
of RUNS reads after one warm-up read (warm page cache: the daemon's case).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ostreewatch.sample import paths_for as sample_paths  # noqa: E402
from ostreewatch.state import Paths, read_snapshot  # noqa: E402
from tests.fixtures.sysroots import OstreeSysroot  # noqa: E402


def measure(paths: Paths, runs: int) -> list[float]:
    read_snapshot(paths)  # warm-up
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        snap = read_snapshot(paths)
        out.append(time.perf_counter() - t0)
    assert snap.Deployments, "nothing read"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--sizes", default="10,100", help="deployment counts of the built sysroots")
    args = ap.parse_args()
    rows = []
    t = measure(sample_paths(), args.runs)
    rows.append(("sample (2 deployments)", t))
    with tempfile.TemporaryDirectory(prefix="ostreewatch-bench-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            t0 = time.perf_counter()
            sr = OstreeSysroot(os.path.join(tmp, str(n))).build(n)
            built = time.perf_counter() - t0
            snap = read_snapshot(sr.paths())
            assert len(snap.Deployments) == n and not snap.Problems, snap.Problems
            rows.append((f"{n} deployments (built in {built:.1f} s)", measure(sr.paths(), args.runs)))
    print(f"read_snapshot, median of {args.runs} runs (min, max), Python {sys.version.split()[0]}")
    for name, ts in rows:
        print(f"  {name:<34} {statistics.median(ts) * 1000:8.2f} ms   ({min(ts) * 1000:.2f}, {max(ts) * 1000:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
