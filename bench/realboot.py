"""Real boots with and without the unit on one image (issue 21, goal 3): what ostreewatch.service costs a boot.

    .venv/bin/python -m bench.realboot --boots 5     # as root; about 2 x (5 + 1) boots of 1-5 min each

One image (tests/vm/rig.py build_image, bootupd's static grub.cfg), booted alternately with the
unit and with it masked, interleaved (with, without, without, with, ...) so that a drift of the
machine's load hits both groups. Masked offline between boots (`Image.mounted()`): a symlink
`etc/systemd/system/ostreewatch.service -> /dev/null` in the deployment's /etc, nothing else
changed (the preset's wants link stays; masked, D-Bus activation cannot start the unit either).
The first boot of each group is a warm-up and is left out of the figures (the image's first boot
makes the machine-id, the journal, the first ldconfig/udev caches; the first masked boot is the first
with the other unit set).

Per boot, from the guest's own records (tests/vm/guest/owvm-guest: units.txt, analyze-time.txt) and a
per-boot script that adds the manager's timestamps and the daemon's CPU time: ostree-remount.service
active, ostreewatch's READY=1 (ActiveEnterTimestampMonotonic: Type=notify), local-fs.target active,
userspace time (`systemd-analyze time`). Printed: a table of the boots, each group's median and spread
(min-max, IQR), and the cost: (local-fs.target with - without, medians) / userspace time.
Figures, never pass/fail; not in CI (too long).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from tests.vm import rig  # noqa: E402

UNIT = "ostreewatch.service"
WORK = "/var/tmp/ow-realboot"  # the image and every boot's records (console, qemu.argv, records/)
# What the guest records beside its standard records: the manager's timestamps (userspace start,
# finish) and the daemon's CPU time (systemd's cgroup accounting, and /proc/PID/stat as a fallback).
SCRIPT = r"""
rec manager.txt systemctl show -p UserspaceTimestampMonotonic -p FinishTimestampMonotonic
rec daemon-cpu.txt systemctl show ostreewatch.service -p CPUUsageNSec -p MainPID
pid="$(systemctl show ostreewatch.service -p MainPID --value)"
if [ "${pid:-0}" != 0 ]; then rec daemon-stat.txt cat "/proc/$pid/stat"; fi
"""
_SPAN = re.compile(r"(\d+(?:\.\d+)?)(h|min|ms|us|µs|s)\b")
_UNITS = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}


def parse_span(text: str) -> float:
    """A systemd time span as systemd-analyze prints it ("1min 2.345s", "812ms") in seconds."""
    parts = _SPAN.findall(text)
    if not parts:
        raise ValueError(f"not a time span: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def userspace_seconds(analyze_time: str) -> float | None:
    """The "(userspace)" part of `systemd-analyze time`'s first line, seconds (None: not there)."""
    m = re.search(r"(?:in|\+)\s+([^+=()]+?)\s+\(userspace\)", analyze_time)
    return parse_span(m.group(1)) if m else None


