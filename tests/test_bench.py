"""bench/realboot.py and bench/startup.py's issue-21 options: usage, the boot order, the figures from records.

No VM is booted and nothing is timed here: the boots are `python -m bench.realboot` (docs/vm-rig.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import realboot, startup
from tests.vm import rig

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.unit

# `systemd-analyze time` as systemd 262 printed it in the rig's guest, with and without minutes.
ANALYZE = (
    "Startup finished in 9.733s (kernel) + 21.047s (initrd) + 1min 2.402s (userspace) = 1min 33.183s\n"
    "multi-user.target reached after 1min 2.120s in userspace.\n"
)


def test_realboot_help_and_bad_counts() -> None:
    ok = subprocess.run([sys.executable, "-m", "bench.realboot", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and "--boots" in ok.stdout and "--warmup" in ok.stdout
    for bad in (["--boots", "0"], ["--warmup", "-1"], ["--boots", "x"]):
        r = subprocess.run([sys.executable, "-m", "bench.realboot", *bad], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and "usage:" in r.stderr, bad
    args = realboot.parser().parse_args([])
    assert (args.boots, args.warmup, args.work) == (5, 1, realboot.WORK)


def test_startup_refuses_print_with_the_long_parts() -> None:
    for bad in (["--print", "--all"], ["--print", "--real-boots", "2"], ["--real-boots", "-1"]):
        with pytest.raises(SystemExit) as e:
            startup.main(bad)
        assert e.value.code == 2, bad


def test_schedule_warmups_first_then_interleaved() -> None:
    order = realboot.schedule(5, 1)
    assert [w for _, _, w in order] == [True, True] + [False] * 10
    assert [u for _, u, w in order if w] == [True, False]
    measured = [u for _, u, w in order if not w]
    assert measured.count(True) == measured.count(False) == 5
    # Pairs alternate which group goes first (with, without, without, with...): a drift hits both.
    pairs = [tuple(measured[i : i + 2]) for i in range(0, 10, 2)]
    assert set(pairs) == {(True, False), (False, True)} and all(pairs[i] != pairs[i + 1] for i in range(4))
    assert len({n for n, _, _ in order}) == 12


def test_spans_as_systemd_analyze_prints_them() -> None:
    assert realboot.parse_span("1min 2.402s") == pytest.approx(62.402)
    assert realboot.parse_span("812ms") == pytest.approx(0.812)
    assert realboot.parse_span("1h 2min 3s") == pytest.approx(3723)
    assert realboot.userspace_seconds(ANALYZE) == pytest.approx(62.402)
    assert realboot.userspace_seconds("Bootup is not yet finished.\n") is None


def _records(tmp: Path, ready_us: int, nsec: str) -> rig.BootResult:
    tmp.mkdir()
    (tmp / "units.txt").write_text(
        f"Id=ostreewatch.service\nActiveEnterTimestampMonotonic={ready_us}\n\n"
        "Id=ostree-remount.service\nActiveEnterTimestampMonotonic=40000000\n\n"
        "Id=local-fs.target\nActiveEnterTimestampMonotonic=41500000\n\n"
        "Id=boot-complete.target\nActiveEnterTimestampMonotonic=52000000\n"
    )
    (tmp / "analyze-time.txt").write_text(ANALYZE)
    (tmp / "manager.txt").write_text("UserspaceTimestampMonotonic=30780000\nFinishTimestampMonotonic=93183000\n")
    (tmp / "daemon-cpu.txt").write_text(f"CPUUsageNSec={nsec}\nMainPID=312\n")
    return rig.BootResult(tmp.name, tmp, "", 120.0, "bios")


def test_figures_from_records_and_the_cost(tmp_path: Path) -> None:
    boots = []
    for i in range(3):
        w = realboot.read_boot(_records(tmp_path / f"with{i}", 41_400_000, "731000000"), True, False)
        wo = realboot.read_boot(_records(tmp_path / f"without{i}", 0, "[not set]"), False, False)
        boots += [w, wo]
    w = boots[0]
    assert w.remount_to_ready == pytest.approx(1.4)
    assert w.local_fs_in_userspace == pytest.approx(10.72)
    assert w.userspace == pytest.approx(62.402) and w.cpu == pytest.approx(0.731)
    assert w.boot_complete_in_userspace == pytest.approx(21.22)
    assert boots[1].ready is None and boots[1].cpu is None
    boots.append(realboot.Boot("warm", True, True, 40, 99, 99, 30.78, 62.4, 1.0, 300.0))  # left out
    summary = realboot.summarize(boots)
    assert summary["delta"] == pytest.approx(0.0) and summary["within"] is True
    text = realboot.render(boots, summary, "python -m bench.realboot --boots 3")
    assert "warm (warm-up, left out)" in text and "+0.0 % of the masked boots' median userspace time" in text
    assert "| boot-complete.target after userspace start (waits for READY=1) | median 21.22 s" in text
    assert "n=3" in realboot.summary_line(summary)
