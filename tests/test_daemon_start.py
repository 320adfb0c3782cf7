"""What ostreewatchd does before READY=1 (issue 21): the modules it imports are pinned, not timed.

Every import before READY=1 is paid at every boot (the units ordered after the first read wait
for it, and the rest of the boot shares the CPU).
The daemon is run as installed (tests/fixtures/startlaunch.py: /usr/bin/python3 -I, the
package on a plain sys.path) on the bundled samples' files (a host's paths, not --sample),
and the modules loaded when READY=1 is sent, less those of `/usr/bin/python3 -I -c pass`,
must be exactly the pinned sets below. A module added fails with its cost (`-X importtime`).

Adding a module before READY=1 on purpose: first ask whether it can wait (import it in
daemon._load_runtime(), or inside the function that needs it, when the host needs it);
if it cannot, measure it (`.venv/bin/python bench/startup.py` before and after: its
`-X importtime` table), add it to PINNED_STDLIB / PINNED_OSTREEWATCH with a comment saying
why and what it costs, and record the figure in BENCHMARKS.md by running the bench.
PINNED_STDLIB is CPython 3.11's (Debian 12's /usr/bin/python3): another version may import
its modules differently, and the test says so instead of failing on it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from ostreewatch import daemon, sample
from ostreewatch.model import Paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
LAUNCH = os.path.join(REPO, "tests", "fixtures", "startlaunch.py")
SITE = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))

# Beyond the interpreter's own start: small C modules and their thin wrappers.
PINNED_STDLIB = {
    "__future__",  # `from __future__ import annotations` is a real import, once
    "_functools",  # cmp_to_key for the entry sort (parse/bls.py), without functools' collections
    "_socket",  # sd_notify (ostreewatch/_notify.py), without socket.py's enum
    "_json",  # status.json's strings (ostreewatch/runfiles.py), without json's re and enum
    "_struct",
    "struct",  # the ostree lock probe (layout.py) and GVariant (parse/gvariant.py)
    "errno",
    "fcntl",  # ostree's sysroot lock probe (layout.py)
}
# The first snapshot: the reader and the parsers a grub host with run/ostree-booted needs.
PINNED_OSTREEWATCH = {
    "ostreewatch",
    "ostreewatch._interface",
    "ostreewatch._notify",
    "ostreewatch._record",
    "ostreewatch.bootoutcome",  # model.py's LastBoot/BootHistory keys and record (docs/boot-outcome.md)
    "ostreewatch.daemon",
    "ostreewatch.errors",
    "ostreewatch.layout",
    "ostreewatch.model",
    "ostreewatch.parse",
    "ostreewatch.parse.bls",
    "ostreewatch.parse.cmdline",
    "ostreewatch.parse.grubcfg",  # grub.cfg evaluated for DefaultEntry (both samples are grub hosts)
    "ostreewatch.parse.grubenv",
    "ostreewatch.parse.gvariant",  # run/ostree-booted
    "ostreewatch.parse.mountinfo",
    "ostreewatch.parse.origin",
    "ostreewatch.parse.osrelease",
    "ostreewatch.parse.vercmp",
    "ostreewatch.runfiles",  # status.json before READY=1 (docs/logind.md)
    "ostreewatch.state",
    "ostreewatch.sysroot",
}
# Never before READY=1, whatever the host: each is milliseconds at every boot.
NEVER = {"asyncio", "logging", "threading", "dbus_next", "pyinotify", "systemd", "argparse", "re", "typing"}
NEVER |= {"dataclasses", "inspect", "enum", "socket", "signal", "functools", "collections", "json", "tempfile"}


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, Paths]]:
    with tempfile.TemporaryDirectory(prefix="ow-start-") as tmp:
        yield {name: sample.materialize(os.path.join(tmp, name), name) for name in sample.NAMES}


class Notify:
    """A NOTIFY_SOCKET of the test's own."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(60)

    def wait_for(self, line: str) -> list[str]:
        """Every message up to the one holding LINE."""
        seen = []
        while True:
            text = self.sock.recv(65536).decode()
            seen.append(text)
            if line in text.split("\n"):
                return seen


def _env(notify: str, bus_dir: str, mark: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NOTIFY_SOCKET=notify,
        DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={bus_dir}/no-bus-yet",  # the daemon waits for it after READY=1
        RUNTIME_DIRECTORY=os.path.join(bus_dir, "run-ostreewatch"),  # as the unit's RuntimeDirectory= sets it
        OW_LAUNCH_PATH=REPO,
        OW_LAUNCH_SITE=SITE,
    )
    if mark:
        env["OW_READY_MARK"] = "1"
    return env


def _daemon_args(paths: Paths) -> list[str]:
    return [
        *("--bus", "system", "--sysroot", paths.sysroot, "--mountinfo", paths.mountinfo),
        *("--cmdline", paths.cmdline, "--run", paths.run),
    ]