@dataclass
class Boot:
    """One boot's figures, seconds (monotonic: since the kernel started); None where not recorded."""

    name: str
    with_unit: bool
    warmup: bool
    remount: float
    ready: float | None
    local_fs: float
    userspace_start: float | None
    userspace: float | None
    cpu: float | None
    wall: float
    load: float = 0.0  # the host's 1-minute load average when the boot began
    # boot-complete.target active (None: not in the records, or not pulled in by this image). The
    # unit is ordered before it, so it waits for READY=1 where something pulls it in (Debian's
    # grub2-common.service, WantedBy=multi-user.target; greenboot; systemd-bless-boot).
    boot_complete: float | None = None

    @property
    def remount_to_ready(self) -> float | None:
        return self.ready - self.remount if self.ready is not None else None

    @property
    def local_fs_in_userspace(self) -> float | None:
        """local-fs.target active, counted from systemd's start in the real root (what the unit can delay)."""
        return self.local_fs - self.userspace_start if self.userspace_start is not None else None

    @property
    def remount_to_local_fs(self) -> float:
        return self.local_fs - self.remount

    @property
    def boot_complete_in_userspace(self) -> float | None:
        """boot-complete.target active, counted from systemd's start in the real root."""
        if self.boot_complete is None or self.userspace_start is None:
            return None
        return self.boot_complete - self.userspace_start


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def read_boot(result: rig.BootResult, with_unit: bool, warmup: bool) -> Boot:
    """The figures of one boot from its records."""
    units = result.units()

    def at(unit: str, key: str = "ActiveEnterTimestampMonotonic") -> float:
        return rig.monotonic_us(units, unit, key) / 1e6 if unit in units else 0.0

    ready = at(UNIT) if with_unit else 0.0
    manager = _kv(result.text("manager.txt"))
    us_start = int(manager.get("UserspaceTimestampMonotonic", "0") or 0) / 1e6
    cpu: float | None = None
    nsec = _kv(result.text("daemon-cpu.txt")).get("CPUUsageNSec", "")
    if with_unit and nsec.isdigit():
        cpu = int(nsec) / 1e9
    elif with_unit and result.text("daemon-stat.txt"):
        # After the ")" of comm: field 3 is the state; utime and stime are fields 14 and 15.
        fields = result.text("daemon-stat.txt").rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return Boot(
        name=result.name,
        with_unit=with_unit,
        warmup=warmup,
        remount=at("ostree-remount.service"),
        ready=ready or None,
        local_fs=at("local-fs.target"),
        userspace_start=us_start or None,
        userspace=userspace_seconds(result.text("analyze-time.txt")),
        cpu=cpu,
        wall=result.seconds,
        boot_complete=at("boot-complete.target") or None,
    )


def schedule(boots: int, warmup: int) -> list[tuple[str, bool, bool]]:
    """(name, with the unit, warm-up) in boot order: the warm-ups, then pairs alternating which goes first."""
    out: list[tuple[str, bool, bool]] = []
    for i in range(warmup):
        out += [(f"warmup{i + 1}-with", True, True), (f"warmup{i + 1}-without", False, True)]
    for i in range(boots):
        pair = [(f"with{i + 1}", True, False), (f"without{i + 1}", False, False)]
        out += pair if i % 2 == 0 else pair[::-1]
    return out


def set_unit(image: rig.Image, enabled: bool) -> None:
    """Mask or unmask the unit in every deployment's /etc of the image (offline)."""
    with image.mounted() as root:
        etcs = [d / "etc" for d in (root / "ostree/deploy" / rig.STATEROOT / "deploy").iterdir() if d.is_dir()]
        if not etcs:
            raise RuntimeError("no deployment in the image")
        for etc in etcs:
            mask = etc / "systemd/system" / UNIT
            if enabled:
                if mask.is_symlink():
                    mask.unlink()
            else:
                mask.parent.mkdir(parents=True, exist_ok=True)
                if not mask.is_symlink():
                    mask.symlink_to("/dev/null")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] realboot: {msg}", file=sys.stderr, flush=True)


def run(work: Path, boots: int, warmup: int) -> list[Boot]:
    """Build the image into WORK and boot it by schedule(); every boot's figures, warm-ups included."""
    from tests.fixtures import grub_configs

    log(f"building the image in {work}")
    image = rig.build_image(rig.ImageOptions(grub_configs.rig_static()), work)
    enabled = True
    out: list[Boot] = []
    for name, with_unit, is_warmup in schedule(boots, warmup):
        if with_unit != enabled:
            set_unit(image, with_unit)
            enabled = with_unit
        load = os.getloadavg()[0]
        log(f"boot {name} (load {load:.1f})")
        try:
            result = image.boot(name, SCRIPT)
        except rig.BootFailed as e:
            # One boot that never finished is reported and left out; the others still count.
            log(f"boot {name} failed, left out: {str(e).splitlines()[0]}")
            continue
        boot = read_boot(result, with_unit, is_warmup)
        boot.load = load
        (work / "boots" / name / "load.txt").write_text(f"{load:.2f}\n")
        log(f"boot {name}: {result.seconds:.0f} s, local-fs.target at {boot.local_fs:.2f} s")
        out.append(boot)
    return out


