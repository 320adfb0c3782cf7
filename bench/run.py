#!/usr/bin/env python3
"""Run every ostreewatch benchmark on this machine and write BENCHMARKS.md at the repo root.

    .venv/bin/python bench/run.py            # the full run (~11 minutes)
    .venv/bin/python bench/run.py --quick    # a developer's run (~3 minutes), fewer events, shorter windows

Figures, never pass/fail. Each figure that fails to run is reported as "not measured" with the reason;
the others still run. Needs root (mount namespaces, dbus-daemon, unshare).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from dbus_next import MessageType  # noqa: E402

from bench import startup  # noqa: E402
from bench.daemonrun import (  # noqa: E402
    Daemon,
    DaemonArgs,
    PrivateBus,
    Recorder,
    connect,
    getall_message,
    wait_for_name,
)
from bench.harness import IN_CLOSE_WRITE, RenameClock, machine_info, summary  # noqa: E402
from bench.report import GROUPS, Figure, figure_block, merge_kept, ms, render, spread_ms  # noqa: E402
from tests.fixtures import bench_sysroot as srmod  # noqa: E402
from tests.fixtures.measure import MountNamespace, proc_sample  # noqa: E402
from tests.fixtures.unshare import PRIVATE_MOUNT_NS  # noqa: E402


@dataclass
class Plan:
    """How much of everything: the full run, or --quick."""

    ready_runs: int = 7
    idle_seconds: float = 60.0
    idle_daemons: int = 3
    deploy_events: int = 100
    entry_events: int = 100
    grubenv_events: int = 100
    mount_events: int = 100
    storm_mounts: int = 5000
    storm_seconds: float = 30.0
    storm_runs: int = 2
    getall_seconds: float = 5.0
    peer_runs: int = 20
    rescan_repeats: int = 15
    rss_calls: int = 100_000
    rss_changes: int = 1000


QUICK = Plan(
    ready_runs=3,
    idle_seconds=10.0,
    idle_daemons=2,
    deploy_events=20,
    entry_events=20,
    grubenv_events=20,
    mount_events=20,
    storm_mounts=5000,
    storm_seconds=10.0,
    storm_runs=1,
    getall_seconds=2.0,
    peer_runs=5,
    rescan_repeats=5,
    rss_calls=10_000,
    rss_changes=100,
)

QUIET_S = 0.15  # a change's burst of signals is over when nothing came for this long


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Env(srmod.Setting):
    """The shared setting (tests/fixtures/bench_sysroot.py), and the daemon arguments that watch it."""

    def daemon_args(self, **kw: Any) -> DaemonArgs:
        return DaemonArgs(sysroot=self.sysroot, mountinfo=self.ns.mountinfo, cmdline=self.cmdline, run=self.run, **kw)


# --- figures ------------------------------------------------------------------------------


def fig_ready(bus: PrivateBus, plan: Plan, state: dict[str, Any]) -> Figure:
    f = Figure("ready", "start to READY=1, bundled sample", "<= 120 ms median")
    f.method = (
        "`ostreewatchd --bus ADDRESS --sample` started with `NOTIFY_SOCKET` set to a datagram socket of the "
        "bench; time from `Popen` to the arrival of `READY=1`. A fresh process each run (Python start-up "
        "included). RSS read from /proc/PID/status right after READY=1."
    )
    times, rss = [], []
    for _ in range(plan.ready_runs):
        d = Daemon(bus.address, DaemonArgs(sample=True))
        try:
            times.append(d.start())
            rss.append(proc_sample(d.pid).rss_kb)
        finally:
            d.stop()
    s = summary(times)
    f.measured = spread_ms(s)
    f.met = s["p50"] <= 0.120
    f.header = ["run", "start to READY=1", "RSS after READY"]
    f.rows = [[str(i + 1), ms(t), f"{r / 1024:.1f} MB"] for i, (t, r) in enumerate(zip(times, rss))]
    state["rss_start_sample"] = summary([r / 1024 for r in rss])
    if not f.met:
        imports = _import_times()
        if imports:
            f.notes.append(
                "Where the time goes: `python -X importtime -c 'import ostreewatch.daemon, ...service, "
                "...state, ...watcher, ...journal, ...bootwrite'` (every module the daemon loads before "
                "READY=1): " + imports
            )
    return f


def _import_times() -> str:
    """Top-level imports of the daemon's modules by cumulative time (python -X importtime)."""
    mods = (
        "ostreewatch.daemon, ostreewatch.service, ostreewatch.state, ostreewatch.watcher, "
        "ostreewatch.journal, ostreewatch.bootwrite"
    )
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {mods}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    top = []
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        try:
            cumulative = int(parts[1])
        except ValueError:
            continue
        name = parts[2]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth <= 1:
            top.append((depth, cumulative, name.strip()))
    total = sum(c for d, c, _ in top if d == 0)
    best = sorted(((c, n) for d, c, n in top if d == 1), reverse=True)[:8]
    return f"{total / 1000:.0f} ms of imports in all (site included); the biggest inside: " + ", ".join(
        f"`{n}` {c / 1000:.0f} ms" for c, n in best
    )


def fig_idle(bus: PrivateBus, env: Env, plan: Plan) -> Figure:
    f = Figure("idle", f"wake-ups and CPU over {plan.idle_seconds:.0f} s idle", "0 wake-ups")
    f.method = (
        f"{plan.idle_daemons} daemons side by side (the bundled sample, and the real sysroot), started, "
        "READY=1, 2 s settle; then `voluntary_ctxt_switches` summed over /proc/PID/task/*/status and "
        f"utime+stime from /proc/PID/stat, before and after {plan.idle_seconds:.0f} s with nothing changing."
    )
    daemons = []
    try:
        for i in range(plan.idle_daemons):
            args = DaemonArgs(sample=True) if i % 2 == 0 else env.daemon_args()
            d = Daemon(bus.address, args)
            d.start()
            daemons.append((("sample" if i % 2 == 0 else "sysroot"), d))
        time.sleep(2.0)
        before = [proc_sample(d.pid) for _, d in daemons]
        time.sleep(plan.idle_seconds)
        after = [proc_sample(d.pid) for _, d in daemons]
    finally:
        for _, d in daemons:
            d.stop()
    wake = [a.voluntary - b.voluntary for a, b in zip(after, before)]
    invol = [a.involuntary - b.involuntary for a, b in zip(after, before)]
    cpu = [a.cpu_s - b.cpu_s for a, b in zip(after, before)]
    f.header = ["daemon", "threads", "voluntary switches", "involuntary", "CPU time"]
    f.rows = [
        [name, str(a.threads), str(w), str(iv), f"{c * 1000:.0f} ms"]
        for (name, _), a, w, iv, c in zip(daemons, after, wake, invol, cpu)
    ]
    s = summary(wake)
    f.measured = (
        f"median {s['p50']:.0f} wake-ups (min-max {s['min']:.0f}-{s['max']:.0f}), "
        f"CPU median {summary(cpu)['p50'] * 1000:.0f} ms"
    )
    f.met = max(wake) == 0
    return f


