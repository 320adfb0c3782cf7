#!/usr/bin/env python3
"""Figures for ostreewatchd's own choices; bench/run.py holds the full suite.

    .venv/bin/python bench/bench_daemon.py burst [-n 10]   # inotify event gaps of one `ostree admin deploy`
    .venv/bin/python bench/bench_daemon.py daemon [-n 5]   # start->READY, idle wakeups, swap->signal, RSS
    .venv/bin/python bench/bench_daemon.py storm [-n 5]    # daemon CPU during 2,000 unrelated mounts

`burst` picks --debounce-ms: it records every inotify event the watcher's
directories see during a real deploy and reports the burst's span and the
gaps between consecutive events (a debounce longer than the usual gap folds a
deploy into fewer published changes; a shorter one publishes intermediate
states). Needs root (unshare, dbus-daemon).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.fixtures import bench_sysroot as srmod  # noqa: E402
from tests.fixtures.unshare import PRIVATE_MOUNT_NS  # noqa: E402

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
IN_ALL = 0xFFF  # every event kind
IN_NONBLOCK = os.O_NONBLOCK


def _watch(fd: int, path: str) -> int:
    wd = _libc.inotify_add_watch(fd, os.fsencode(path), IN_ALL)
    if wd < 0:
        raise OSError(ctypes.get_errno(), path)
    return wd


def burst_once(sr: str, ref: str) -> list[tuple[float, str]]:
    """(time, dir/name) of each event on the watched dirs while one deploy runs."""
    fd = _libc.inotify_init1(IN_NONBLOCK)
    dirs = {}
    for rel in ("boot", "boot/loader/entries", "ostree", "ostree/deploy", f"ostree/deploy/{srmod.OSNAME}"):
        path = os.path.realpath(os.path.join(sr, rel))
        dirs[_watch(fd, path)] = rel
    events: list[tuple[float, str]] = []
    proc = subprocess.Popen(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "ostree",
            "admin",
            "deploy",
            f"--sysroot={sr}",
            f"--os={srmod.OSNAME}",
            ref,
        ],
        env=srmod.ostree_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        done = proc.poll() is not None
        if poller.poll(50 if not done else 200):
            t = time.monotonic()
            buf = os.read(fd, 65536)
            off = 0
            while off < len(buf):
                wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, off)
                name = buf[off + 16 : off + 16 + length].rstrip(b"\0").decode()
                off += 16 + length
                events.append((t, f"{dirs.get(wd, '?')}/{name}"))
        elif done:
            break
    os.close(fd)
    return events


def cmd_burst(n: int) -> None:
    work = tempfile.mkdtemp(prefix="owbench-burst-")
    try:
        sr = srmod.build_sysroot(os.path.join(work, "sysroot"))
        spans, gaps, counts = [], [], []
        for i in range(n):
            ev = burst_once(sr, srmod.REFS[i % 2])
            times = sorted(t for t, _ in ev)
            if len(times) < 2:
                continue
            spans.append(times[-1] - times[0])
            gaps.extend(b - a for a, b in zip(times, times[1:]) if b > a)
            counts.append(len(ev))
        gaps.sort()
        print(f"deploys: {len(spans)}; events per deploy (median): {statistics.median(counts)}")
        print(f"burst span ms: median {statistics.median(spans) * 1e3:.1f}, max {max(spans) * 1e3:.1f}")
        for q in (0.5, 0.9, 0.99):
            print(f"gap between wakeups p{int(q * 100)}: {gaps[int(q * (len(gaps) - 1))] * 1e3:.2f} ms")
        print(f"largest gap: {gaps[-1] * 1e3:.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cmd_daemon(n: int) -> None:
    """Start->READY, idle wakeups over 60 s, loader swap->signal, RSS: medians of N runs."""
    import asyncio

    from bench.daemonrun import Daemon, DaemonArgs, PrivateBus, Recorder, wait_for_name
    from bench.harness import RenameClock
    from tests.fixtures.measure import proc_sample

    work = tempfile.mkdtemp(prefix="owbench-daemon-")
    bus = PrivateBus()
    ready, wake, lat, swap_lat, rss = [], [], [], [], []
    try:
        sr = srmod.build_sysroot(os.path.join(work, "sysroot"))
        for i in range(n):
            d = Daemon(bus.address, DaemonArgs(sysroot=sr, mountinfo="/proc/self/mountinfo"))
            ready.append(d.start())
            try:
                asyncio.run(wait_for_name(bus.address))
                time.sleep(1)
                s0 = proc_sample(d.pid)
                time.sleep(60 if i == 0 else 10)
                s1 = proc_sample(d.pid)
                per60 = (s1.voluntary + s1.involuntary - s0.voluntary - s0.involuntary) * (60 if i == 0 else 6)
                wake.append(per60)
                rss.append(s1.rss_kb)

                async def swap() -> None:
                    rec = await Recorder.create(bus.address)
                    clock = RenameClock(os.path.join(sr, "boot"), ["loader"])
                    mark = len(rec.events)
                    t0 = time.monotonic()
                    # a thread: the recorder's loop must keep reading while ostree runs
                    await asyncio.get_running_loop().run_in_executor(None, srmod.deploy, sr, srmod.REFS[i % 2])  # noqa: B023 - swap() runs in this iteration
                    ev = await rec.wait(mark, lambda e: e.member == "DeploymentsChanged", 30)
                    t_swap = clock.wait_after(0, 5)
                    clock.close()
                    rec.close()
                    if ev:
                        lat.append(ev.t - t0)
                        if t_swap is not None:
                            swap_lat.append(ev.t - t_swap)

                asyncio.run(swap())
            finally:
                d.stop()
        print(f"runs: {n}")
        print(f"start -> READY=1: median {statistics.median(ready) * 1e3:.0f} ms")
        print(f"idle wakeups per 60 s (voluntary+involuntary ctxt switches): median {statistics.median(wake):.0f}")
        print(f"deploy start -> DeploymentsChanged at a subscriber: median {statistics.median(lat) * 1e3:.0f} ms")
        if swap_lat:
            print(
                f"boot/loader swap (rename) -> DeploymentsChanged: median {statistics.median(swap_lat) * 1e3:.0f} ms, "
                f"max {max(swap_lat) * 1e3:.0f} ms (debounce {50} ms included)"
            )
        print(f"RSS: median {statistics.median(rss) / 1024:.1f} MiB")
    finally:
        bus.close()
        shutil.rmtree(work, ignore_errors=True)


_STORM = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
base = sys.argv[1]
os.makedirs(base, exist_ok=True)
t0 = time.monotonic()
for i in range(int(sys.argv[2])):
    libc.mount(b"none", base.encode(), b"tmpfs", 0, None)
    libc.umount2(base.encode(), 0)
print(time.monotonic() - t0)
"""