def read_kept(work: Path) -> list[Boot]:
    """The boots kept in WORK (an earlier run's --work), in schedule order; for --records."""
    out: list[Boot] = []
    for name, with_unit, is_warmup in schedule(100, 10):
        boot_dir = work / "boots" / name
        if not (boot_dir / "records").is_dir():
            continue
        meta = json.loads((boot_dir / "boot.json").read_text()) if (boot_dir / "boot.json").exists() else {}
        result = rig.BootResult(name, boot_dir / "records", "", meta.get("seconds", 0.0), meta.get("firmware", ""))
        boot = read_boot(result, with_unit, is_warmup)
        load = boot_dir / "load.txt"
        boot.load = float(load.read_text()) if load.exists() else float("nan")
        out.append(boot)
    return out


def stats(values: list[float]) -> dict[str, float]:
    """median, min, max, and the quartiles (inclusive method: defined from 1 value on)."""
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


def _fmt(s: dict[str, float]) -> str:
    return (
        f"median {s['median']:.2f} s (min-max {s['min']:.2f}-{s['max']:.2f}, IQR {s['q1']:.2f}-{s['q3']:.2f}, "
        f"n={s['n']:.0f})"
    )


def summarize(boots: list[Boot]) -> dict[str, object]:
    """Each group's statistics (warm-ups left out) and the cost of the unit as a share of userspace time."""
    out: dict[str, object] = {}
    for group, flag in (("with", True), ("without", False)):
        measured = [b for b in boots if b.with_unit == flag and not b.warmup]
        g: dict[str, dict[str, float]] = {}
        for key in (
            "local_fs_in_userspace",
            "local_fs",
            "remount_to_local_fs",
            "remount_to_ready",
            "boot_complete_in_userspace",
            "userspace",
            "cpu",
        ):
            values = [v for v in (getattr(b, key) for b in measured) if v is not None]
            if values:
                g[key] = stats(values) | {"n": float(len(values))}
        out[group] = g
    w, wo = out["with"], out["without"]
    assert isinstance(w, dict) and isinstance(wo, dict)
    if "local_fs_in_userspace" in w and "local_fs_in_userspace" in wo and "userspace" in wo:
        delta = w["local_fs_in_userspace"]["median"] - wo["local_fs_in_userspace"]["median"]
        base = wo["userspace"]["median"]
        spread = wo["local_fs_in_userspace"]
        out["delta"] = delta
        out["ratio"] = delta / base if base else float("nan")
        # Within the boots' own spread: the with-group's median inside what the boots without the unit gave.
        out["within"] = spread["min"] <= w["local_fs_in_userspace"]["median"] <= spread["max"]
    return out


def _s(v: float | None) -> str:
    return f"{v:.2f} s" if v is not None else "-"