def fig_latency(bus: PrivateBus, env: Env, plan: Plan, state: dict[str, Any]) -> list[Figure]:
    """Deploy, entry, grubenv, mount latencies on one daemon; also the RSS-after-work figure."""
    return asyncio.run(_latency(bus, env, plan, state))


async def _latency(bus: PrivateBus, env: Env, plan: Plan, state: dict[str, Any]) -> list[Figure]:
    d = Daemon(bus.address, env.daemon_args())
    d.start()
    figs: list[Figure] = []
    try:
        await wait_for_name(bus.address)
        state["rss_start_sysroot_kb"] = proc_sample(d.pid).rss_kb
        rec = await Recorder.create(bus.address)
        await rec.quiet(0.5)
        changes = 0

        async def measure(trigger: Callable[[], Any], key: str, t0_of: Callable[[Any], float]) -> float | None:
            nonlocal changes
            since = len(rec.events)
            result = await trigger()
            t0 = t0_of(result)
            ev = await rec.wait(since, lambda e: key in e.changed and e.t >= t0, 10.0)
            await rec.quiet(QUIET_S)
            if ev is None:
                return None
            changes += 1
            return ev.t - t0

        def fig(keyname: str, title: str, method: str, lat: list[float | None]) -> Figure:
            f = Figure(keyname, title, "p50 <= 25 ms, p99 <= 60 ms", method=method)
            got = [x for x in lat if x is not None]
            missed = len(lat) - len(got)
            if not got:
                f.error = f"no signal for any of {len(lat)} events"
                return f
            s = summary(got)
            f.measured = f"p50 {ms(s['p50'])}, p99 {ms(s['p99'])} (n={s['n']}" + (
                f", {missed} without signal)" if missed else ")"
            )
            f.met = s["p50"] <= 0.025 and s["p99"] <= 0.060 and missed == 0
            f.header = ["n", "min", "p10", "p50", "p90", "p99", "max", "no signal in 10 s"]
            f.rows = [[str(s["n"])] + [ms(s[k]) for k in ("min", "p10", "p50", "p90", "p99", "max")] + [str(missed)]]
            return f

        # 1. a real ostree admin deploy: t0 = the IN_MOVED_TO of `loader` in boot/
        log("latency: ostree admin deploy")
        clock = RenameClock(os.path.join(env.sysroot, "boot"), ["loader"])
        # ostree closes ostree/lock (IN_CLOSE_WRITE) when it unlocks, at the very end of its operation.
        unlock_clock = RenameClock(os.path.join(env.sysroot, "ostree"), ["lock"], mask=IN_CLOSE_WRITE)
        lat: list[float | None] = []
        lat_unlock: list[float | None] = []
        try:
            for i in range(plan.deploy_events):
                ref = srmod.REFS[i % 2]
                n, n_unlock = len(clock.events), len(unlock_clock.events)
                times: dict[str, float] = {}

                async def do_deploy(
                    ref: str = ref, n: int = n, n_unlock: int = n_unlock, times: dict[str, float] = times
                ) -> float:
                    await asyncio.to_thread(srmod.deploy, env.sysroot, ref)
                    t = await asyncio.to_thread(clock.wait_after, n, 5.0)
                    if t is None:
                        raise RuntimeError("deploy did not rename loader")
                    unlocks = [u for u, _ in unlock_clock.events[n_unlock:] if u >= t]
                    if unlocks:
                        times["unlock"] = unlocks[-1]
                    return t

                swap_lat = await measure(do_deploy, "BootEntries", lambda t: t)
                lat.append(swap_lat)
                swap_t = clock.events[n][0] if len(clock.events) > n else None
                lat_unlock.append(
                    None
                    if swap_lat is None or swap_t is None or "unlock" not in times
                    else swap_lat + swap_t - times["unlock"]
                )
        finally:
            clock.close()
            unlock_clock.close()
        figs.append(
            fig(
                "lat_deploy",
                "latency: real `ostree admin deploy` (loader swap) to PropertiesChanged",
                "`unshare --user --map-root-user ostree admin deploy --sysroot=SR --os=bench REF` (REF "
                "alternates between two commits with different kernels, so every deploy swaps `loader`), "
                "run in a thread; t0 = the bench's own inotify IN_MOVED_TO of `loader` in SR/boot; t1 = "
                "arrival at a dbus-next subscriber of the first PropertiesChanged carrying BootEntries.",
                lat,
            )
        )
        f_unlock = fig(
            "lat_deploy_unlock",
            "latency: ostree's unlock after a real deploy to PropertiesChanged",
            "The same deploys; t0 = the bench's inotify IN_CLOSE_WRITE of SR/ostree/lock, the last one "
            "after the `loader` swap (ostree closes its lock file when it unlocks, after its cleanup); "
            "t1 as above. The daemon publishes nothing while ostree holds the lock.",
            lat_unlock,
        )
        f_unlock.goal = "p50 <= 15 ms, p99 <= 30 ms"
        got_unlock = [x for x in lat_unlock if x is not None]
        if got_unlock:
            su = summary(got_unlock)
            f_unlock.met = su["p50"] <= 0.015 and su["p99"] <= 0.030 and len(got_unlock) == len(lat_unlock)
        figs.append(f_unlock)

        # 2. a new entry file renamed into entries/ (and renamed out again)
        log("latency: entry renames")
        arg = srmod.first_ostree_arg(env.sysroot)
        lat = []
        for i in range(plan.entry_events):
            edir = os.path.realpath(srmod.entries_dir(env.sysroot))
            outside = os.path.join(os.path.dirname(edir), "bench-lat.conf")
            inside = os.path.join(edir, "bench-lat.conf")
            if i % 2 == 0:
                with open(outside, "w") as fh:
                    fh.write(srmod.entry_text(50 + i, arg))

            async def do_rename(
                src: str = outside if i % 2 == 0 else inside, dst: str = inside if i % 2 == 0 else outside
            ) -> float:
                os.rename(src, dst)
                return time.monotonic()

            lat.append(await measure(do_rename, "BootEntries", lambda t: t))
        for p in (os.path.join(os.path.dirname(edir), "bench-lat.conf"), os.path.join(edir, "bench-lat.conf")):
            if os.path.exists(p):
                os.unlink(p)
        await rec.quiet(QUIET_S)
        figs.append(
            fig(
                "lat_entry",
                "latency: entry file renamed into / out of entries/ to PropertiesChanged",
                "A BLS entry written beside `entries/` then `rename()`d into it (even events) or back out "
                "(odd events); t0 = right after rename() returns; t1 = first PropertiesChanged carrying "
                "BootEntries at a dbus-next subscriber.",
                lat,
            )
        )

        # 3. grubenv rewritten by rename, saved_entry alternating between the two ostree entries
        log("latency: grubenv renames")
        grubenv = os.path.join(env.sysroot, "boot", "grub2", "grubenv")
        ids = sorted(n[:-5] for n in os.listdir(srmod.entries_dir(env.sysroot)) if n.endswith(".conf"))
        lat = []
        for i in range(plan.grubenv_events):
            tmp = grubenv + ".new"
            shutil.copyfile(grubenv, tmp)
            subprocess.run(["grub-editenv", tmp, "set", f"saved_entry={ids[i % 2]}"], check=True)

            async def do_env(tmp: str = tmp) -> float:
                os.rename(tmp, grubenv)
                return time.monotonic()

            lat.append(await measure(do_env, "DefaultEntry", lambda t: t))
        figs.append(
            fig(
                "lat_grubenv",
                "latency: grubenv rename to PropertiesChanged",
                "`grub-editenv COPY set saved_entry=ID` (ID alternating between the two entries) then "
                "`rename(COPY, SR/boot/grub2/grubenv)`; t0 = after rename(); t1 = first PropertiesChanged "
                "carrying DefaultEntry.",
                lat,
            )
        )

        # 4. a mount change: bind mount onto /usr in the daemon's mount namespace, and its unmount
        log("latency: mounts")
        lat = []
        for i in range(plan.mount_events):
            cmd = "mount /usr" if i % 2 == 0 else "umount /usr"

            async def do_mount(cmd: str = cmd) -> float:
                return float((await asyncio.to_thread(env.ns.cmd, cmd))[0])

            lat.append(await measure(do_mount, "Mounts", lambda t: t))
        figs.append(
            fig(
                "lat_mount",
                "latency: mount change on /usr to PropertiesChanged",
                "In a private mount namespace (the daemon's `--mountinfo /proc/PID/mountinfo` is that "
                'namespace\'s), `mount("/usr", "/usr", MS_BIND)` then `umount2("/usr", MNT_DETACH)` '
                "in turn; t0 = right after the syscall returns (CLOCK_MONOTONIC, same clock); t1 = first "
                "PropertiesChanged carrying Mounts.",
                lat,
            )
        )

        # 5. RSS after many calls and changes (this same daemon)
        figs.append(await _rss(bus, env, plan, d, rec, state, changes))
        rec.close()
    finally:
        d.stop()
    # what limits the latency: the same entry renames on fresh daemons with a shorter debounce
    # (after the main daemon stopped: one daemon at a time owns the name and emits signals)
    entry_fig = next(f for f in figs if f.key == "lat_entry")
    for deb in (10, 0) if entry_fig.rows else ():
        if entry_fig.header[0] != "daemon":
            entry_fig.header.insert(0, "daemon")
            entry_fig.rows[0].insert(0, "default --debounce-ms")
        lat2 = await _entry_latency(bus, env, plan.entry_events, deb)
        got = [x for x in lat2 if x is not None]
        if got:
            s2 = summary(got)
            entry_fig.rows.append(
                [f"--debounce-ms {deb}", str(s2["n"])]
                + [ms(s2[k]) for k in ("min", "p10", "p50", "p90", "p99", "max")]
                + [str(len(lat2) - len(got))]
            )
    entry_fig.notes.append(
        "The rows with a shorter `--debounce-ms` (fresh daemons, same sysroot) show what the "
        "latency is made of: the debounce wait, then the rescan (read_snapshot, see the "
        "rescan figure), the diff and the signal."
    )

    # 6. GetAll throughput and round trip, with peers: a fresh daemon per client count, so that a
    # daemon that drops off the bus under load (see docs/reliability.md) spoils only its own row
    figs.append(await _getall(bus, env, plan, state))
    return figs


