"""Boot cost: ostreewatchd's start to READY=1 against the interpreter's own start (issue 21).

One command: `.venv/bin/python bench/startup.py` (writes its section of BENCHMARKS.md;
`--print` only prints it; `--repo DIR` measures another checkout, e.g. `git archive main`).
All four figures of issue 21 in one run: `.venv/bin/python bench/startup.py --all` (as root,
about an hour here): the real boots with and without the unit first (bench/realboot.py,
`--real-boots N` a group), then these measures, then `bench/run.py --only idle,latency,storm`
(idle wake-ups, change latency, RSS, mount storm), whose summary rows this section quotes.

Interleaved, fresh processes: `/usr/bin/python3 -I -c pass` (Popen to exit), then the daemon
(Popen to the arrival of READY=1 at the bench's NOTIFY_SOCKET), N times. The daemon runs as the
installed script runs it (tests/fixtures/startlaunch.py: the system python, -I, the package on a
plain sys.path), `--bus system` with DBUS_SYSTEM_BUS_ADDRESS at a private dbus-daemon, watching
the bundled rhcos sample materialized once (a host's paths, not --sample, which would add the
sample's materialization to every start). RSS at READY=1 and 2 s later (bus joined, everything
loaded: settled), split into anon, file and stack by /proc/PID/smaps. Then `-X importtime` runs
of the same command: every module imported before READY=1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import realboot  # noqa: E402
from bench.daemonrun import PrivateBus  # noqa: E402
from bench.harness import NotifyListener  # noqa: E402

PYTHON = "/usr/bin/python3"
LAUNCH = os.path.join(REPO, "tests", "fixtures", "startlaunch.py")
SITE = os.path.join(REPO, ".venv", "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
GOAL_RATIO = 3.0
BEGIN, END = "<!-- bench/startup.py -->", "<!-- /bench/startup.py -->"


def _stack_pointers(pid: int) -> list[int]:
    """Each thread's stack pointer (/proc/PID/task/TID/syscall: a thread blocked in a syscall; all are, idle)."""
    sps = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) >= 9:  # "NR ARG1..ARG6 SP PC"; "running" has no SP
            sps.append(int(fields[7], 16))
    return sps


def memory(pid: int) -> dict[str, int]:
    """The RSS split by /proc/PID/smaps, kB: rss, anon (heap, the Python objects and malloc), file
    (the interpreter and the shared libraries, shared with other processes), stack (the main and
    every thread's stack: the mapping holding its stack pointer); threads; and every file mapping's RSS
    under "file:NAME"."""
    sps = _stack_pointers(pid)
    out = {"rss": 0, "anon": 0, "file": 0, "stack": 0, "threads": len(os.listdir(f"/proc/{pid}/task"))}
    name, start, end = "", 0, 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 6)
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = head[0].split("-")
                start, end = int(lo, 16), int(hi, 16)
                name = head[5].strip() if len(head) > 5 else ""
            elif head[0] == "Rss:":
                kb = int(head[1])
                out["rss"] += kb
                if name == "[stack]" or any(start <= sp < end for sp in sps):
                    out["stack"] += kb
                elif name.startswith("/"):
                    out["file"] += kb
                    out[f"file:{name}"] = out.get(f"file:{name}", 0) + kb
                else:  # anonymous, [heap], [vdso]...
                    out["anon"] += kb
    return out


class Host:
    """The rhcos sample materialized once; the daemon's argv and environment to watch it."""

    def __init__(self, base: str, repo: str, bus: PrivateBus) -> None:
        from ostreewatch import sample

        self.paths = sample.materialize(os.path.join(base, "host"))
        self.base = base
        self.repo = repo
        self.bus = bus

    def argv(self, *pyflags: str) -> list[str]:
        p = self.paths
        return [
            PYTHON,
            "-I",
            *pyflags,
            LAUNCH,
            "--bus",
            "system",
            "--sysroot",
            p.sysroot,
            "--mountinfo",
            p.mountinfo,
            "--cmdline",
            p.cmdline,
            "--run",
            p.run,
        ]

    def env(self, notify: str, mark: bool = False) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            NOTIFY_SOCKET=notify,
            DBUS_SYSTEM_BUS_ADDRESS=self.bus.address,
            RUNTIME_DIRECTORY=os.path.join(self.base, "run-ostreewatch"),  # status.json, as under the unit
            OW_LAUNCH_PATH=self.repo,
            OW_LAUNCH_SITE=SITE,
        )
        if mark:
            env["OW_READY_MARK"] = "1"
        return env


