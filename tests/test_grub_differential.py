"""Differential test (issue 19): generated grub.cfg x grubenv x entries, parse.grubcfg against GRUB 2.14.

tests/fixtures/grubdiff.py generates the cases (seeded: OSTREEWATCH_GRUBDIFF_SEED,
OSTREEWATCH_GRUBDIFF_CASES, default 2000). Each batch of cases runs in one grub-emu
2.14 (the sid tree) on a fresh tmpfs /boot: a driver grub.cfg points `$prefix` at a
case's directory and `configfile`s a wrapper that sources the config under test,
echoes `$default`, and lets the menu be drawn with `*` on the entry GRUB would boot
(one ESC on stdin returns from each case's menu). The config's `blscfg` reads the
case's own entries (`blscfg --path`, a GRUB 2.14 option); everything else is the
case as generated.

For every case the evaluator must say the same `$default` as GRUB, and the menu it
predicts (grubcfg.blsuki_order: GRUB 2.14's order) with the entry menu_index picks
must be the titles GRUB drew with the same one marked - or the evaluator abstains
(`default` unknown), which is counted by class and printed. A disagreement prints a
minimal reproducer: the config, the files beside it, the grubenv, the entry names and
both answers.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from ostreewatch.parse import grubcfg, grubenv
from tests.fixtures import trees
from tests.fixtures.grubdiff import HEADER_SETTINGS, Case, generate

SEED = int(os.environ.get("OSTREEWATCH_GRUBDIFF_SEED", "19"))
CASES = int(os.environ.get("OSTREEWATCH_GRUBDIFF_CASES", "2000"))
BATCH = 125  # cases per grub-emu run (one process start and tmpfs copy for each)
WRAP = 'source $prefix/test.cfg\nset pager=0\necho "OWDEFAULT=[${default}]"\nset timeout=-1\nset timeout_style=menu\n'
_ROW = re.compile(r"\x1b\[(\d+);3H([* ])([^\x1b]*)")


@dataclass(frozen=True)
class GrubAnswer:
    """What GRUB 2.14 did with one case: `$default`, the menu's titles and the marked index."""

    default: str
    titles: tuple[str, ...]
    marked: int


def sid_headers() -> dict[str, str]:
    """00_header of the sid tree's grub-mkconfig (GRUB 2.14) under each /etc/default/grub setting."""
    out: dict[str, str] = {}
    for name, settings in HEADER_SETTINGS.items():
        env = dict(settings, pkgdatadir="/usr/share/grub", GRUB_TERMINAL_OUTPUT="console")
        p = trees.run_in_tree(trees.SID, ["sh", "/etc/grub.d/00_header"], env=env)
        out[name] = p.stdout
    return out


def _with_path(cfg: str, i: int) -> str:
    return re.sub(r"(?m)^(\s*)blscfg\s*$", rf"\1blscfg --path /boot/grub/c{i}/entries", cfg)


