"""Both programs explain themselves: --version, usage errors, help texts, bus errors as one sentence.

Bus errors are produced by the real thing: a private dbus-daemon with the project's
policy (which refuses uid 65534 before the daemon sees the call), the same bus with a
relaxed policy (the daemon itself refuses), a bus with no daemon, and no bus at all.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from typing import Any, Callable

import pytest

from ostreewatch import cli, daemon, sample
from tests.fixtures.bus import SystemBus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "ostreewatch.cli"]
DAEMON = [sys.executable, "-m", "ostreewatch.daemon"]
MSG_BUS_CONNECTED = "0cbf114ab1ef46c4ba9d4c3b90d5a899"


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 60)
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, **kw)


def package_version() -> str:
    """ostreewatch/__init__.py's __version__, read as text (setup.cfg's version is attr: of it)."""
    with open(os.path.join(REPO, "ostreewatch", "__init__.py"), encoding="utf-8") as f:
        m = re.search(r'(?m)^__version__ = "([^"]+)"$', f.read())
    assert m
    return m.group(1)


@pytest.mark.parametrize("argv,prog", [(CLI, "ostreewatch"), (DAEMON, "ostreewatchd")])
@pytest.mark.unit
def test_version(argv: list[str], prog: str) -> None:
    r = run([*argv, "--version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{prog} {package_version()}\n"


@pytest.mark.unit
def test_unknown_top_level_flag_is_named() -> None:
    r = run([*CLI, "--frobnicate"])
    assert r.returncode == 2
    assert "unrecognized arguments: --frobnicate" in r.stderr
    assert "required" not in r.stderr
    assert r.stderr.startswith("usage: ostreewatch [")


@pytest.mark.unit
def test_missing_command_lists_the_commands() -> None:
    r = run(CLI)
    assert r.returncode == 2
    names = [a for a in _subparsers(cli.build_parser()).choices]
    assert all(n in r.stderr for n in names), r.stderr


@pytest.mark.parametrize("command", ["status", "monitor", "set-default", "set-next"])
@pytest.mark.unit
def test_unknown_flag_of_a_subcommand_shows_that_subcommands_usage(command: str) -> None:
    r = run([*CLI, command, "--frobnicate"])
    assert r.returncode == 2
    assert r.stderr.startswith(f"usage: ostreewatch {command} ["), r.stderr
    assert f"ostreewatch {command}: error: unrecognized arguments: --frobnicate" in r.stderr


@pytest.mark.unit
def test_daemon_unknown_flag_is_named() -> None:
    r = run([*DAEMON, "--frobnicate"])
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr


def _subparsers(p: argparse.ArgumentParser) -> Any:
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))


def _undocumented(p: argparse.ArgumentParser) -> list[str]:
    return [
        a.dest
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not (a.help and a.help != argparse.SUPPRESS)
    ]


@pytest.mark.unit
def test_every_command_and_option_has_help() -> None:
    top = cli.build_parser()
    assert _undocumented(top) == []
    sub = _subparsers(top)
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        assert helps.get(name), f"{name} has no one-line help in `ostreewatch --help`"
        assert p.description, f"`ostreewatch {name} --help` has no description"
        assert _undocumented(p) == [], name
    assert _undocumented(daemon.build_parser()) == []


def _all_parsers() -> list[argparse.ArgumentParser]:
    top = cli.build_parser()
    return [top, *_subparsers(top).choices.values(), daemon.build_parser()]


@pytest.mark.unit
def test_help_texts_share_one_style() -> None:
    """Command and option helps: lower case, no final period; descriptions: sentences."""
    for p in _all_parsers():
        sub = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        texts = [c.help for s in sub for c in s._choices_actions]
        texts += [a.help for a in p._actions if a.help and a.help != argparse.SUPPRESS and a not in sub]
        for text in texts:
            assert text and not text[0].isupper() and not text.endswith("."), (p.prog, text)
        assert p.description and p.description[0].isupper() and p.description.endswith("."), p.prog


@pytest.mark.unit
def test_entry_and_deployment_metavars() -> None:
    usage = " ".join(_subparsers(cli.build_parser()).choices["set-default"].format_usage().split())
    assert "[--deployment DEPLOYMENT] [ENTRY]" in usage
    usage = " ".join(_subparsers(cli.build_parser()).choices["set-next"].format_usage().split())
    assert "[ENTRY]" in usage and "ID" not in usage


@pytest.mark.unit
@pytest.mark.parametrize("columns", ["40", "60", "80"])
def test_no_name_is_broken_across_lines(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    """A word with a hyphen, slash or dot (an action, a path, an option) stays whole at any width."""
    monkeypatch.setenv("COLUMNS", columns)
    for p in _all_parsers():
        source = " ".join([p.description or ""] + [a.help or "" for a in p._actions])
        words = {w for w in source.split() if re.search(r"[-/.]", w)}
        shown = set(p.format_help().split())
        assert words <= shown, (p.prog, columns, sorted(words - shown))


@pytest.mark.unit
def test_monitor_help_describes_it() -> None:
    r = run([*CLI, "monitor", "--help"])
    assert r.returncode == 0
    assert cli.build_parser().format_usage() not in r.stdout
    assert "until Ctrl-C" in " ".join(r.stdout.split())  # argparse wraps lines


@pytest.mark.unit
def test_sample_names() -> None:
    """--sample NAME reads that bundled host; an unknown name is a usage error naming the choices."""
    for name in sample.NAMES:
        r = run([*CLI, "status", "--sample", name, "--json"])
        assert r.returncode == 0, r.stderr
        files = sample.load_manifest(name)["files"]
        entries = {os.path.basename(f)[: -len(".conf")] for f in files if "/entries/" in f}
        assert {e["id"] for e in json.loads(r.stdout)["BootEntries"]} == entries
    r = run([*CLI, "status", "--sample", "nosuch"])
    assert r.returncode == 2 and all(n in r.stderr for n in sample.NAMES)


# --- errors from the bus ----------------------------------------------------------------


def _grubenv(paths: Any) -> bytes:
    with open(os.path.join(paths.sysroot, "boot", "grub2", "grubenv"), "rb") as f:
        return f.read()


# A bus policy that lets only root call org.ostreewatch1's methods, so that dbus-daemon itself
# answers a non-root caller with its raw "Rejected send message, ..." (whatever the project's
# own policy allows: a host may still carry such an older or stricter policy).
ROOT_ONLY_POLICY = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "https://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root">
    <allow own="org.ostreewatch1"/>
    <allow send_destination="org.ostreewatch1"/>
  </policy>
  <policy context="default">
    <deny send_destination="org.ostreewatch1"/>
    <allow send_destination="org.ostreewatch1" send_interface="org.freedesktop.DBus.Properties"
           send_member="GetAll"/>
    <allow receive_sender="org.ostreewatch1"/>
  </policy>
</busconfig>
"""


