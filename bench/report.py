"""BENCHMARKS.md writer: figures with their goal, median and spread, the command, the machine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
    figures: list[Figure],
    machine: dict[str, str],
    command: str,
    mode: str,
    started: str,
    duration_s: float,
    extra: list[str],
) -> str:
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
    for f in figures:
        verdict = {True: "yes", False: "**no**", None: "-"}[f.met]
        measured = f.measured if not f.error else f"not measured: {f.error}"
        out.append(f"| {f.title} | {measured} | {f.goal} | {verdict} |")
    out.append("")
    for f in figures:
        out.append(f"## {f.title}\n")
        out.append(f"Goal: {f.goal}.\n")
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
    out.extend(extra)
    return "\n".join(out).rstrip() + "\n"