CALL_TIMEOUT = 10.0


async def _entry_latency(bus: PrivateBus, env: Env, events: int, debounce_ms: int) -> list[float | None]:
    """Entry rename latencies on a fresh daemon started with --debounce-ms."""
    d = Daemon(bus.address, env.daemon_args(debounce_ms=debounce_ms))
    d.start()
    lat: list[float | None] = []
    rec = None
    try:
        await wait_for_name(bus.address)
        rec = await Recorder.create(bus.address)
        await rec.quiet(0.3)
        arg = srmod.first_ostree_arg(env.sysroot)
        edir = os.path.realpath(srmod.entries_dir(env.sysroot))
        outside = os.path.join(os.path.dirname(edir), "bench-deb.conf")
        inside = os.path.join(edir, "bench-deb.conf")
        with open(outside, "w") as fh:
            fh.write(srmod.entry_text(77, arg))
        for i in range(events):
            since = len(rec.events)
            src, dst = (outside, inside) if i % 2 == 0 else (inside, outside)
            os.rename(src, dst)
            t0 = time.monotonic()
            ev = await rec.wait(since, lambda e: "BootEntries" in e.changed and e.t >= t0, 10.0)  # noqa: B023 - awaited here
            await rec.quiet(QUIET_S)
            lat.append(ev.t - t0 if ev else None)
        for p in (outside, inside):
            if os.path.exists(p):
                os.unlink(p)
    finally:
        if rec:
            rec.close()
        d.stop()
    return lat


