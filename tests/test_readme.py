"""README.md, run as a newcomer would: its two commands in a fresh clone, then every shell example.

The checker (sh_commands, placeholders) is tested on its own first, so that a README
with an unfilled placeholder or an example the sample cannot answer cannot pass.

test_readme_in_a_fresh_clone: `git clone` of this checkout (its uncommitted changes
included, through `git stash create`) into a temp dir; there the set-up steps run for
real but find what is cached where it already is (apt packages, the Debian trees under
/var/cache/ostreewatch): only the clone's own .venv is built (pip, about 20 s). Then:
1. `scripts/run-sample.sh` runs fully;
2. every README command that starts a script (`scripts/...`) runs in the clone; the
   bare `scripts/run-tests.sh` (the whole suite) on a tiny subset, `-k vercmp`;
3. `scripts/run-sample.sh --keep` starts; the three lines it prints are checked against
   the README's example of them (same variables, the same values but for the temp dir
   and the checkout's path) and are the only thing put in front of each command;
4. every other README command runs against it in order, through bash, in the clone:
   exit 0, no placeholder; journalctl queries must print records; commands that run
   until Ctrl-C must still be running after a few seconds. The few commands that take
   minutes are listed in NOT_RUN with the reason; none is skipped silently.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

# Commands not run, each with its reason (matched on the start of the command).
NOT_RUN: dict[str, str] = {
    ".venv/bin/python bench/run.py": "benchmarks take minutes of both cores (378 s for the last full run) and "
    "rewrite BENCHMARKS.md",
    ".venv/bin/pytest tests/test_reliability.py": "minutes; the same tests run in the whole suite",
    "OSTREEWATCH_FUZZ_EXAMPLES=20000": "a long fuzz (minutes); the suite runs the same tests with 150 examples",
    "make rpm": "rpmbuild with the RPM's %check takes a minute of both cores; tests/test_rpm.py runs `make rpm`",
    "make install": "installs into this machine's /usr; tests/test_install.py runs this very line with a DESTDIR",
}
# Commands that run until Ctrl-C: they must still be running after UNTIL_CTRL_C_SECONDS.
UNTIL_CTRL_C = ("busctl monitor", "gdbus monitor", "ostreewatch monitor")
UNTIL_CTRL_C_SECONDS = 3
# The bare whole-suite command runs on this subset (the whole suite is what CI runs).
SUITE_SUBSET = ["-k", "vercmp"]

_FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
_ANY_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE_SPAN = re.compile(r"`[^`]*`")  # a span may wrap lines
# A bare ALL_CAPS_WORD outside code: what an unfilled template line looks like.
_PROSE_PLACEHOLDER = re.compile(r"(?<![\w$/.-])[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+(?![\w=/.-])")
# In a command, a whole word in capitals (ID, NAME, ENTRY_ID) or <something> is a placeholder.
_WORD_PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]+|<[^>]*>)$")


def sh_commands(text: str) -> list[str]:
    """The commands of every ```sh block, in order: continuation lines joined, comment lines dropped."""
    out: list[str] = []
    for block in _FENCE.findall(text):
        pending = ""
        for line in block.splitlines():
            if line.endswith("\\"):
                pending += line[:-1].rstrip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line and not line.startswith("#"):
                out.append(line)
    return out


def placeholders(text: str) -> list[str]:
    """Unfilled placeholders: ALL_CAPS words in prose, capital words or <...> as words of a command."""
    found: list[str] = []
    prose = _CODE_SPAN.sub("", _ANY_FENCE.sub("", text))
    found += _PROSE_PLACEHOLDER.findall(prose)
    for cmd in sh_commands(text):
        try:
            words = shlex.split(cmd, comments=True)
        except ValueError as e:
            found.append(f"{cmd!r}: {e}")
            continue
        found += [f"{w} (in {cmd!r})" for w in words if _WORD_PLACEHOLDER.match(w)]
    return found


def not_run_reason(cmd: str) -> str | None:
    return next((why for start, why in NOT_RUN.items() if cmd.startswith(start)), None)


# --- the checker itself ----------------------------------------------------------------


def test_checker_finds_placeholders_and_commands() -> None:
    text = (
        "# T\n\nIntro `CODE_SPAN_IS_FINE`.\n\n```sh\nbusctl call a b \\\n    c d   # comment\n"
        "# only a comment\nostreewatch set-default ID\necho <entry>\n```\n\nBENCHMARKS_SUMMARY\n\n"
        "```\nNOT_SH_BLOCK\n```\n"
    )
    assert sh_commands(text) == ["busctl call a b c d   # comment", "ostreewatch set-default ID", "echo <entry>"]
    found = placeholders(text)
    assert "BENCHMARKS_SUMMARY" in found
    assert any(f.startswith("ID ") for f in found) and any(f.startswith("<entry>") for f in found)
    assert not any("CODE_SPAN" in f or "NOT_SH_BLOCK" in f for f in found)


