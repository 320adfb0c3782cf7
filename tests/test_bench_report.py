"""bench/report.py: BENCHMARKS.md's figure blocks, and `bench/run.py --only` keeping the other figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import GROUPS, Figure, figure_block, merge_kept, read_blocks, render

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.unit


def fig(group: str, title: str, measured: str = "1 ms") -> Figure:
    return Figure(group, title, "<= 2 ms", measured=measured, met=True, rows=[["1"]], header=["n"], group=group)


def page(figures: list[Figure]) -> str:
    return render(figures, {"cpu": "x"}, "bench/run.py", "full", "today", 1.0, ["", "## Notes\n"])


def test_blocks_round_trip() -> None:
    figures = [fig("ready", "start"), fig("latency", "deploy"), fig("latency", "GetAll")]
    blocks = read_blocks(page(figures))
    assert blocks == [figure_block(f) for f in figures]


def test_a_partial_run_keeps_the_other_figures_in_order() -> None:
    old = page([fig("ready", "start", "9 ms"), fig("latency", "deploy", "9 ms"), fig("unit", "unit", "9 ms")])
    new = [figure_block(fig("latency", "deploy", "1 ms")), figure_block(fig("latency", "GetAll", "1 ms"))]
    merged = merge_kept(new, old, {"latency"})
    assert [(b.group, b.row.split(" | ")[1]) for b in merged] == [
        ("ready", "9 ms"),
        ("latency", "1 ms"),
        ("latency", "1 ms"),
        ("unit", "9 ms"),
    ]
    text = render(merged, {"cpu": "x"}, "bench/run.py --only latency", "full", "today", 1.0, [])
    assert text.count("## start") == text.count("## unit") == 1 and "| GetAll | 1 ms |" in text


def test_a_file_without_markers_is_not_overwritten_by_a_partial_run() -> None:
    with pytest.raises(ValueError, match="no figure markers"):
        merge_kept([], "# ostreewatch benchmarks\n\n## Summary\n\n| figure |\n", {"ready"})
    assert merge_kept([], "", {"ready"}) == []  # no earlier file: nothing to keep


def test_benchmarks_md_has_every_group() -> None:
    groups = {b.group for b in read_blocks((ROOT / "BENCHMARKS.md").read_text())}
    assert groups == set(GROUPS)


@pytest.mark.parametrize(
    ("only", "old", "message"),
    [
        ("bogus", None, "unknown figure(s) bogus"),
        ("ready", "# ostreewatch benchmarks\n\n## Summary\n", "no figure markers"),
    ],
)
def test_run_refuses_before_measuring(tmp_path: Path, only: str, old: str | None, message: str) -> None:
    out = tmp_path / "B.md"
    if old is not None:
        out.write_text(old)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--only", only, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2 and message in done.stderr
    assert old is None or out.read_text() == old