def interpreter_run() -> float:
    t0 = time.monotonic()
    subprocess.run([PYTHON, "-I", "-c", "pass"], check=True)
    return time.monotonic() - t0


def daemon_run(host: Host, base: str) -> tuple[float, dict[str, int], dict[str, int]]:
    """Seconds to READY=1, memory() at READY=1 and 2 s later (settled: the bus joined, all loaded)."""
    notify = NotifyListener(base)
    proc = None
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(host.argv(), env=host.env(notify.path), stderr=subprocess.DEVNULL)
        t1 = notify.wait_for("READY=1", 30)
        if t1 is None:
            raise RuntimeError(f"no READY=1 (exit {proc.poll()})")
        mem0 = memory(proc.pid)
        notify.drain()
        time.sleep(2.0)
        mem1 = memory(proc.pid)
        return t1 - t0, mem0, mem1
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        notify.close()


_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtimes(host: Host, base: str, runs: int) -> tuple[dict[str, tuple[int, int, int]], list[str]]:
    """module -> (median self µs, median cumulative µs, depth) of the imports before READY=1; module order."""
    seen: dict[str, list[tuple[int, int, int]]] = {}
    order: list[str] = []
    for _ in range(runs):
        notify = NotifyListener(base)
        err = os.path.join(base, "importtime.txt")
        try:
            with open(err, "w") as fh:
                proc = subprocess.Popen(host.argv("-X", "importtime"), env=host.env(notify.path, mark=True), stderr=fh)
                if notify.wait_for("READY=1", 30) is None:
                    raise RuntimeError("no READY=1 in the -X importtime run")
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        finally:
            notify.close()
        with open(err) as fh:
            text = fh.read()
        before = text.split("#OW-READY", 1)[0]
        for m in _LINE.finditer(before):
            name = m.group(4)
            if name not in seen:
                seen[name] = []
                order.append(name)
            seen[name].append((int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2))
    table = {
        name: (
            int(statistics.median(v[0] for v in vals)),
            int(statistics.median(v[1] for v in vals)),
            vals[0][2],
        )
        for name, vals in seen.items()
    }
    return table, order


def measure(repo: str, runs: int, import_runs: int) -> dict[str, object]:
    load_start = os.getloadavg()[0]
    base = tempfile.mkdtemp(prefix="owbench-start-")
    bus = PrivateBus()
    try:
        host = Host(base, repo, bus)
        interp: list[float] = []
        ready: list[float] = []
        mem0: list[dict[str, int]] = []
        mem1: list[dict[str, int]] = []
        interpreter_run()  # warm the page cache for both
        daemon_run(host, base)
        for _ in range(runs):
            interp.append(interpreter_run())
            t, m0, m1 = daemon_run(host, base)
            ready.append(t)
            mem0.append(m0)
            mem1.append(m1)
        table, order = importtimes(host, base, import_runs)
    finally:
        bus.close()
        shutil.rmtree(base, ignore_errors=True)
    return {
        "interp": interp,
        "ready": ready,
        "rss0": [m["rss"] for m in mem0],
        "rss1": [m["rss"] for m in mem1],
        "mem0": mem0,
        "mem1": mem1,
        "imports": table,
        "order": order,
        "load": (load_start, os.getloadavg()[0]),
    }


def _median_kb(mems: list[dict[str, int]], key: str) -> float:
    return statistics.median(m.get(key, 0) for m in mems)


