"""Real-boot figures from the guest's records (BENCHMARKS.md "Real boot"); figures, never assertions.

    .venv/bin/python -m tests.vm.figures BOOT_DIR...

BOOT_DIR: a boot's directory under an image's work dir (OSTREEWATCH_VM_KEEP=1 keeps them:
/var/tmp/ow-vm-*/CHAIN/boots/NAME), holding `records/` as tests/vm/rig.py copied them. From
systemd's own unit timestamps (`systemctl show`, monotonic microseconds) recorded in the guest:
the unit's start to READY=1 (ExecMainStart to ActiveEnter: Type=notify), ostree-remount.service
active to ostreewatch's READY=1, local-fs.target's activation, READY=1 as a share of it, the
daemon's RSS after boot (VmRSS), its place in `systemd-analyze blame`, and the wall time of the boot.
The boot's cost with and without the unit, on one image over several interleaved boots, is
bench/realboot.py's (issue 21).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from tests.vm import rig


def figures(result: rig.BootResult) -> dict[str, str]:
    """The figures of one boot, formatted."""
    units = result.units()

    def at(unit: str, key: str) -> float:
        return rig.monotonic_us(units, unit, key) / 1e6

    start = at("ostreewatch.service", "ExecMainStartTimestampMonotonic")
    ready = at("ostreewatch.service", "ActiveEnterTimestampMonotonic")
    remount = at("ostree-remount.service", "ActiveEnterTimestampMonotonic")
    remount_took = remount - at("ostree-remount.service", "ExecMainStartTimestampMonotonic")
    local_fs = at("local-fs.target", "ActiveEnterTimestampMonotonic")
    rss = re.search(r"(?m)^VmRSS:\s+(\d+) kB", result.text("daemon-status.txt"))
    # Among services: under TCG the device units (udev's coldplug) fill the top of the list.
    blame = [w[-1] for w in map(str.split, result.text("blame.txt").splitlines()) if w and w[-1].endswith(".service")]
    startup = (result.text("analyze-time.txt").splitlines() or [""])[0]
    place = blame.index("ostreewatch.service") + 1 if "ostreewatch.service" in blame else 0
    return {
        "boot": result.name,
        "start to READY=1": f"{ready - start:.2f} s" if ready else "- (not started)",
        "ostree-remount active to READY=1": f"{ready - remount:.2f} s" if ready else "-",
        # The peer ordered like it: what the same boot gave ostree-remount.service from start to active.
        "start to READY=1 / ostree-remount's start": f"{(ready - start) / remount_took:.0f}x"
        if ready and remount_took > 0
        else "-",
        "local-fs.target active": f"{local_fs:.2f} s",
        # What else the boot did after ostree-remount before local-fs.target (the unit is not
        # ordered before it: a gap longer than without the unit is CPU the two shared).
        "ostree-remount active to local-fs.target": f"{local_fs - remount:.2f} s",
        "RSS after boot": f"{int(rss.group(1)) / 1024:.1f} MB" if rss else "-",
        "place in blame (services)": str(place) if place else "-",
        "startup (systemd-analyze time)": startup.removeprefix("Startup finished in ").strip() or "-",
        "boot wall time (qemu)": f"{result.seconds:.0f} s" if result.seconds else "-",
    }


def table(rows: list[dict[str, str]]) -> str:
    """A markdown table of figure rows."""
    if not rows:
        return ""
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(r[k] for k in keys) + " |" for r in rows]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """Print the figures table of the boot directories given."""
    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("-"):
        print(
            "usage: python -m tests.vm.figures BOOT_DIR...   (each a boots/NAME directory of a kept VM run;\n"
            "       with and without the unit over several boots: python -m bench.realboot)",
            file=sys.stderr,
        )
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    rows = []
    for arg in argv:
        boot = Path(arg)
        if not (boot / "records").is_dir():
            print(f"{arg}: not a boot directory (no records/ in it)", file=sys.stderr)
            return 1
        meta = json.loads((boot / "boot.json").read_text()) if (boot / "boot.json").exists() else {}
        result = rig.BootResult(boot.name, boot / "records", "", meta.get("seconds", 0.0), meta.get("firmware", ""))
        rows.append(figures(result))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