def test_readme_has_no_placeholder_and_no_sudo() -> None:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert placeholders(text) == []
    commands = sh_commands(text)
    assert "scripts/run-sample.sh" in [c.split("#")[0].strip() for c in commands]
    assert "scripts/run-tests.sh" in [c.split("#")[0].strip() for c in commands]
    # A fresh Debian 12 machine, as root, has no sudo.
    assert not [c for c in commands if c.split()[0] == "sudo"]
    # Every NOT_RUN entry still names a README command (else it would hide nothing, or a typo).
    for start in NOT_RUN:
        assert any(c.startswith(start) for c in commands), start


# --- the README, run -------------------------------------------------------------------


def _env() -> dict[str, str]:
    """A newcomer's root shell: none of this run's test settings, no bus or journal chosen yet."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "OSTREEWATCH_", "DBUS_")) or k == "OSTREEWATCH_TEST_RUN"
    }
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def _clone(dest: str) -> None:
    """A fresh clone of this checkout at its current content (uncommitted changes of tracked files too)."""
    # `git stash create` writes a commit object: it needs an identity, which CI may not have.
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="test_readme",
        GIT_AUTHOR_EMAIL="test_readme@localhost",
        GIT_COMMITTER_NAME="test_readme",
        GIT_COMMITTER_EMAIL="test_readme@localhost",
    )

    def git(*args: str, cwd: str = REPO) -> str:
        r = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout.strip()

    rev = git("stash", "create") or git("rev-parse", "HEAD")
    git("clone", "-q", "--no-checkout", REPO, dest, cwd="/")
    git("fetch", "-q", REPO, rev, cwd=dest)
    git("checkout", "-q", "--detach", rev, cwd=dest)


def _run(cmd: str, cwd: str, prelude: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", f"{prelude}{cmd}"], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _readme_exports(commands: list[str]) -> list[tuple[str, str]]:
    return [tuple(c[len("export ") :].split("=", 1)) for c in commands if c.startswith("export ")]  # type: ignore


def _start_keep(clone: str) -> tuple[subprocess.Popen, list[str], str]:
    """scripts/run-sample.sh --keep, up to its pasteable lines: (process, the export lines, all output)."""
    proc = subprocess.Popen(
        ["scripts/run-sample.sh", "--keep"],
        cwd=clone,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    out: list[str] = []
    exports: list[str] = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("export "):
            exports.append(line.strip())
            if line.startswith("export PATH="):
                break
    assert len(exports) == 3, "".join(out)
    return proc, exports, "".join(out)


def _stop_keep(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)  # the script's trap stops what it started and removes its temp dir
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError("run-sample.sh --keep did not stop on SIGTERM") from None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_readme_in_a_fresh_clone() -> None:
    with open(README, encoding="utf-8") as f:
        commands = sh_commands(f.read())
    work = tempfile.mkdtemp(prefix="ow-readme-", dir="/tmp")
    os.chmod(work, 0o755)  # uid 65534 (run-sample.sh's refused caller) runs the clone's venv
    clone = os.path.join(work, "ostreewatch")
    keep: subprocess.Popen | None = None
    try:
        _clone(clone)

        # 1. The first command, fully.
        t0 = time.monotonic()
        r = _run("scripts/run-sample.sh", clone, timeout=600)
        print(f"scripts/run-sample.sh in a fresh clone (its .venv built): {time.monotonic() - t0:.1f} s")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "SetDefaultEntry(ostree-1) by uid 0: succeeded" in r.stdout, r.stdout
        assert "DefaultEntryChanged previous=ostree-2 current=ostree-1" in r.stdout, r.stdout
        assert "invalid: org.ostreewatch1.Error.NoSuchEntry" in r.stdout, r.stdout
        assert "needs root or the polkit action org.ostreewatch1.set-default" in r.stdout, r.stdout
        assert os.path.isfile(os.path.join(clone, ".venv", "bin", "ostreewatch"))

        # 2. The README's script commands, in the clone (the whole suite on a subset).
        ran: list[str] = []
        for cmd in commands:
            bare = cmd.split(" #")[0].strip()
            if not re.match(r"^(\w+=\S+ )*scripts/", bare) or bare == "scripts/run-sample.sh":
                continue
            if bare == "scripts/run-tests.sh":
                bare = shlex.join(["scripts/run-tests.sh", *SUITE_SUBSET])
            t0 = time.monotonic()
            r = _run(bare, clone, timeout=900)
            print(f"{bare}: {time.monotonic() - t0:.1f} s")
            assert r.returncode == 0, (bare, r.stdout[-3000:], r.stderr[-3000:])
            ran.append(bare)
        assert any(c.startswith("scripts/run-tests.sh -k") for c in ran), ran

        # 3. The sample kept running; the lines to paste are the README's, filled in.
        keep, exports, out = _start_keep(clone)
        tmp = re.search(r"(/tmp/ostreewatch-sample\.\w+)/", out)
        assert tmp, out
        pasted = [tuple(e[len("export ") :].split("=", 1)) for e in exports]
        shown = _readme_exports(commands)
        assert [n for n, _ in pasted] == [n for n, _ in shown], (pasted, shown)
        readme_tmp = re.search(r"(/tmp/ostreewatch-sample\.\w+)/", shown[0][1])
        assert readme_tmp, shown
        for (name, value), (_, example) in zip(pasted, shown):
            example = example.replace(readme_tmp.group(1), tmp.group(1))
            example = re.sub(r"^/\S*?/ostreewatch/\.venv", os.path.join(clone, ".venv"), example)
            assert value == example, (name, value, example)
        prelude = "".join(e + "\n" for e in exports)

        # 4. Every other command, against it.
        skipped: dict[str, str] = {}
        checked = 0
        for cmd in commands:
            if cmd.startswith("export ") or re.match(r"^(\w+=\S+ )*scripts/", cmd):
                continue
            why = not_run_reason(cmd)
            if why:
                skipped[cmd] = why
                continue
            if cmd.startswith(UNTIL_CTRL_C):
                r = _run(f"timeout {UNTIL_CTRL_C_SECONDS} {cmd}", clone, prelude, timeout=60)
                assert r.returncode == 124, (cmd, r.returncode, r.stdout, r.stderr)  # still running
            else:
                r = _run(cmd, clone, prelude, timeout=120)
                assert r.returncode == 0, (cmd, r.returncode, r.stdout, r.stderr)
                if cmd.startswith("journalctl"):
                    assert r.stdout.strip() and "-- No entries --" not in r.stdout, (cmd, r.stdout, r.stderr)
            checked += 1
        print(
            f"README: {checked} commands run against the sample; not run: "
            + "; ".join(f"{c!r} ({why})" for c, why in skipped.items())
        )
        assert set(skipped) == {c for c in commands if not_run_reason(c)}
        assert checked >= 20, checked

        # The README's writes ended where they began: the default is the first entry again.
        r = _run(
            "busctl get-property org.ostreewatch1 /org/ostreewatch1 org.ostreewatch1.Manager DefaultEntry NextEntry",
            clone,
            prelude,
        )
        assert r.stdout.split("\n")[:2] == ['s "ostree-2"', 's ""'], r.stdout
    finally:
        if keep is not None:
            _stop_keep(keep)
        subprocess.run(["rm", "-rf", work])
    assert not os.path.exists(tmp.group(1)), "run-sample.sh --keep left its temp dir"
    left = subprocess.run(["pgrep", "-f", tmp.group(1)], capture_output=True, text=True)
    assert left.stdout == "", f"run-sample.sh --keep left processes: {left.stdout}"