async def _client_loop(address: str, seconds: float, lat: list[float], failures: list[str]) -> int:
    """GetAll back to back for `seconds`; a call unanswered in CALL_TIMEOUT ends this client."""
    bus = await connect(address)
    n = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.monotonic()
            try:
                reply = await asyncio.wait_for(bus.call(getall_message()), CALL_TIMEOUT)
            except asyncio.TimeoutError:
                failures.append(f"unanswered after {n} calls")
                break
            lat.append(time.monotonic() - t)
            if reply.message_type != MessageType.METHOD_RETURN:
                failures.append(f"{reply.error_name} after {n} calls")
                break
            n += 1
    finally:
        bus.disconnect()
    return n


async def _getall(bus: PrivateBus, env: Env, plan: Plan, state: dict[str, Any]) -> Figure:
    log("GetAll")
    f = Figure(
        "getall",
        "GetAll round trip and calls/s; peers `ostree admin status`, `bootctl list`",
        ">= 20x faster than `ostree admin status`",
    )
    f.method = (
        f"N dbus-next clients (each its own connection, all in the bench's one asyncio process) call "
        f'`org.freedesktop.DBus.Properties.GetAll("org.ostreewatch1.Manager")` back to back for '
        f"{plan.getall_seconds:.0f} s against the daemon watching the real sysroot. Peers on the same "
        f"sysroot, {plan.peer_runs} runs each, wall time of the whole command as an admin would run it: "
        "`unshare --user --map-root-user ostree admin status --sysroot=SR` and, in a private mount "
        "namespace with SR/boot bind-mounted on itself, `SYSTEMD_RELAX_ESP_CHECKS=1 bootctl "
        "--esp-path=SR/boot list`. Then one GDBus client (GLib's C marshalling, Debian's python3-gi, "
        "its own process, `Gio.DBusConnection.call_sync` back to back) on a fresh daemon: its round "
        "trip, its own CPU per call, and the daemon's CPU per call (utime+stime over the calls / calls)."
    )
    f.header = ["what", "round trip p50", "p99", "calls/s", "n", "failures"]
    p50_1 = None
    for clients in (1, 10, 50):
        d = Daemon(bus.address, env.daemon_args())
        d.start()
        try:
            await wait_for_name(bus.address)
            lat: list[float] = []
            failures: list[str] = []
            prof = None
            if clients == 1 and os.path.exists(PYSPY):
                prof_out = os.path.join(env.base, "getall.prof")
                prof = subprocess.Popen(
                    [
                        PYSPY,
                        "record",
                        "--pid",
                        str(d.pid),
                        "--duration",
                        str(max(1, int(plan.getall_seconds) - 1)),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "-o",
                        prof_out,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            t0 = time.monotonic()
            counts = await asyncio.gather(
                *[_client_loop(bus.address, plan.getall_seconds, lat, failures) for _ in range(clients)]
            )
            wall = time.monotonic() - t0
            lost = _bus_lost(d)
            if prof:
                await asyncio.to_thread(prof.wait, 60)
                top = _profile_top(prof_out)
                if top:
                    f.notes.append(
                        "py-spy (installed in .venv for this) on the daemon while 1 client called "
                        "GetAll back to back, share of samples by function (inclusive): " + top
                    )
        finally:
            d.stop()
        n = sum(counts)
        s = summary(lat)
        if clients == 1:
            p50_1 = s["p50"]
        fail = f"{len(failures)} client(s) stopped: {failures[0]}" if failures else "0"
        if lost:
            fail += f"; daemon log: {lost}"
            f.notes.append(
                f"With {clients} clients the daemon lost its bus connection: {lost} "
                "(dbus-next 0.2.3 treats EAGAIN on a full socket as fatal; docs/reliability.md)."
            )
        f.rows.append([f"GetAll, {clients} client(s)", ms(s["p50"]), ms(s["p99"]), f"{n / wall:.0f}", str(n), fail])
    # GLib's GDBus as the client (C marshalling): its round trip, its own CPU per call, and the
    # daemon's CPU per call (utime+stime of the daemon over the calls / calls)
    gd = await asyncio.to_thread(_gdbus_getall, bus, env, plan)
    if gd is not None:
        f.rows.append(
            [
                "GetAll, 1 GDBus client",
                ms(gd["p50"]),
                ms(gd["p99"]),
                f"{gd['rate']:.0f}",
                str(gd["n"]),
                f"client CPU {gd['client_cpu_ms']:.3f} ms/call, daemon CPU {gd['daemon_cpu_ms']:.3f} ms/call",
            ]
        )
    # peers
    st = []
    for _ in range(plan.peer_runs):
        t = time.monotonic()
        await asyncio.to_thread(srmod.status, env.sysroot)
        st.append(time.monotonic() - t)
    sst = summary(st)
    f.rows.append(["`ostree admin status`", ms(sst["p50"]), ms(sst["p99"]), f"{1 / sst['p50']:.0f}", str(sst["n"])])
    bc = await asyncio.to_thread(_bootctl_times, env.sysroot, plan.peer_runs)
    if bc:
        sbc = summary(bc)
        f.rows.append(["`bootctl list`", ms(sbc["p50"]), ms(sbc["p99"]), f"{1 / sbc['p50']:.0f}", str(sbc["n"])])
    else:
        f.notes.append("`bootctl list` did not run here (see stderr of the bench).")
    ratio = sst["p50"] / p50_1 if p50_1 else float("nan")
    f.measured = f"1 client p50 {ms(p50_1)}; `ostree admin status` p50 {ms(sst['p50'])}: {ratio:.0f}x faster"
    if bc:
        f.measured += f"; `bootctl list` {ms(summary(bc)['p50'])}: {summary(bc)['p50'] / p50_1:.0f}x"
    f.met = ratio >= 20
    if gd is not None:
        gratio = sst["p50"] / gd["p50"]
        f.measured += (
            f"; GDBus client p50 {ms(gd['p50'])} ({gratio:.0f}x faster than `ostree admin status`), "
            f"daemon CPU {gd['daemon_cpu_ms']:.2f} ms/call"
        )
        f.goal = ">= 30x faster than `ostree admin status` with a GDBus client; daemon CPU <= 0.5 ms per GetAll"
        f.met = gratio >= 30 and gd["daemon_cpu_ms"] <= 0.5
    else:
        f.notes.append("The GDBus client did not run (see stderr of the bench).")
    f.notes.append(
        "The clients share one Python process: with 50 clients, client-side decoding competes for the "
        "same 2 cores as dbus-daemon and ostreewatchd, so calls/s is a floor for the daemon."
    )
    return f


PYSPY = os.path.join(REPO, ".venv", "bin", "py-spy")

# A GDBus client in Debian's python3 (python3-gi): GetAll back to back for argv[2] seconds.
_GDBUS_CLIENT = r"""
import json, sys, time
from gi.repository import Gio, GLib
conn = Gio.DBusConnection.new_for_address_sync(
    sys.argv[1], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION,
    None, None)
args = GLib.Variant("(s)", ("org.ostreewatch1.Manager",))
def call():
    return conn.call_sync("org.ostreewatch1", "/org/ostreewatch1", "org.freedesktop.DBus.Properties", "GetAll",
                          args, GLib.VariantType("(a{sv})"), Gio.DBusCallFlags.NONE, 10000, None)
for _ in range(50):
    call()
print("go", flush=True)
sys.stdin.readline()
lat = []
c0 = time.process_time()
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    t = time.monotonic()
    call()
    lat.append(time.monotonic() - t)
print(json.dumps({"lat": lat, "cpu": time.process_time() - c0}), flush=True)
"""


def _gdbus_getall(bus: PrivateBus, env: Env, plan: Plan) -> dict[str, float] | None:
    """GetAll from a GDBus client on a fresh daemon: round trip, client and daemon CPU per call."""
    d = Daemon(bus.address, env.daemon_args())
    d.start()
    try:
        asyncio.run(wait_for_name(bus.address))
        proc = subprocess.Popen(
            ["/usr/bin/python3", "-c", _GDBUS_CLIENT, bus.address, str(plan.getall_seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != "go":
            proc.kill()
            return None
        before = proc_sample(d.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        out = json.loads(proc.stdout.readline())
        after = proc_sample(d.pid)
        proc.wait(30)
    except (OSError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"GDBus client: {e}", file=sys.stderr)
        return None
    finally:
        d.stop()
    s = summary(out["lat"])
    n = len(out["lat"])
    return {
        "p50": s["p50"],
        "p99": s["p99"],
        "n": n,
        "rate": n / plan.getall_seconds,
        "client_cpu_ms": out["cpu"] / n * 1000,
        "daemon_cpu_ms": (after.cpu_s - before.cpu_s) / n * 1000,
    }


def _profile_top(path: str, n: int = 8) -> str:
    """Inclusive share of the busiest functions in a py-spy raw (collapsed stacks) file."""
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError:
        return ""
    total = 0
    incl: dict[str, int] = {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        total += c
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0]
            where = frame.split(" (")[1].split(":")[0].rstrip(")") if " (" in frame else ""
            key = f"{name} ({os.path.basename(where)})"
            if key not in seen:
                seen.add(key)
                incl[key] = incl.get(key, 0) + c
    if not total:
        return ""
    skip = (
        "<module>",
        "_run_code",
        "_run_module_as_main",
        "run_forever",
        "run_until_complete",
        "_run_once",
        "main (daemon.py)",
        "_run (events.py)",
        "_bootstrap",
        "run (threading.py)",
        "_worker",
    )
    best = sorted(((v, k) for k, v in incl.items() if not any(k.startswith(x) or x in k for x in skip)), reverse=True)[
        :n
    ]
    return "; ".join(f"`{k}` {v * 100 / total:.0f} %" for v, k in best) + f" ({total} samples of busy threads)"


def _bus_lost(d: Daemon) -> str:
    """The daemon's own 'Lost the bus connection' log line, if it wrote one."""
    try:
        with open(d.log_path, errors="replace") as fh:
            for line in fh:
                if "Lost the bus connection" in line:
                    return line.split("MESSAGE=", 1)[-1].split('" ', 1)[0].strip('"')[:160]
    except OSError:
        pass
    return ""


def _bootctl_times(sysroot: str, runs: int) -> list[float]:
    boot = os.path.join(sysroot, "boot")
    script = (
        f'mount --bind "{boot}" "{boot}" || exit 1; for i in $(seq {runs}); do s=$(date +%s%N); '
        f'SYSTEMD_RELAX_ESP_CHECKS=1 bootctl --esp-path="{boot}" --no-pager list >/dev/null 2>&1 || '
        f"echo fail; e=$(date +%s%N); echo $((e-s)); done"
    )
    r = subprocess.run(
        [*PRIVATE_MOUNT_NS, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0 or "fail" in r.stdout:
        log(f"bootctl: {r.stdout} {r.stderr}")
        return []
    return [int(x) / 1e9 for x in r.stdout.split()]


async def _rss(
    bus: PrivateBus, env: Env, plan: Plan, d: Daemon, rec: Recorder, state: dict[str, Any], changes: int
) -> Figure:
    log("RSS: calls and changes")
    f = Figure("rss", "resident memory after start, and after many calls and changes", "<= 25 MB, growth <= 1 MB")
    rss_mid = proc_sample(d.pid).rss_kb
    changes_before = changes
    # the calls: plan.rss_calls GetAll from 4 clients, one call in flight each (more concurrent
    # clients can knock the daemon off the bus: docs/reliability.md)
    calls = 0
    per = (plan.rss_calls + 3) // 4

    async def fixed(n: int) -> int:
        b = await connect(bus.address)
        done = 0
        try:
            for _ in range(n):
                r = await asyncio.wait_for(b.call(getall_message()), CALL_TIMEOUT)
                if r.message_type != MessageType.METHOD_RETURN:
                    raise RuntimeError(r.error_name)
                done += 1
        except asyncio.TimeoutError:
            log(f"RSS: a client stopped after {done} calls (no answer in {CALL_TIMEOUT}s)")
        finally:
            b.disconnect()
        return done

    calls = sum(await asyncio.gather(*[fixed(per) for _ in range(4)]))
    state["calls"] = calls
    # top up changes with entry renames, each waited for
    arg = srmod.first_ostree_arg(env.sysroot)
    edir = os.path.realpath(srmod.entries_dir(env.sysroot))
    outside = os.path.join(os.path.dirname(edir), "bench-rss.conf")
    inside = os.path.join(edir, "bench-rss.conf")
    with open(outside, "w") as fh:
        fh.write(srmod.entry_text(99, arg))
    i = 0
    while changes < plan.rss_changes and i < plan.rss_changes * 2:
        since = len(rec.events)
        src, dst = (outside, inside) if i % 2 == 0 else (inside, outside)
        os.rename(src, dst)
        if await rec.wait(since, lambda e: "BootEntries" in e.changed, 10.0):
            changes += 1
        i += 1
    for p in (outside, inside):
        if os.path.exists(p):
            os.unlink(p)
    await rec.quiet(QUIET_S)
    rss_end = proc_sample(d.pid).rss_kb
    start_kb = state.get("rss_start_sysroot_kb", 0)
    growth = (rss_end - rss_mid) / 1024
    f.method = (
        "VmRSS from /proc/PID/status of the daemon watching the real sysroot: after READY=1, after the "
        f"latency runs (their published changes counted), and at the end: after {plan.rss_calls} GetAll "
        "calls (4 dbus-next clients, one call in flight each) and changes topped up to "
        f"{plan.rss_changes} with entry renames, each waited for. Growth is end minus "
        "after-the-latency-runs (the warm state)."
    )
    f.header = ["point", "RSS", "calls so far", "published changes so far"]
    s0 = state.get("rss_start_sample")
    if s0:
        f.rows.append(["after start, bundled sample (fig. start to READY)", f"median {s0['p50']:.1f} MB", "0", "0"])
    f.rows.append(["after start, real sysroot", f"{start_kb / 1024:.1f} MB", "0", "0"])
    f.rows.append(["after the latency runs", f"{rss_mid / 1024:.1f} MB", "0", str(changes_before)])
    f.rows.append(["end", f"{rss_end / 1024:.1f} MB", str(calls), str(changes)])
    f.measured = (
        f"{start_kb / 1024:.1f} MB after start, {rss_end / 1024:.1f} MB after {calls} calls and "
        f"{changes} changes (growth from warm {growth:+.1f} MB, from start {(rss_end - start_kb) / 1024:+.1f} MB)"
    )
    f.met = start_kb / 1024 <= 25 and growth <= 1.0  # issue 21's goal (was 30 MB)
    return f


def fig_storm(bus: PrivateBus, env: Env, plan: Plan) -> Figure:
    return asyncio.run(_storm(bus, env, plan))


async def _storm(bus: PrivateBus, env: Env, plan: Plan) -> Figure:
    f = Figure(
        "storm",
        f"mount storm: {plan.storm_mounts} mounts + churn for {plan.storm_seconds:.0f} s",
        "<= 1 % CPU, 0 signals, <= 100 ms",
    )
    f.method = (
        f"A fresh private mount namespace (tests/fixtures/mountns.py under `unshare --mount --propagation private`) "
        f"with {plan.storm_mounts} bind mounts; the daemon watches its /proc/PID/mountinfo. A thread in "
        f"the namespace mounts and unmounts a tmpfs (ctypes mount/umount2) as fast as it can for "
        f"{plan.storm_seconds:.0f} s. At 1/3 and 2/3 of the storm a relevant change (bind mount onto "
        "/usr, then its unmount) is made; its latency is measured to the first PropertiesChanged carrying "
        "Mounts. CPU = utime+stime delta of the daemon over the storm / wall time. Signals: every signal "
        "from /org/ostreewatch1 during the storm, minus those carrying the relevant changes."
    )
    f.header = ["run", "churn ops", "daemon CPU", "signals (unrelated)", "relevant change latency"]
    cpus, unrelated_all, lats = [], [], []
    for run in range(plan.storm_runs):
        ns = MountNamespace()
        d = None
        try:
            base = os.path.join(env.base, f"storm{run}")
            ns.cmd(f"prepare {plan.storm_mounts} {base}")
            d = Daemon(
                bus.address, DaemonArgs(sysroot=env.sysroot, mountinfo=ns.mountinfo, cmdline=env.cmdline, run=env.run)
            )
            d.start()
            await wait_for_name(bus.address)
            rec = await Recorder.create(bus.address)
            await rec.quiet(0.5)
            since = len(rec.events)
            s0 = proc_sample(d.pid)
            await asyncio.to_thread(ns.cmd, f"churn_start {base}")
            relevant = 0
            run_lats = []
            for cmd in ("mount /usr", "umount /usr"):
                await asyncio.sleep(plan.storm_seconds / 3)
                idx = len(rec.events)
                t0 = float((await asyncio.to_thread(ns.cmd, cmd))[0])
                ev = await rec.wait(idx, lambda e: "Mounts" in e.changed and e.t >= t0, 10.0)  # noqa: B023 - awaited here
                if ev:
                    run_lats.append(ev.t - t0)
                    relevant += 1
            await asyncio.sleep(max(0.0, plan.storm_seconds / 3 - sum(run_lats)))
            ops = int((await asyncio.to_thread(ns.cmd, "churn_stop"))[0])
            s1 = proc_sample(d.pid)
            await rec.quiet(0.5)
            # every signal in the window minus the ones that carried the relevant changes
            window = rec.events[since:]
            relevant_pc = [e for e in window if "Mounts" in e.changed]
            relevant_typed = [e for e in window if e.member == "MountsChanged"]
            unrelated = len(window) - min(len(relevant_pc), relevant) - min(len(relevant_typed), relevant)
            cpu = (s1.cpu_s - s0.cpu_s) / (s1.t - s0.t) * 100
            cpus.append(cpu)
            unrelated_all.append(unrelated)
            lats.extend(run_lats)
            f.rows.append(
                [
                    str(run + 1),
                    f"{ops} ({ops / (s1.t - s0.t):.0f}/s)",
                    f"{cpu:.1f} %",
                    str(unrelated),
                    ", ".join(ms(x) for x in run_lats)
                    + (f" ({2 - len(run_lats)} missed)" if len(run_lats) < 2 else ""),
                ]
            )
            rec.close()
        finally:
            if d:
                d.stop()
            ns.close()
    scpu = summary(cpus)
    f.measured = (
        f"CPU median {scpu['p50']:.1f} % (max {scpu['max']:.1f} %), unrelated signals "
        f"{max(unrelated_all)}, relevant change latency max {ms(max(lats)) if lats else 'missed'}"
    )
    f.met = (
        scpu["p50"] <= 1
        and max(unrelated_all) == 0
        and bool(lats)
        and max(lats) <= 0.10
        and len(lats) == 2 * plan.storm_runs
    )
    return f


def fig_rescan(env: Env, plan: Plan) -> Figure:
    f = Figure(
        "rescan",
        "rescan cost (read_snapshot) by entries and mountinfo lines",
        "1,000 entries <= 30 ms, 10,000 mountinfo lines <= 3 ms, linear",
    )
    from ostreewatch import state  # imported late: a missing module is a "not measured"
    from ostreewatch.state import Paths, read_snapshot

    settle = state.ENTRY_SETTLE_NS / 1e9 + 0.1
    f.method = (
        "In-process `ostreewatch.state.read_snapshot(Paths(...))` on a copy of the real sysroot with N "
        "hand-written BLS entries (each with a resolving `ostree=` argument) and the bench namespace's "
        "mountinfo; then with 10 entries and a mountinfo file of N lines (the real table plus "
        f"synthetic tmpfs lines). Median of {plan.rescan_repeats} calls after one warm-up call. The N-entry "
        f"rows are a rescan with those entries unchanged (what a mount, grubenv or origin change costs): "
        f"timed {settle:.1f} s after the entries were written, since the reader trusts an entry file's "
        "signature only that long after its last change; the `all new` row clears the parsed-entry cache "
        "before every call (what a deployment costs, which rewrites every entry)."
    )
    f.header = ["input", "median", "p10-p90", "per item (vs previous row)"]
    work = os.path.join(env.base, "rescan")
    shutil.copytree(env.sysroot, work, symlinks=True)
    edir = srmod.entries_dir(work)
    base_entries = len(os.listdir(edir))

    def timeit(paths: Any, cold: bool = False) -> dict[str, float]:
        read_snapshot(paths)
        ts = []
        for _ in range(plan.rescan_repeats):
            if cold:
                state._PARSED_ENTRIES.clear()
            t = time.perf_counter()
            read_snapshot(paths)
            ts.append(time.perf_counter() - t)
        return summary(ts)

    results = {}
    arg = srmod.first_ostree_arg(work)
    written = 0
    prev = None
    for n in (10, 100, 1000):
        for i in range(written, n - base_entries):
            with open(os.path.join(edir, f"bench-extra-{i}.conf"), "w") as fh:
                fh.write(srmod.entry_text(i + 10, arg))
        written = max(written, n - base_entries)
        time.sleep(settle)
        s = timeit(Paths(sysroot=work, mountinfo=env.ns.mountinfo, cmdline=env.cmdline, run=env.run))
        results[n] = s["p50"]
        growth = "" if prev is None else f"{(s['p50'] - prev[1]) / (n - prev[0]) * 1e6:.0f} µs/entry"
        prev = (n, s["p50"])
        f.rows.append([f"{n} entries", ms(s["p50"]), f"{ms(s['p10'])}-{ms(s['p90'])}", growth])
        if n == 1000:
            cold = timeit(Paths(sysroot=work, mountinfo=env.ns.mountinfo, cmdline=env.cmdline, run=env.run), True)
            results["cold"] = cold["p50"]
            f.rows.append(["1000 entries, all new", ms(cold["p50"]), f"{ms(cold['p10'])}-{ms(cold['p90'])}", ""])
        if n == 1000 and s["p50"] > 0.050 and os.path.exists(PYSPY):
            prof_out = os.path.join(env.base, "rescan.prof")
            subprocess.run(
                [
                    PYSPY,
                    "record",
                    "--rate",
                    "500",
                    "--format",
                    "raw",
                    "-o",
                    prof_out,
                    "--",
                    sys.executable,
                    os.path.join(REPO, "bench", "profile_rescan.py"),
                    work,
                    env.ns.mountinfo,
                    env.cmdline,
                    env.run,
                    "20",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=300,
            )
            top = _profile_top(prof_out, 10)
            if top:
                f.notes.append(
                    "1,000 entries misses its goal; py-spy on `bench/profile_rescan.py` (20 reads), "
                    "share of samples by function (inclusive): " + top
                )
    for i in range(written):
        os.unlink(os.path.join(edir, f"bench-extra-{i}.conf"))
    real = pathlib.Path(env.ns.mountinfo).read_text().splitlines()
    prev = None
    mres = {}
    for n in (1000, 10000):
        mi = os.path.join(env.base, f"mountinfo-{n}")
        with open(mi, "w") as fh:
            for line in real:
                fh.write(line + "\n")
            for i in range(n - len(real)):
                fh.write(
                    f"{100000 + i} 1 0:{900 + i % 50} / /tmp/storm/m{i} rw,relatime shared:{500 + i} - tmpfs storm rw\n"
                )
        s = timeit(Paths(sysroot=work, mountinfo=mi, cmdline=env.cmdline, run=env.run))
        mres[n] = s["p50"]
        growth = "" if prev is None else f"{(s['p50'] - prev[1]) / (n - prev[0]) * 1e6:.2f} µs/line"
        prev = (n, s["p50"])
        f.rows.append([f"{n} mountinfo lines (10 entries)", ms(s["p50"]), f"{ms(s['p10'])}-{ms(s['p90'])}", growth])
    shutil.rmtree(work, ignore_errors=True)
    ratio_e = results[1000] / results[100] if results[100] else float("nan")
    ratio_m = mres[10000] / mres[1000] if mres[1000] else float("nan")
    f.measured = (
        f"1,000 entries {ms(results[1000])} (all new: {ms(results['cold'])}; x{ratio_e:.1f} for 10x entries), "
        "10,000 mountinfo lines "
        f"{ms(mres[10000])} (x{ratio_m:.1f} for 10x lines)"
    )
    # linear: 10x input costs at most ~12x (a fixed cost makes it less)
    f.met = results[1000] <= 0.030 and mres[10000] <= 0.003 and ratio_e <= 12 and ratio_m <= 12
    return f


def fig_unit_start(plan: Plan) -> Figure:
    """ExecMainStartTimestamp to READY=1 of ostreewatch.service under systemd as PID 1 (nspawn)."""
    f = Figure("unit", "the unit's start under real systemd", "<= 150 ms median")
    f.method = (
        "`tests/test_nspawn.py::test_unit_start_time_and_mount_probe` boots the cached Debian tree with "
        "systemd as PID 1 (systemd-nspawn) and the project installed as the RPM lays it out; the figure is "
        "the unit's `ActiveEnterTimestampMonotonic - ExecMainStartTimestampMonotonic` (for Type=notify, "
        "READY=1), printed by the test. One container boot per run."
    )
    times = []
    for _ in range(plan.ready_runs):
        r = subprocess.run(
            [
                os.path.join(REPO, ".venv", "bin", "pytest"),
                "-q",
                "-s",
                "-p",
                "no:randomly",
                "tests/test_nspawn.py",
                "-k",
                "test_unit_start_time_and_mount_probe",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
            env=dict(os.environ, OSTREEWATCH_SKIP_SETUP="1"),
        )
        for line in r.stdout.splitlines():
            if line.startswith("OSTREEWATCH_UNIT_START_MS="):
                times.append(float(line.split("=", 1)[1]) / 1000)
        if r.returncode != 0:
            f.notes.append(
                f"a run failed: {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]}"
            )
    if not times:
        f.error = "no run reported its start time"
        return f
    s = summary(times)
    f.measured = spread_ms(s)
    f.met = s["p50"] <= 0.150
    f.header = ["run", "ExecMainStart to READY=1"]
    f.rows = [[str(i + 1), ms(t)] for i, t in enumerate(times)]
    return f


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer events and shorter windows (~3 minutes)")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated figures: ready,idle,latency,storm,rescan,unit; the output keeps the other figures "
        "of the existing file",
    )
    ap.add_argument("--output", default=os.path.join(REPO, "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    only = set(filter(None, args.only.split(",")))
    unknown = only - set(GROUPS)
    if unknown:
        ap.error(f"--only: unknown figure(s) {', '.join(sorted(unknown))} (choose from {', '.join(GROUPS)})")
    old_text = ""
    if only and os.path.exists(args.output):
        old_text = pathlib.Path(args.output).read_text()
        try:
            merge_kept([], old_text, only)
        except ValueError as e:
            ap.error(f"--only: {args.output}: {e}")
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.monotonic()
    base = tempfile.mkdtemp(prefix="owbench-")
    figures: list[Figure] = []
    state: dict[str, Any] = {}
    bus = env = None

    def attempt(name: str, placeholder: Figure, fn: Callable[[], Any]) -> None:
        if only and name not in only:
            return
        log(f"figure: {name}")
        try:
            out = fn()
            got = out if isinstance(out, list) else [out]
        except Exception as exc:  # noqa: BLE001 - a figure that cannot run is reported, the others still run
            traceback.print_exc()
            placeholder.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
            got = [placeholder]
        for f in got:
            f.group = name
        figures.extend(got)

    try:
        bus = PrivateBus()
        env = Env(base)
        attempt(
            "ready",
            Figure("ready", "start to READY=1, bundled sample", "<= 120 ms median"),
            lambda: fig_ready(bus, plan, state),
        )
        attempt("idle", Figure("idle", "wake-ups and CPU idle", "0 wake-ups"), lambda: fig_idle(bus, env, plan))
        attempt(
            "latency",
            Figure("latency", "latency: deploy, entry, grubenv, mount; GetAll; RSS", "p50 <= 25 ms, p99 <= 60 ms"),
            lambda: fig_latency(bus, env, plan, state),
        )
        attempt(
            "storm",
            Figure("storm", "mount storm", "<= 1 % CPU, 0 signals, <= 100 ms"),
            lambda: fig_storm(bus, env, plan),
        )
        attempt(
            "rescan",
            Figure(
                "rescan",
                "rescan cost (read_snapshot)",
                "1,000 entries <= 30 ms, 10,000 mountinfo lines <= 3 ms, linear",
            ),
            lambda: fig_rescan(env, plan),
        )
        attempt(
            "unit",
            Figure("unit", "the unit's start under real systemd", "<= 150 ms median"),
            lambda: fig_unit_start(plan),
        )
    finally:
        if env:
            env.close()
        if bus:
            bus.close()
        shutil.rmtree(base, ignore_errors=True)
    extra = []
    notes_path = os.path.join(REPO, "bench", "NOTES.md")
    if os.path.exists(notes_path):
        extra = ["", pathlib.Path(notes_path).read_text()]
    command = (
        ".venv/bin/python bench/run.py"
        + (" --quick" if args.quick else "")
        + (f" --only {args.only}" if args.only else "")
    )
    blocks = [figure_block(f) for f in figures]
    if only:
        blocks = merge_kept(blocks, old_text, only)
        command += f" (the other figures: kept from the earlier {os.path.basename(args.output)})"
    text = render(
        blocks, machine_info(), command, "quick" if args.quick else "full", started, time.monotonic() - t_start, extra
    )
    # bench/startup.py's section (boot cost, its own command) is kept as that command last wrote it.
    kept = ""
    if os.path.exists(args.output):
        old = pathlib.Path(args.output).read_text()
        if startup.BEGIN in old and startup.END in old:
            kept = startup.BEGIN + old.split(startup.BEGIN, 1)[1].split(startup.END, 1)[0] + startup.END + "\n"
    with open(args.output, "w") as fh:
        fh.write(text + ("\n" + kept if kept else ""))
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