def run_batch(cases: list[Case]) -> dict[int, GrubAnswer | str]:
    """Run CASES in one grub-emu; per case its GrubAnswer, or what went wrong."""
    root = tempfile.mkdtemp(prefix="ow-grubdiff-")
    try:
        boot = os.path.join(root, "boot")
        g = os.path.join(boot, "grub")
        os.makedirs(g)
        for f in ("vmlinuz-1", "initramfs-1.img"):
            open(os.path.join(boot, f), "w").close()
        driver = ["terminfo -g 200x40 console", "set owbase=$prefix"]
        for i, c in enumerate(cases):
            d = os.path.join(g, f"c{i}")
            os.makedirs(os.path.join(d, "entries"))
            files = dict(c.files, **{"test.cfg": _with_path(c.cfg, i), "wrap.cfg": WRAP})
            for name, text in files.items():
                with open(os.path.join(d, name), "w") as fh:
                    fh.write(text)
            if c.grubenv is not None:
                with open(os.path.join(d, "grubenv"), "wb") as fb:
                    fb.write(c.grubenv)
            for name, text in c.entries.items():
                with open(os.path.join(d, "entries", name), "w") as fh:
                    fh.write(text)
            driver += [f"set prefix=$owbase/c{i}", f'echo "OWCASE={i}"', "configfile $prefix/wrap.cfg"]
        driver += ['echo "OWCASE=end"', "halt"]
        with open(os.path.join(g, "grub.cfg"), "w") as fh:
            fh.write("\n".join(driver) + "\n")
        devmap = os.path.join(root, "device.map")
        open(devmap, "w").close()
        p = trees.run_in_tree(
            trees.SID,
            ["timeout", "300", "grub-emu", "-r", "host", "-d", "/boot/grub", "-m", "/tmp/device.map"],
            binds={devmap: "/tmp/device.map"},
            userns=False,
            check=False,
            input="\x1b" * (len(cases) + 5) + "chalt\r",
            setup=f'mount -t tmpfs tmpfs "$M/boot" && cp -a {boot}/. "$M/boot/"',
            timeout=400,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return parse_output(p.stdout, len(cases))


def parse_output(out: str, n: int) -> dict[int, GrubAnswer | str]:
    """Split grub-emu's output at the OWCASE markers and read each case's $default and drawn menu."""
    parts = re.split(r"OWCASE=(\d+|end)\n", out)
    answers: dict[int, GrubAnswer | str] = {i: "no output (grub-emu stopped before this case)" for i in range(n)}
    for k in range(1, len(parts) - 1, 2):
        if parts[k] == "end":
            continue
        i, chunk = int(parts[k]), parts[k + 1]
        m = re.search(r"OWDEFAULT=\[(.*?)\]", chunk, re.DOTALL)
        if m is None:
            answers[i] = f"no default printed: {chunk[-300:]!r}"
            continue
        rows: dict[int, tuple[bool, str]] = {}
        for r in _ROW.finditer(chunk):
            row = int(r.group(1))
            if row not in rows:
                rows[row] = (r.group(2) == "*", r.group(3).rstrip())
        drawn = [rows[k] for k in sorted(rows) if rows[k][1] or rows[k][0]]
        marked = [j for j, (star, _) in enumerate(drawn) if star]
        if len(marked) != 1:
            answers[i] = f"no menu with one marked entry: {chunk[-300:]!r}"
            continue
        answers[i] = GrubAnswer(m.group(1), tuple(t for _, t in drawn), marked[0])
    return answers


@dataclass(frozen=True)
class Ours:
    """The evaluator's answer: None default = abstained (with its class)."""

    default: str | None
    titles: tuple[str, ...]
    marked: int
    abstained: str = ""


def ours(c: Case) -> Ours:
    """What ostreewatch says for case C: grubcfg.evaluate, blsuki's order, GRUB's menu lookup."""
    files = dict(c.files)
    env: dict[str, str] = {}
    if c.grubenv is not None:
        files["grubenv"] = ""
        env = grubenv.parse_grubenv(c.grubenv)
    res = grubcfg.evaluate(c.cfg, files, env)
    order = grubcfg.blsuki_order(list(c.entries))
    menu = [(f[:-5], _title(c.entries[f])) for f in order]
    if res.default is None:
        return Ours(None, (), 0, res.unknown_classes[0] if res.unknown_classes else "?")
    return Ours(res.default, tuple(t for _, t in menu), grubcfg.menu_index(res.default, menu))


def _title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("title "):
            return line[len("title ") :].strip()
    return ""


def reproducer(c: Case, mine: Ours, theirs: GrubAnswer | str) -> str:
    """A minimal reproducer: the config, the files, the grubenv, the entry names, both answers."""
    env = grubenv.parse_grubenv(c.grubenv) if c.grubenv is not None else None
    lines = [f"case {c.name} (seed {SEED}; layout {c.layout})", "--- grub.cfg ---", c.cfg]
    for name, text in c.files.items():
        lines += [f"--- {name} ---", text]
    lines += [
        f"--- grubenv: {env if env is not None else 'missing'}",
        f"--- entries (file order): {list(c.entries)}",
        f"--- ours: default={mine.default!r} menu={list(mine.titles)} boots index {mine.marked}",
        f"--- GRUB 2.14: {theirs}",
    ]
    return "\n".join(lines)


def test_evaluator_agrees_with_grub_2_14_on_generated_cases() -> None:
    headers = sid_headers()
    cases = generate(SEED, CASES, headers)
    batches = [cases[i : i + BATCH] for i in range(0, len(cases), BATCH)]
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run_batch, batches))
    elapsed = time.monotonic() - start
    abstained: Counter[str] = Counter()
    failures: list[str] = []
    for batch, answers in zip(batches, results):
        for i, c in enumerate(batch):
            mine, theirs = ours(c), answers[i]
            if isinstance(theirs, str):
                failures.append(reproducer(c, mine, theirs))
                continue
            if mine.default is None:
                abstained[mine.abstained] += 1
                continue
            if (mine.default, mine.titles, mine.marked) != (theirs.default, theirs.titles, theirs.marked):
                failures.append(reproducer(c, mine, theirs))
    total = sum(abstained.values())
    summary = (
        f"{len(cases)} cases (seed {SEED}) in {elapsed:.1f} s ({len(cases) / elapsed:.0f} cases/s); "
        f"abstained on {total} ({100 * total / len(cases):.1f}%): "
        + ", ".join(f"{k} {v} ({100 * v / len(cases):.1f}%)" for k, v in sorted(abstained.items()))
        + f"; {len(failures)} disagreements"
    )
    print(summary)
    assert not failures, f"{summary}\n\n" + "\n\n".join(failures[:5])


def test_the_differential_oracle_can_disagree() -> None:
    """The harness reads GRUB's answer, not ours: a case where GRUB's answer is known by hand."""
    entries = {f"ostree-{k}.conf": f"title T{k}\nlinux /vmlinuz-1\noptions ostree=x\n" for k in (1, 2, 10)}
    c = Case("hand", "grub", 'set default="1abc"\nblscfg\n', {}, None, entries)
    (answer,) = run_batch([c]).values()
    assert answer == GrubAnswer("1abc", ("T10", "T2", "T1"), 1)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_generator_is_reproducible(seed: int) -> None:
    headers = {name: f"# {name}\n" for name in HEADER_SETTINGS}
    assert generate(seed, 50, headers) == generate(seed, 50, headers)
