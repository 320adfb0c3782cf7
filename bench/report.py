"""BENCHMARKS.md writer: figures with their goal, median and spread, the command, the machine.

Each figure's section is written between `<!-- figure GROUP | SUMMARY ROW -->` and
`<!-- /figure -->` (GROUP: the `bench/run.py --only` name that measures it), so that a
run of some groups replaces only their sections (`merge_kept`) and keeps the others'.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

# The --only names, in the order BENCHMARKS.md shows their figures.
GROUPS: tuple[str, ...] = ("ready", "idle", "latency", "storm", "rescan", "unit")
_BLOCK = re.compile(r"^<!-- figure (\S+) \| (.*?) -->\n(.*?)^<!-- /figure -->\n", re.S | re.M)


@dataclass
class Figure:
    key: str
    title: str
    goal: str
    measured: str = "not measured"  # one line for the summary table
    met: bool | None = None  # None: no verdict (no goal, or not measured)
    method: str = ""  # how it was measured, exact commands
    rows: list[list[str]] = field(default_factory=list)  # detail table
    header: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    group: str = ""  # the --only name that measured it (bench/run.py sets it)


@dataclass(frozen=True)
class Block:
    """One figure as written: its group, its summary row and its section (the text between the markers)."""

    group: str
    row: str
    section: str


def figure_block(f: Figure) -> Block:
    """The figure's summary row and section."""
    verdict = {True: "yes", False: "**no**", None: "-"}[f.met]
    measured = f.measured if not f.error else f"not measured: {f.error}"
    out: list[str] = [f"## {f.title}\n", f"Goal: {f.goal}.\n"]
    if f.method:
        out.append(f.method.rstrip() + "\n")
    if f.error:
        out.append(f"**Not measured**: {f.error}\n")
    if f.rows:
        header = f.header or [""] * len(f.rows[0])
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for r in f.rows:
            out.append("| " + " | ".join(r) + " |")
        out.append("")
    for n in f.notes:
        out.append(f"- {n}")
    if f.notes:
        out.append("")
    return Block(f.group or f.key, f"| {f.title} | {measured} | {f.goal} | {verdict} |", "\n".join(out) + "\n")


def read_blocks(text: str) -> list[Block]:
    """The figure blocks of a BENCHMARKS.md written by render(), in file order."""
    return [Block(m.group(1), m.group(2), m.group(3)) for m in _BLOCK.finditer(text)]


def merge_kept(new: list[Block], old_text: str, measured: set[str]) -> list[Block]:
    """NEW, plus the blocks of OLD_TEXT whose group was not MEASURED now, in GROUPS order.

    Raises ValueError when OLD_TEXT has figures but no markers (written before them): a partial
    run would erase the others, so the caller refuses rather than lose them."""
    old = read_blocks(old_text)
    if not old and "## Summary" in old_text:
        raise ValueError("the existing file has no figure markers: run every figure once (no --only)")
    kept = [b for b in old if b.group not in measured] + new
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(kept, key=lambda b: order.get(b.group, len(order)))  # stable: a group's figures keep their order


def ms(seconds: float) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    return f"{seconds * 1000:.1f} ms"


def spread_ms(s: dict[str, float]) -> str:
    """'p50 X (p10-p90 A-B, min-max C-D, n=N)' in ms."""
    return (
        f"median {ms(s['p50'])} (p10-p90 {ms(s['p10'])}-{ms(s['p90'])}, "
        f"min-max {ms(s['min'])}-{ms(s['max'])}, n={s['n']})"
    )


def render(
    figures: list[Figure] | list[Block],
    machine: dict[str, str],
    command: str,
    mode: str,
    started: str,
    duration_s: float,
    extra: list[str],
) -> str:
    blocks = [f if isinstance(f, Block) else figure_block(f) for f in figures]
    out: list[str] = []
    out.append("# ostreewatch benchmarks\n")
    out.append(
        "Figures, not pass/fail: the reliability suite (tests/test_reliability.py) is the pass/fail part. "
        "Written by the command below; do not edit by hand.\n"
    )
    out.append(f"- command: `{command}`")
    out.append(f"- mode: {mode}; started {started}; took {duration_s:.0f} s")
    out.append("- machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    out.append("")
    out.append("## Summary\n")
    out.append("| figure | measured | goal | met |")
    out.append("|---|---|---|---|")
    out.extend(b.row for b in blocks)
    out.append("")
    for b in blocks:
        out.append(f"<!-- figure {b.group} | {b.row} -->")
        out.append(b.section + "<!-- /figure -->")
    out.extend(extra)
    return "\n".join(out).rstrip() + "\n"