def render(boots: list[Boot], summary: dict[str, object], command: str) -> str:
    """The boots' table, the groups' figures and the cost, markdown."""
    loads = [b.load for b in boots if b.load == b.load] or [0.0]  # NaN: not recorded
    out = [
        f"- command: `{command}`; one image, {len(boots)} boots in this order; 1-minute load average during the "
        f"boots {min(loads):.1f}-{max(loads):.1f} ({os.cpu_count()} cores, shared with other VM boots)",
        "",
        "| boot | unit | ostree-remount active | READY=1 | remount to READY=1 | local-fs.target | local-fs.target "
        "after userspace start | remount to local-fs.target | boot-complete.target after userspace start | "
        "userspace (systemd-analyze) | daemon CPU | wall | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in boots:
        out.append(
            f"| {b.name}{' (warm-up, left out)' if b.warmup else ''} | {'yes' if b.with_unit else 'masked'} | "
            f"{_s(b.remount)} | {_s(b.ready)} | {_s(b.remount_to_ready)} | {_s(b.local_fs)} | "
            f"{_s(b.local_fs_in_userspace)} | {_s(b.remount_to_local_fs)} | {_s(b.boot_complete_in_userspace)} | "
            f"{_s(b.userspace)} | "
            f"{f'{b.cpu * 1000:.0f} ms' if b.cpu is not None else '-'} | {b.wall:.0f} s | "
            f"{f'{b.load:.1f}' if b.load == b.load else '-'} |"
        )
    out.append("")
    names = {
        "local_fs_in_userspace": "local-fs.target after userspace start",
        "local_fs": "local-fs.target (since the kernel started)",
        "remount_to_local_fs": "ostree-remount active to local-fs.target",
        "remount_to_ready": "ostree-remount active to READY=1",
        "boot_complete_in_userspace": "boot-complete.target after userspace start (waits for READY=1)",
        "userspace": "userspace time",
        "cpu": "daemon CPU time (at the records)",
    }
    out += ["| figure | with the unit | masked |", "|---|---|---|"]
    w, wo = summary["with"], summary["without"]
    assert isinstance(w, dict) and isinstance(wo, dict)
    for key, title in names.items():
        out.append(f"| {title} | {_fmt(w[key]) if key in w else '-'} | {_fmt(wo[key]) if key in wo else '-'} |")
    if "ratio" in summary:
        out.append("")
        out.append(
            f"- cost: local-fs.target after userspace start, median with - median masked = {summary['delta']:+.2f} s "
            f"= {summary['ratio'] * 100:+.1f} % of the masked boots' median userspace time; the with-unit median "
            f"{'lies inside' if summary['within'] else 'lies outside'} the masked boots' min-max."
        )
    return "\n".join(out) + "\n"


def summary_line(summary: dict[str, object]) -> str:
    """One line for a summary table."""
    w, wo = summary["with"], summary["without"]
    assert isinstance(w, dict) and isinstance(wo, dict)
    if "ratio" not in summary:
        return "not measured"
    lw, lo = w["local_fs_in_userspace"], wo["local_fs_in_userspace"]
    rr = w.get("remount_to_ready")
    ready = (
        f"ostree-remount active to READY=1 median {rr['median']:.2f} s (min-max {rr['min']:.2f}-{rr['max']:.2f}); "
        if rr
        else ""
    )
    return (
        f"{ready}local-fs.target after userspace start with the unit median {lw['median']:.2f} s "
        f"(min-max {lw['min']:.2f}-{lw['max']:.2f}), masked {lo['median']:.2f} s "
        f"(min-max {lo['min']:.2f}-{lo['max']:.2f}), n={lw['n']:.0f}+{lo['n']:.0f}: {summary['delta']:+.2f} s = "
        f"{summary['ratio'] * 100:+.1f} % of userspace time ({wo['userspace']['median']:.1f} s)"
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench.realboot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--boots", type=int, default=5, help="measured boots per group (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up boots per group, left out (default 1)")
    ap.add_argument("--work", default=WORK, help="the image's directory (default %(default)s)")
    ap.add_argument(
        "--records", action="store_true", help="boot nothing: the figures of the boots kept in --work by an earlier run"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.boots < 1 or args.warmup < 0:
        ap.error("--boots must be at least 1 and --warmup at least 0")
    if args.records:
        boots = read_kept(Path(args.work))
        print(render(boots, summarize(boots), f"python -m bench.realboot --records --work {args.work}"))
        return 0
    if os.geteuid() != 0:
        ap.error("needs root (losetup, mount, QEMU)")
    boots = run(Path(args.work), args.boots, args.warmup)
    command = f"python -m bench.realboot --boots {args.boots}" + (
        f" --warmup {args.warmup}" if args.warmup != 1 else ""
    )
    print(render(boots, summarize(boots), command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