@pytest.mark.parametrize("refuser", ["bus", "daemon"])
def test_access_denied_is_one_sentence(
    refuser: str, make_bus: Callable[..., SystemBus], daemon_factory: Any, tmp_path: Any
) -> None:
    if refuser == "bus":
        policy = tmp_path / "root-only.conf"
        policy.write_text(ROOT_ONLY_POLICY)
        bus = make_bus(policy=str(policy))
    else:  # the project's policy, relaxed so that every call reaches the daemon, which refuses
        bus = make_bus(relaxed_policy=True)
    paths = sample.materialize(str(tmp_path / "s"), "silverblue")
    d = daemon_factory(bus, paths)
    d.wait_name()
    before = _grubenv(paths)
    argv = [*CLI, "set-default", "ostree-1", "--bus", bus.address]
    r = bus.run_as_nobody(argv, cwd=REPO)
    assert r.returncode == 1
    # One line, saying what is needed (the daemon's own sentence when it gives one).
    assert r.stderr.startswith("ostreewatch set-default: ") and r.stderr.count("\n") == 1, r.stderr
    assert "needs root or the polkit action org.ostreewatch1.set-default" in r.stderr, r.stderr
    raw = bus.run_as_nobody([*argv, "--debug"], cwd=REPO)
    assert raw.returncode == 1 and "org.freedesktop.DBus.Error.AccessDenied" in raw.stderr
    if refuser == "bus":
        assert "Rejected send message" in raw.stderr  # dbus-daemon's own text, only with --debug
    assert "Rejected" not in r.stderr
    assert _grubenv(paths) == before


def test_daemon_errors_keep_their_name(system_bus: SystemBus, daemon_factory: Any, tmp_path: Any) -> None:
    paths = sample.materialize(str(tmp_path / "s"), "silverblue")
    d = daemon_factory(system_bus, paths)
    d.wait_name()
    r = run([*CLI, "set-default", "ostree-9", "--bus", system_bus.address])
    assert r.returncode == 1
    assert r.stderr.startswith("ostreewatch set-default: ") and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.endswith("(org.ostreewatch1.Error.NoSuchEntry)\n"), r.stderr
    assert "'ostree-9'" in r.stderr


def test_no_daemon_and_no_bus(system_bus: SystemBus, tmp_path: Any) -> None:
    r = run([*CLI, "set-default", "ostree-1", "--bus", system_bus.address])
    assert r.returncode == 1
    assert (
        r.stderr == f"ostreewatch set-default: ostreewatchd is not running on {system_bus.address} "
        "(systemctl start ostreewatch)\n"
    ), r.stderr
    nowhere = f"unix:path={tmp_path}/no-socket"
    for cmd in (["set-next", "ostree-1"], ["monitor"]):
        r = run([*CLI, *cmd, "--bus", nowhere])
        assert r.returncode == 1
        assert r.stderr.startswith(f"ostreewatch {cmd[0]}: cannot connect to {nowhere} ("), r.stderr
        assert r.stderr.count("\n") == 1


# --- ostreewatchd names the bus it waits for ---------------------------------------------


def test_daemon_names_the_address_it_waits_for_then_connects(journald: Any, daemon_factory: Any, tmp_path: Any) -> None:
    bus = SystemBus()  # configured, not started: its socket does not exist yet
    try:
        paths = sample.materialize(str(tmp_path / "s"), "silverblue")
        d = daemon_factory(bus, paths, prefix=journald.prefix())
        waiting = journald.wait_for(
            lambda r: bus.address in r.get("MESSAGE", "") and "waiting for" in r.get("MESSAGE", ""),
            SYSLOG_IDENTIFIER="ostreewatch",
        )
        assert waiting[0]["MESSAGE"].startswith(f"waiting for the D-Bus bus at {bus.address} ")
        bus.start()
        d.wait_name()
        connected = journald.wait_for(MESSAGE_ID=MSG_BUS_CONNECTED)
        assert connected[0]["OSTREEWATCH_BUS_ADDRESS"] == bus.address
        assert bus.address in connected[0]["MESSAGE"]
        # Said once, not at every retry.
        said = [r for r in journald.read(SYSLOG_IDENTIFIER="ostreewatch") if "waiting for" in r.get("MESSAGE", "")]
        assert len(said) == 1, said
    finally:
        bus.close()