def _memory_table(mem0: list[dict[str, int]], mem1: list[dict[str, int]]) -> list[str]:
    """The RSS at READY=1 and settled, split (medians of the runs), and the largest file mappings settled."""

    def mb(mems: list[dict[str, int]], key: str) -> str:
        kb = _median_kb(mems, key)
        return f"{kb / 1024:.1f} MB" if kb >= 1024 else f"{kb:.0f} kB"

    out = [
        "",
        "RSS split by /proc/PID/smaps (medians of the runs): anon = the heap and anonymous mappings (the "
        "Python objects, malloc); file = the interpreter and the shared libraries mapped (shared with other "
        "processes, but counted in RSS); stack = the main and the threads' stacks (the mapping holding each "
        "thread's stack pointer, /proc/PID/task/TID/syscall):\n",
        "| part | at READY=1 | settled (2 s later) |",
        "|---|---|---|",
    ]
    for key in ("anon", "file", "stack"):
        out.append(f"| {key} | {mb(mem0, key)} | {mb(mem1, key)} |")
    out.append(
        f"| threads | {_median_kb(mem0, 'threads'):.0f} | {_median_kb(mem1, 'threads'):.0f} |",
    )
    out.append(f"| all (VmRSS) | {mb(mem0, 'rss')} | {mb(mem1, 'rss')} |")
    files = sorted({k for m in mem1 for k in m if k.startswith("file:")}, key=lambda k: -_median_kb(mem1, k))
    big = [f"`{os.path.basename(k[5:])}` {mb(mem1, k)}" for k in files if _median_kb(mem1, k) >= 100]
    out.append("")
    out.append(f"- file mappings of 100 kB or more, settled: {', '.join(big)}.")
    return out


RUN_GROUPS = ("idle", "latency", "storm")


def run_figures() -> None:
    """bench/run.py --only idle,latency,storm: it writes BENCHMARKS.md (keeping this section and the other figures)."""
    subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "run.py"), "--only", ",".join(RUN_GROUPS)], check=True, cwd=REPO
    )


def run_rows(path: str) -> list[str]:
    """The summary rows of bench/run.py's idle, latency and storm figures as BENCHMARKS.md holds them."""
    with open(path) as f:
        text = f.read()
    marks = re.finditer(r"^<!-- figure (\S+) \| (.*?) -->$", text, re.M)  # bench/report.py's markers
    return [m.group(2) for m in marks if m.group(1) in RUN_GROUPS]


def _real_rows(boots: list[realboot.Boot] | None, run_cmd: str) -> list[str]:
    if boots is None:
        return [
            "| real boots: `ostree-remount.service` active to READY=1; `local-fs.target` with and without the unit "
            "| not measured in this run (`--real-boots N`) | within the boots' spread | - |"
        ]
    summary = realboot.summarize(boots)
    met = {True: "yes", False: "**no**"}.get(summary.get("within"), "-")  # type: ignore[arg-type]
    return [
        "| real boots: `ostree-remount.service` active to READY=1; `local-fs.target` with and without the unit "
        f"(`{run_cmd}`) | {realboot.summary_line(summary)} | within the boots' spread | {met} |"
    ]