def cmd_storm(n: int, count: int = 2000) -> None:
    """CPU of ostreewatchd while COUNT unrelated tmpfs mounts/unmounts churn its mount namespace."""
    from tests.fixtures.bus import SystemBus
    from tests.fixtures.daemon import start_daemon
    from tests.fixtures.measure import proc_sample

    work = tempfile.mkdtemp(prefix="owbench-storm-")
    bus = SystemBus()
    bus.start()
    cpu, wall, gens = [], [], []
    try:
        sr = srmod.build_sysroot(os.path.join(work, "sysroot"))
        for _ in range(n):
            d = start_daemon(bus, sr, mountinfo="/proc/self/mountinfo", prefix=[*PRIVATE_MOUNT_NS])
            try:
                d.wait_name()
                g0 = d.get_property("Generation")
                s0 = proc_sample(d.pid)
                r = subprocess.run(
                    [
                        "nsenter",
                        "--mount",
                        "--target",
                        str(d.pid),
                        sys.executable,
                        "-c",
                        _STORM,
                        os.path.join(work, "storm"),
                        str(count),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                time.sleep(0.5)
                s1 = proc_sample(d.pid)
                cpu.append(s1.cpu_s - s0.cpu_s)
                wall.append(float(r.stdout))
                gens.append(d.get_property("Generation") - g0)
            finally:
                d.close()
        print(f"runs: {n}; {count} tmpfs mount+umount pairs each")
        print(f"storm duration: median {statistics.median(wall):.2f} s")
        print(
            f"ostreewatchd CPU during the storm: median {statistics.median(cpu) * 1e3:.0f} ms "
            f"({statistics.median(cpu) / statistics.median(wall) * 100:.1f}% of one core)"
        )
        print(f"published changes: {gens}")
    finally:
        bus.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["burst", "daemon", "storm"])
    p.add_argument("-n", type=int, default=0)
    p.add_argument("--count", type=int, default=2000, help="storm: mount+umount pairs per run")
    a = p.parse_args()
    if a.what == "burst":
        cmd_burst(a.n or 10)
    elif a.what == "storm":
        cmd_storm(a.n or 5, a.count)
    else:
        cmd_daemon(a.n or 5)


if __name__ == "__main__":
    main()