def _start(paths: Paths, tmp: str, *pyflags: str) -> tuple[set[str], str]:
    """The modules loaded when READY=1 was sent, and the daemon's stderr up to then."""
    notify = Notify(tmp)
    err_path = os.path.join(tmp, "stderr")
    argv = [PYTHON, "-I", *pyflags, LAUNCH, *_daemon_args(paths)]
    with open(err_path, "w") as err:
        proc = subprocess.Popen(argv, env=_env(notify.path, tmp), stderr=err)
        try:
            notify.wait_for("READY=1")
            # status.json is there once READY=1 is: a unit ordered after ours reads it (docs/logind.md).
            with open(os.path.join(tmp, "run-ostreewatch", "status.json")) as f:
                assert '"Generation": 1' in f.read()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            notify.sock.close()
            os.unlink(notify.path)
    with open(err_path) as f:
        text = f.read()
    marks = [line for line in text.splitlines() if line.startswith("#OW-READY ")]
    assert marks, f"no READY=1 mark on stderr: {text[-2000:]}"
    return set(marks[0].split()[1:]), text.split("#OW-READY", 1)[0]


def _interpreter_modules() -> set[str]:
    out = subprocess.run(
        [PYTHON, "-I", "-c", "import sys; print(' '.join(sys.modules))"], capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def _costs(importtime: str) -> dict[str, int]:
    """module -> cumulative µs, from -X importtime lines."""
    out = {}
    for line in importtime.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = line[len("import time:") :].split("|")
            if parts[1].strip().isdigit():
                out[parts[2].strip()] = int(parts[1])
    return out


@pytest.mark.parametrize("host", sample.NAMES)
def test_modules_before_ready_are_the_pinned_ones(hosts: dict[str, Paths], host: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ow-start-") as tmp:
        loaded, _ = _start(hosts[host], tmp)
        extra = loaded - _interpreter_modules() - {"__main__"}
        ours = {m for m in extra if m.startswith("ostreewatch")}
        stdlib = extra - ours
        if ours == PINNED_OSTREEWATCH and stdlib == PINNED_STDLIB:
            return
        _, importtime = _start(hosts[host], tmp, "-X", "importtime")
        costs = _costs(importtime)
        added = sorted((ours - PINNED_OSTREEWATCH) | (stdlib - PINNED_STDLIB))
        gone = sorted((PINNED_OSTREEWATCH - ours) | (PINNED_STDLIB - stdlib))
        detail = ", ".join(f"{m} ({costs.get(m, 0) / 1000:.1f} ms cumulative)" for m in added)
        assert not extra & NEVER, f"imported before READY=1: {sorted(extra & NEVER)}; all added: {detail}"
        if sys.version_info[:2] != (3, 11) and not (ours - PINNED_OSTREEWATCH):
            pytest.fail(f"PINNED_STDLIB is CPython 3.11's; on {sys.version.split()[0]}: added {detail}; gone {gone}")
        assert not added and not gone, (
            f"modules before READY=1 changed: added {detail or 'none'}; no longer imported {gone or 'none'}. "
            "See this file's docstring to add one on purpose."
        )


def test_signals_before_the_loop_are_kept(hosts: dict[str, Paths]) -> None:
    """SIGHUP and SIGTERM arriving before the event loop: READY=1 still comes, then a clean stop."""
    paths = hosts["rhcos"]
    code = (
        "import os, signal, sys\n"
        "from ostreewatch import _notify, daemon\n"
        "remember = _notify.remember_signals\n"
        "def early():\n"
        "    remember()\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "_notify.remember_signals = early\n"
        "sys.exit(daemon.main(sys.argv[1:]))\n"
    )
    with tempfile.TemporaryDirectory(prefix="ow-start-") as tmp:
        notify = Notify(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *_daemon_args(paths)],
            env=_env(notify.path, tmp, mark=False),
            stderr=subprocess.PIPE,
        )
        try:
            messages = notify.wait_for("STOPPING=1")
            rc = proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            notify.sock.close()
        assert messages[0].startswith("READY=1\nSTATUS=booted ")
        assert rc == 0, proc.stderr.read().decode() if proc.stderr else ""


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--bus", "session", "--sysroot=/sr", "--debounce-ms", "0", "--log-level=debug"],
        ["--sample"],
        ["--sample", "--bus", "system"],
        ["--sample", "silverblue", "--textfile-dir", "/t"],
        ["--sample=rhcos", "--run", "", "--mountinfo=/m", "--cmdline", "/c"],
        ["--sysroot", "/a", "--sysroot", "/b"],
        ["--debounce-ms", "+7"],
    ],
)
def test_plain_command_lines_parse_as_argparse_parses_them(argv: list[str]) -> None:
    plain = daemon._parse_plain(argv)
    assert plain is not None
    namespace = daemon.build_parser().parse_args(argv)
    assert {k: getattr(plain, k) for k in daemon.Args.__slots__} == vars(namespace)


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["--sys", "/abbreviated"],
        ["--debounce-ms", "-5"],
        ["--debounce-ms", "x"],
        ["--log-level", "loud"],
        ["--sample", "nosuch"],
        ["--sysroot"],
        ["positional"],
        ["--"],
    ],
)
def test_other_command_lines_go_to_argparse(argv: list[str]) -> None:
    assert daemon._parse_plain(argv) is None


def test_the_plain_parser_knows_the_samples() -> None:
    assert daemon._SAMPLE_NAMES == sample.NAMES
    assert daemon._SAMPLE_NAMES[0] == sample.DEFAULT


def test_args_has_every_option_of_the_parser() -> None:
    """A new option goes into build_parser() and daemon.Args (whose defaults must be the parser's)."""
    defaults = vars(daemon.build_parser().parse_args([]))
    args = daemon.Args()
    assert {k: getattr(args, k) for k in daemon.Args.__slots__} == defaults