def render(
    res: dict[str, object],
    command: str,
    runs: int,
    import_runs: int,
    before: dict[str, object] | None = None,
    before_repo: str = "",
    boots: list[realboot.Boot] | None = None,
    rows: list[str] | None = None,
    loads: list[str] | None = None,
) -> str:
    interp: list[float] = res["interp"]  # type: ignore[assignment]
    ready: list[float] = res["ready"]  # type: ignore[assignment]
    rss0: list[int] = res["rss0"]  # type: ignore[assignment]
    rss1: list[int] = res["rss1"]  # type: ignore[assignment]
    table: dict[str, tuple[int, int, int]] = res["imports"]  # type: ignore[assignment]
    load: tuple[float, float] = res["load"]  # type: ignore[assignment]
    mi, mr = statistics.median(interp), statistics.median(ready)
    ratio = mr / mi
    out = [
        BEGIN,
        "## Boot cost: start to READY=1 against the interpreter (issue 21)\n",
        f"- command: `{command}`; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{runs} interleaved pairs of fresh processes, {import_runs} `-X importtime` runs; machine load "
        f"(1-minute load average, {os.cpu_count()} cores) {load[0]:.1f} at the start, {load[1]:.1f} at the end\n",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
        f"| start to READY=1 / `{PYTHON} -I -c pass` | {ratio:.1f}x: median {mr * 1000:.1f} ms "
        f"(min-max {min(ready) * 1000:.1f}-{max(ready) * 1000:.1f}) / median {mi * 1000:.1f} ms "
        f"(min-max {min(interp) * 1000:.1f}-{max(interp) * 1000:.1f}) | <= {GOAL_RATIO:.0f}x | "
        f"{'yes' if ratio <= GOAL_RATIO else '**no**'} |",
        f"| RSS after READY=1 | at READY=1 median {statistics.median(rss0) / 1024:.1f} MB; 2 s later (bus joined, "
        f"all loaded) median {statistics.median(rss1) / 1024:.1f} MB | <= 25 MB | "
        f"{'yes' if statistics.median(rss1) <= 25 * 1024 else '**no**'} |",
        *_real_rows(boots, "the table below"),
        *(
            rows
            if rows
            else [
                "| idle wake-ups, change latency, mount storm | `.venv/bin/python bench/run.py` (the figures above) "
                "| unchanged | see above |"
            ]
        ),
        *(
            ["", f"- the rows after the real boots': `bench/run.py --only {','.join(RUN_GROUPS)}`, run by this command"]
            if rows
            else [""]
        ),
        *([f"- machine load (`uptime`): {line}" for line in loads] if loads else []),
        *_memory_table(res["mem0"], res["mem1"]),  # type: ignore[arg-type]
        "",
        f"The daemon: `{' '.join(['NOTIFY_SOCKET=...', 'DBUS_SYSTEM_BUS_ADDRESS=...', PYTHON, '-I'])} "
        "tests/fixtures/startlaunch.py --bus system --sysroot ... --mountinfo ... --cmdline ... --run ...` "
        "(the rhcos sample's files). Imports before READY=1 (`-X importtime`, medians; "
        "modules of 0.3 ms or more cumulative, and every ostreewatch module), in import order:\n",
        "| module | self | cumulative |",
        "|---|---|---|",
    ]
    for name in res["order"]:  # type: ignore[attr-defined]
        self_us, cum_us, depth = table[name]
        if cum_us >= 300 or name.startswith("ostreewatch"):
            out.append(f"| {'&nbsp;' * 2 * depth}`{name}` | {self_us / 1000:.1f} ms | {cum_us / 1000:.1f} ms |")
    total = sum(c for c, d in ((v[1], v[2]) for v in table.values()) if d == 0)
    out.append("")
    out.append(f"- {len(table)} modules before READY=1, {total / 1000:.1f} ms of imports in all (site included).")
    out.append(
        "- `-I` as in the issue's baseline; the installed script (make install) runs `/usr/bin/python3` without it. "
        "`-I` only drops the user site and the PYTHON* variables; `-S` in ExecStart would drop "
        "/usr/lib/python3/dist-packages (Debian) and site-packages (Fedora), where dbus-next, pyinotify and "
        "systemd-python live, so the unit uses neither (`/usr/bin/python3 -I -S -c 'import sys; print(sys.path)'`)."
    )
    out.append(
        "- Settled, the daemon has asyncio, pyinotify, systemd.journal, dbus-next, the service and the boot "
        "writer loaded (what it needs to serve), but not what they would load and it never uses: asyncio "
        "without ssl (libssl, libcrypto), dbus-next without gi (its GLib bus: PyGObject, GLib, GIO), the boot "
        "writer without secrets (hmac, hashlib: libcrypto again); daemon.py's `_import_without`."
    )
    if boots is not None:
        out += ["", "### Real boots with and without the unit (bench/realboot.py)", ""]
        out.append(realboot.render(boots, realboot.summarize(boots), command).rstrip("\n"))
    if before is not None:
        out.extend(_compare(before, res, before_repo))
    out.append(END)
    return "\n".join(out) + "\n"


def _compare(before: dict[str, object], now: dict[str, object], before_repo: str) -> list[str]:
    """The same measures on another checkout (--before), and the imports before READY=1 side by side."""
    b_int: list[float] = before["interp"]  # type: ignore[assignment]
    b_ready: list[float] = before["ready"]  # type: ignore[assignment]
    b_rss0: list[int] = before["rss0"]  # type: ignore[assignment]
    b_rss1: list[int] = before["rss1"]  # type: ignore[assignment]
    b_table: dict[str, tuple[int, int, int]] = before["imports"]  # type: ignore[assignment]
    n_table: dict[str, tuple[int, int, int]] = now["imports"]  # type: ignore[assignment]
    ratio = statistics.median(b_ready) / statistics.median(b_int)
    out = [
        "",
        f"Before (`--before {before_repo}`: `git archive main | tar -x -C {before_repo}` of the commit below the "
        "change; measured in the same run, after the figures above): start to READY=1 "
        f"{ratio:.1f}x, median {statistics.median(b_ready) * 1000:.1f} ms against "
        f"{statistics.median(b_int) * 1000:.1f} ms; RSS at READY=1 median {statistics.median(b_rss0) / 1024:.1f} MB, "
        f"settled (2 s later) {statistics.median(b_rss1) / 1024:.1f} MB. "
        "Imports before READY=1, cumulative (`-X importtime` medians; modules of 1 ms or more in either, "
        "and every ostreewatch module):\n",
        "| module | before | now |",
        "|---|---|---|",
    ]
    names = [
        n
        for n in {*b_table, *n_table}
        if n.startswith("ostreewatch") or max(b_table.get(n, (0, 0, 0))[1], n_table.get(n, (0, 0, 0))[1]) >= 1000
    ]
    names.sort(key=lambda n: -max(b_table.get(n, (0, 0, 0))[1], n_table.get(n, (0, 0, 0))[1]))

    def cell(table: dict[str, tuple[int, int, int]], name: str) -> str:
        return f"{table[name][1] / 1000:.1f} ms" if name in table else "not imported"

    out.extend(f"| `{n}` | {cell(b_table, n)} | {cell(n_table, n)} |" for n in names)
    b_total = sum(v[1] for v in b_table.values() if v[2] == 0)
    n_total = sum(v[1] for v in n_table.values() if v[2] == 0)
    out.append(f"| all ({len(b_table)} / {len(n_table)} modules) | {b_total / 1000:.1f} ms | {n_total / 1000:.1f} ms |")
    return out


def write_section(path: str, section: str) -> None:
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="interleaved pairs (default 15)")
    ap.add_argument("--import-runs", type=int, default=5, help="-X importtime runs (default 5)")
    ap.add_argument("--repo", default=REPO, help="the checkout whose ostreewatch is measured (default: this one)")
    ap.add_argument(
        "--before",
        default=None,
        metavar="DIR",
        help="also measure the checkout DIR (e.g. `git archive main`) to compare",
    )
    ap.add_argument("--print", action="store_true", help="print the section instead of writing BENCHMARKS.md")
    ap.add_argument(
        "--real-boots",
        type=int,
        default=0,
        metavar="N",
        help="also boot the VM rig's image N times with the unit and N times masked (bench/realboot.py; as root)",
    )
    ap.add_argument(
        "--with-run", action="store_true", help="also run bench/run.py --only idle,latency,storm and quote its rows"
    )
    ap.add_argument("--all", action="store_true", help="issue 21's four figures: --real-boots 5 --with-run")
    args = ap.parse_args(argv)
    if args.all:
        args.real_boots = args.real_boots or 5
        args.with_run = True
    if args.real_boots < 0:
        ap.error("--real-boots must be 0 or more")
    if (args.real_boots or args.with_run) and args.print:
        ap.error("--print measures only the start; --real-boots and --with-run write BENCHMARKS.md")
    loads = [f"{time.strftime('%H:%M UTC', time.gmtime())} at the start: {_uptime()}"]
    boots = None
    if args.real_boots:
        boots = realboot.run(Path(realboot.WORK), args.real_boots, 1)
        loads.append(f"{time.strftime('%H:%M UTC', time.gmtime())} after the real boots: {_uptime()}")
    res = measure(os.path.abspath(args.repo), args.runs, args.import_runs)
    before = measure(os.path.abspath(args.before), args.runs, args.import_runs) if args.before else None
    rows = None
    if args.with_run:
        loads.append(f"{time.strftime('%H:%M UTC', time.gmtime())} before bench/run.py: {_uptime()}")
        run_figures()
        rows = run_rows(os.path.join(REPO, "BENCHMARKS.md"))
        loads.append(f"{time.strftime('%H:%M UTC', time.gmtime())} at the end: {_uptime()}")
    command = ".venv/bin/python bench/startup.py" + (f" --repo {args.repo}" if args.repo != REPO else "")
    command += f" --runs {args.runs}" if args.runs != 15 else ""
    command += f" --import-runs {args.import_runs}" if args.import_runs != 5 else ""
    command += f" --before {args.before}" if args.before else ""
    if args.all:
        command += " --all" + (f" --real-boots {args.real_boots}" if args.real_boots != 5 else "")
    else:
        command += (f" --real-boots {args.real_boots}" if args.real_boots else "") + (
            " --with-run" if args.with_run else ""
        )
    section = render(
        res,
        command,
        args.runs,
        args.import_runs,
        before,
        args.before or "",
        boots,
        rows,
        loads if boots or rows else None,
    )
    if args.print:
        print(section)
    else:
        write_section(os.path.join(REPO, "BENCHMARKS.md"), section)
        print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
