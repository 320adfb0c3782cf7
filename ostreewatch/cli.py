"""`ostreewatch`: the command line.

One function per subcommand: `add_X_parser(subparsers)` declares it and sets
`func=cmd_X`; `cmd_X(args) -> exit code`. Add a subcommand by writing both
and listing the add function in SUBCOMMANDS.

Exit codes: 0 success (problems found are output, not failures), 1 an error
(unreadable or non-ostree sysroot, an error from the bus, ...), 2 bad usage
(argparse: the message names the bad argument and shows that subcommand's usage).

Errors from the bus are printed as one plain sentence (bus_error_sentence);
`--debug` prints the raw D-Bus error name and text instead.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import textwrap
from typing import Any, Callable, TextIO

from . import __version__, authz, errors, model, runfiles
from .errors import OstreewatchError

_NONE = "(none)"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, but a line is never broken inside a word: a polkit action name,
    --sysroot/--mountinfo or OSNAME-CHECKSUM.SERIAL stay whole (ostreewatchd's help uses it too)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        text = self._whitespace_matcher.sub(" ", text).strip()
        return textwrap.fill(
            text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
        )


# --- output -------------------------------------------------------------------


def _booted_mark(stream: TextIO) -> str:
    """rpm-ostree's ● when the terminal can show it, else *."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return "●" if encoding == "utf8" else "*"


SHORT_CHECKSUM = 10  # like `git log --oneline`: longer only when two checksums share the prefix


def short_checksums(checksums: list[str]) -> dict[str, str]:
    """Each checksum -> its shortest prefix of at least SHORT_CHECKSUM characters that no other one shares."""
    unique = sorted(set(checksums))
    n = SHORT_CHECKSUM
    while len({c[:n] for c in unique}) < len(unique):
        n += 1
    return {c: c[:n] for c in unique}


def format_status(snap: model.Snapshot, booted_mark: str = "*", long: bool = False) -> str:
    """Human status in the spirit of `rpm-ostree status`: deployments, entries, mounts, problems last.

    Checksums are shortened where unambiguous (full with LONG); problems are shown as published."""
    short = {} if long else short_checksums([d.checksum for d in snap.Deployments])

    def ids(text: str) -> str:
        for full, prefix in short.items():
            text = text.replace(full, prefix)
        return text

    out: list[str] = []
    state = "booted" if snap.BootedDeployment else ("ostree-booted" if snap.OstreeBooted else "not booted")
    out.append(f"State: {state}")
    out.append(f"Bootloader: {snap.Bootloader}")
    legend = f" ({booted_mark} booted)"
    out.append("Deployments" + (legend if any(d.booted for d in snap.Deployments) else "") + ":")
    if not snap.Deployments:
        out.append(f"  {_NONE}")
    for d in snap.Deployments:
        marks = [
            m
            for m, on in (("staged", d.staged), ("default", d.default), ("rollback", d.rollback), ("pinned", d.pinned))
            if on
        ]
        flags = "".join(f" ({m})" for m in marks)
        out.append(f"{booted_mark if d.booted else ' '} {d.osname} {ids(d.checksum)}.{d.serial}{flags}")
        for label, value in (
            ("Version", d.version),
            ("Title", d.title),
            ("Origin", ids(d.origin)),
            ("Entry", d.entry or _NONE),
            ("Index", str(d.index) if d.index >= 0 else _NONE),
        ):
            if value:
                out.append(f"{label:>18}: {value}")
    out.append("Boot entries" + (legend if any(e.booted for e in snap.BootEntries) else "") + ":")
    if not snap.BootEntries:
        out.append(f"  {_NONE}")
    for e in snap.BootEntries:
        suffix = "".join(
            f" ({m})"
            for m, on in (("default", e.default), ("booted", e.booted), ("next", e.id == snap.NextEntry))
            if on
        )
        out.append(f"{booted_mark if e.booted else ' '} {e.id}{suffix}")
        if e.title:
            out.append(f"{'Title':>18}: {e.title}")
        out.append(f"{'Deployment':>18}: {ids(e.deployment) or _NONE}")
    out.append(f"Default entry: {snap.DefaultEntry or _NONE}")
    out.append(f"Next entry: {snap.NextEntry or _NONE}")
    if snap.LastBoot:
        out.append("Last boot: " + format_last_boot(dict(snap.LastBoot)))
    assessment = {k: v for k, v in snap.BootAssessment if not isinstance(v, dict)}
    if assessment:  # greenboot's grubenv variables, boot-complete.target (docs/boot-outcome.md)
        out.append("Boot assessment: " + " ".join(f"{k}={_short(v)}" for k, v in assessment.items()))
    if snap.Mounts:
        out.append("Mounts:")
        rows = [("MOUNT POINT", "RO/RW", "TYPE", "SOURCE", "ROOT")] + [
            (m.mount_point, "ro" if m.read_only else "rw", m.fstype, m.source, ids(m.root)) for m in snap.Mounts
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            out.append("  " + " ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + " " + r[4])
    if snap.Problems:
        out.append(f"Problems ({len(snap.Problems)}):")
        for p in snap.Problems:
            subject = f" [{p.subject}]" if p.subject else ""
            out.append(f"  {p.code}{subject}: {p.message}")
    else:
        out.append("Problems: none")
    return "\n".join(out) + "\n"


def format_last_boot(last: dict[str, Any]) -> str:
    """LastBoot in one line: outcome (short boot id): reason."""
    return f"{last.get('outcome', '?')} ({str(last.get('boot_id', ''))[:8]}): {last.get('reason', '')}"


def _when(usec: int) -> str:
    import datetime

    if usec <= 0:
        return "-"
    return datetime.datetime.fromtimestamp(usec / 1e6, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_boots(history: list[dict[str, Any]]) -> str:
    """BootHistory as a table, newest first; the reason last (it has spaces)."""
    rows = [("BOOT", "OUTCOME", "BOOTED", "EXPECTED", "TIME (UTC)", "FINALIZE", "REASON")]
    for b in history:
        rows.append(
            (
                str(b.get("boot_id", ""))[:12] or "-",
                str(b.get("outcome", "")) or "-",
                str(b.get("booted_entry") or b.get("booted_deployment") or "-"),
                str(b.get("expected_entry") or b.get("expected_deployment") or "-"),
                _when(int(b.get("timestamp", 0))),
                "failed" if b.get("finalize_failed") else "-",
                str(b.get("reason", "")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def print_snapshot(
    snap: model.Snapshot,
    as_json: bool,
    stream: TextIO = sys.stdout,
    generation: int | None = None,
    version: str = __version__,
    long: bool = False,
) -> None:
    """--json: {"Property": value} in the interface's order; from the daemon (GENERATION given) exactly
    GetAll's, byte for byte what it keeps in /run/ostreewatch/status.json; otherwise the human form."""
    if as_json:
        stream.write(runfiles.render_status(snap, generation, version))
    else:
        stream.write(format_status(snap, _booted_mark(stream), long))


# --- status -------------------------------------------------------------------


def add_read_options(p: argparse.ArgumentParser) -> None:
    """--sysroot/--mountinfo/--cmdline/--run/--sample: where an offline read looks."""
    p.add_argument("--sysroot", default="/", metavar="DIR", help="the directory holding boot/ and ostree/ (default: /)")
    p.add_argument(
        "--mountinfo",
        default="/proc/self/mountinfo",
        metavar="FILE",
        help="the mount table (default: /proc/self/mountinfo)",
    )
    p.add_argument(
        "--cmdline", default="/proc/cmdline", metavar="FILE", help="the kernel command line (default: /proc/cmdline)"
    )
    p.add_argument("--run", default="/run", metavar="DIR", help="the run directory (default: /run)")
    from .sample import DEFAULT, NAMES, add_argument

    add_argument(
        p, f"read a bundled sample host instead ({', '.join(NAMES)}; default {DEFAULT}); overrides the four above"
    )


def paths_from_args(args: argparse.Namespace) -> model.Paths:
    """The model.Paths the options name (the bundled sample with --sample)."""
    if getattr(args, "sample", None):
        from . import sample

        return sample.paths_for(args.sample)
    return model.Paths(sysroot=args.sysroot, mountinfo=args.mountinfo, cmdline=args.cmdline, run=args.run)


def read_offline(args: argparse.Namespace) -> model.Snapshot:
    """Read the boot state directly from the files (no daemon)."""
    from . import boottracker, state

    paths = paths_from_args(args)
    return boottracker.with_assessment(state.read_snapshot(paths), sysroot=paths.sysroot)


def add_status_parser(sub: argparse._SubParsersAction[_SubcommandParser]) -> None:
    p = sub.add_parser(
        "status",
        help="show the boot state",
        description="Show the boot state: deployments, boot entries, default, mounts, problems.",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"Property": value, ...} as JSON, every property GetAll returns (read directly: Generation 0)',
    )
    p.add_argument(
        "--long", action="store_true", help="show checksums in full (else as short as they stay unambiguous)"
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="read the files directly instead of asking the daemon "
        "(implied by --sysroot, --mountinfo, --cmdline, --run and --sample)",
    )
    p.add_argument(
        "--bus",
        default="system",
        metavar="BUS",
        help="where to look for ostreewatchd: system (default), session or a D-Bus address",
    )
    add_read_options(p)
    add_debug_option(p)
    p.set_defaults(func=cmd_status)


def _names_files(args: argparse.Namespace) -> bool:
    """True when a read option was given: the daemon watches its own files, so read these directly."""
    return bool(getattr(args, "sample", False)) or (args.sysroot, args.mountinfo, args.cmdline, args.run) != (
        "/",
        "/proc/self/mountinfo",
        "/proc/cmdline",
        "/run",
    )


def cmd_status(args: argparse.Namespace) -> int:
    if not args.offline and not _names_files(args):
        got = try_daemon_status(args)  # None: no daemon, a note on stderr, read directly
        if got is not None:
            snap, source, generation, version = got
            if args.json:
                print(source, file=sys.stderr)  # stdout stays pure JSON
            else:
                print(source)
            print_snapshot(snap, args.json, generation=generation, version=version, long=args.long)
            return 0
    try:
        snap = read_offline(args)
    except errors.SysrootError as e:
        if getattr(args, "sample", None):
            print(f"ostreewatch: {e}", file=sys.stderr)
        else:
            host = "this machine is not an OSTree host: " if args.sysroot == "/" else ""
            print(f"ostreewatch: {host}{e}; `ostreewatch status --sample` shows a bundled sample host", file=sys.stderr)
        return 1
    except OstreewatchError as e:
        print(f"ostreewatch: {e}", file=sys.stderr)
        return 1
    print_snapshot(snap, args.json, long=args.long)
    return 0


# --- boots -------------------------------------------------------------------


def add_boots_parser(sub: argparse._SubParsersAction[_SubcommandParser]) -> None:
    p = sub.add_parser(
        "boots",
        help="show how the recorded boots turned out",
        description="Show how each recorded boot turned out (default, next-entry, staged, fallback, "
        "other-entry, first-record), newest first: the daemon's BootHistory, or with --state-dir "
        "the records file itself. See docs/boot-outcome.md.",
    )
    p.add_argument("--json", action="store_true", help='print {"LastBoot": {...}, "BootHistory": [...]} as JSON')
    p.add_argument("--bus", default="system", metavar="BUS", help="system (default), session or a D-Bus address")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="read the records in DIR (the daemon's, /var/lib/ostreewatch) instead of asking the daemon",
    )
    add_debug_option(p)
    p.set_defaults(func=cmd_boots)


def cmd_boots(args: argparse.Namespace) -> int:
    if args.state_dir is not None:
        from . import bootstore

        try:
            with open(f"{args.state_dir}/{bootstore.FILE_NAME}", "rb") as f:
                data = f.read(bootstore.MAX_SIZE + 1)
            history = [b.record.to_dict() for b in bootstore.decode(data)]
        except FileNotFoundError:
            history = []
        except (OSError, OstreewatchError) as e:
            print(f"ostreewatch boots: {args.state_dir}: {e}", file=sys.stderr)
            return 1
    else:
        try:
            got = daemon_snapshot(args.bus)
        except (errors.OstreewatchError, OSError, asyncio.TimeoutError) as e:
            err = e if isinstance(e, OstreewatchError) else errors.DaemonUnavailable(str(e))
            print(f"ostreewatch boots: {bus_error_sentence(err, 'boots', args.bus, args.debug)}", file=sys.stderr)
            return 1
        if got is None:
            print(f"ostreewatch boots: ostreewatchd is not running on {_bus_label(args.bus)}", file=sys.stderr)
            return 1
        history = [model.record_to_dict(r) for r in got[0].BootHistory]
    if args.json:
        json.dump({"LastBoot": history[0] if history else {}, "BootHistory": history}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif history:
        sys.stdout.write(format_boots(history))
    else:
        print("No boot recorded.")
    return 0


# --- set-default / set-next -----------------------------------------------------


def _add_set_parser(
    sub: argparse._SubParsersAction[_SubcommandParser], name: str, which: str, help_text: str, method: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help_text,
        description=f"{help_text[0].upper()}{help_text[1:]} ({method})."
        + (
            " Asks the running ostreewatchd (root, or a user polkit authorizes for"
            f" {authz.ACTION_SET_DEFAULT}); returns once the change is on disk."
            " See docs/default-entry.md."
        ),
    )
    p.add_argument("id", nargs="?", metavar="ENTRY", help="the boot entry id (as in `status`; .conf tolerated)")
    p.add_argument("--clear", action="store_true", help="remove the setting instead")
    p.add_argument("--bus", default="system", metavar="BUS", help="system (default), session or a D-Bus address")
    add_debug_option(p)
    p.set_defaults(func=cmd_set_entry, which=which, parser=p, deployment=None)
    return p


def add_set_default_parser(sub: argparse._SubParsersAction[_SubcommandParser]) -> None:
    p = _add_set_parser(sub, "set-default", "default", "make a boot entry the default", "SetDefaultEntry")
    p.add_argument(
        "--deployment",
        metavar="DEPLOYMENT",
        help="make this deployment (OSNAME-CHECKSUM.SERIAL, as in `status`) the first one, as "
        "`ostree admin set-default` does (SetDefaultDeployment); prints the entry that boots it",
    )


def add_set_next_parser(sub: argparse._SubParsersAction[_SubcommandParser]) -> None:
    _add_set_parser(sub, "set-next", "next", "boot an entry once, at the next boot", "SetNextEntry")


def cmd_set_entry(args: argparse.Namespace) -> int:
    """set-default / set-next: one call to the daemon; errors are printed as one sentence with their D-Bus name."""
    import asyncio

    from .client import Client

    command = args.parser.prog.split()[-1]
    if args.deployment is not None:
        if args.clear or args.id is not None:
            args.parser.print_usage(sys.stderr)
            print(
                f"ostreewatch {command}: give an ENTRY, --clear or --deployment DEPLOYMENT (one of them)",
                file=sys.stderr,
            )
            return 2
    elif args.clear == (args.id is not None):
        args.parser.print_usage(sys.stderr)
        print(f"ostreewatch {command}: give an ENTRY or --clear (not both)", file=sys.stderr)
        return 2
    value = args.deployment if args.deployment is not None else ("" if args.clear else args.id)
    try:
        value.encode("utf-8", "strict")
    except UnicodeEncodeError:
        print("ostreewatch: org.freedesktop.DBus.Error.InvalidArgs: the id is not valid UTF-8", file=sys.stderr)
        return 1
    # An authentication dialog (polkit agent) may be shown only to someone at a terminal.
    interactive = sys.stdin.isatty()

    async def call() -> str:
        client = await Client.connect(args.bus)
        try:
            if args.deployment is not None:
                return await client.set_deployment(value, interactive=interactive)
            await client.set_entry(args.which, value, interactive=interactive)
            return ""
        finally:
            client.close()

    try:
        entry = asyncio.run(call())
    except OstreewatchError as e:
        print(f"ostreewatch {command}: {bus_error_sentence(e, command, args.bus, args.debug)}", file=sys.stderr)
        return 1
    if args.deployment is not None:
        print(entry)
        return 0
    what = "default entry" if args.which == "default" else "next boot entry"
    print(f"{what}: {value}" if value else f"{what}: cleared")
    return 0


# --- daemon-backed commands: status from ostreewatchd, monitor ---------------------


def _bus_label(spec: str) -> str:
    return f"the {spec} bus" if spec in ("system", "session") else spec


def daemon_snapshot(bus: str, timeout: float = 10.0) -> tuple[Any, int, str] | None:
    """(snapshot, generation, version) from a running ostreewatchd on BUS; None when none owns the name."""
    from .client import Client

    async def ask() -> tuple[Any, int, str] | None:
        client = await Client.connect(bus)
        try:
            if not await client.has_owner():
                return None
            props = await client.get_all()
        finally:
            client.close()
        return model.snapshot_from_plain(props), int(props.get("Generation", 0)), str(props.get("Version", ""))

    return asyncio.run(asyncio.wait_for(ask(), timeout))


def try_daemon_status(args: argparse.Namespace) -> tuple[Any, str, int, str] | None:
    """The daemon's snapshot, a line naming the source, its Generation and Version; or None (with a note on
    stderr) to read offline."""
    bus = getattr(args, "bus", None) or "system"
    try:
        got = daemon_snapshot(bus)
    except (errors.OstreewatchError, OSError, asyncio.TimeoutError) as e:
        print(
            f"note: no ostreewatchd reachable on {_bus_label(bus)} ({e}); reading the boot state directly",
            file=sys.stderr,
        )
        return None
    if got is None:
        print(f"note: no ostreewatchd on {_bus_label(bus)}; reading the boot state directly", file=sys.stderr)
        return None
    snapshot, generation, version = got
    return snapshot, f"Source: ostreewatchd on {_bus_label(bus)} (generation {generation})", generation, version


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"[{len(value)} item{'s' if len(value) != 1 else ''}]"
    if isinstance(value, str):
        # Values come from files under /boot: a control character (a terminal escape) is shown, not sent.
        return repr(value) if value == "" or " " in value or not value.isprintable() else value
    return json.dumps(value)


def format_signal(name: str, args: dict[str, Any]) -> str:
    """One human line per signal."""
    if name == "PropertiesChanged":
        changed = dict(args["changed"])
        gen = changed.pop("Generation", "?")
        return f"generation {gen}: " + " ".join(f"{k}={_short(v)}" for k, v in sorted(changed.items()))
    parts = []
    for key, value in args.items():
        shown = ",".join(_short(v) for v in value) if isinstance(value, list) else _short(value)
        parts.append(f"{key}={shown}")
    return f"{name} " + " ".join(parts)


def cmd_monitor(args: argparse.Namespace) -> int:
    """Print every change the daemon publishes, one line (or one JSON object) each, until interrupted."""
    from .client import Client

    async def run() -> int:
        try:
            client = await Client.connect(args.bus)
        except errors.OstreewatchError as e:
            print(f"ostreewatch monitor: {bus_error_sentence(e, 'monitor', args.bus, args.debug)}", file=sys.stderr)
            return 1
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

        def on_signal(name: str, payload: dict[str, Any]) -> None:
            if args.json:
                line = json.dumps({"signal": name, **payload}, sort_keys=True)
            else:
                line = format_signal(name, payload)
            print(line, flush=True)

        await client.subscribe(on_signal)
        owner = await client.has_owner()
        print(
            f"Monitoring org.ostreewatch1 on {_bus_label(args.bus)}" + ("" if owner else " (no daemon running yet)"),
            file=sys.stderr,
            flush=True,
        )
        lost = asyncio.ensure_future(client.bus.wait_for_disconnect())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([lost, stopped], return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            stopped.cancel()
            print("ostreewatch: the bus connection was lost", file=sys.stderr)
            return 1
        lost.cancel()
        client.close()
        return 0

    return asyncio.run(run())


def add_monitor_parser(sub: Any) -> None:
    p = sub.add_parser(
        "monitor",
        help="print every change ostreewatchd publishes",
        description="Print every change the running ostreewatchd publishes, one line per "
        "signal (PropertiesChanged with its Generation first, then the typed "
        "signals), until Ctrl-C. Needs the daemon; anyone may run it.",
    )
    p.add_argument("--json", action="store_true", help='one JSON object per signal: {"signal": NAME, ...}')
    p.add_argument("--bus", default="system", metavar="BUS", help="system (default), session or a D-Bus address")
    add_debug_option(p)
    p.set_defaults(func=cmd_monitor)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[_SubcommandParser]], None]] = [
    add_status_parser,
    add_monitor_parser,
    add_boots_parser,
    add_set_default_parser,
    add_set_next_parser,
]


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: an unknown argument is reported with this subcommand's usage.

    argparse hands a subparser's leftovers to the top-level parser, whose error
    would show the top-level usage (`ostreewatch status --frobnicate`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    # typeshed types this with overloads on the namespace; the override forwards both arguments as given.
    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns, extras


def add_debug_option(p: argparse.ArgumentParser) -> None:
    """--debug on a subcommand (SUPPRESS: it must not reset a top-level --debug)."""
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print errors from the bus raw (D-Bus error name and text)",
    )


# Plain sentences for the errors a caller meets most; the raw ones are behind --debug.
# The method each command calls, for its polkit action (authz.ACTIONS) when the bus policy refuses it.
_COMMAND_METHODS = {"set-default": "SetDefaultEntry", "set-next": "SetNextEntry"}


def _split_bus_error(e: OstreewatchError) -> tuple[str, str]:
    """(D-Bus error name, text) of an error from client.Client ("NAME: text")."""
    text = str(e)
    name, sep, rest = text.partition(": ")
    if sep and "." in name and " " not in name:
        return name, rest
    return getattr(e, "dbus_name", ""), text


def bus_error_sentence(e: OstreewatchError, command: str, bus: str, debug: bool = False) -> str:
    """One plain sentence for an error from the bus, printed after "ostreewatch COMMAND: " (raw with debug)."""
    if debug:
        return str(e)
    if isinstance(e, errors.DaemonUnavailable):
        return f"cannot connect to {_bus_label(bus)} (is dbus running there? --debug shows why)"
    name, text = _split_bus_error(e)
    if isinstance(e, errors.NotAuthorized):  # the daemon's own refusal names what is needed: keep it
        return text.rstrip(".")
    if name == errors.AccessDenied.dbus_name:
        # dbus-daemon's policy answers "Rejected send message, 2 matched rules; type=..." (and
        # older daemons "... is for root only"): say what is needed instead.
        method = _COMMAND_METHODS.get(command)
        needs = f"root or the polkit action {authz.ACTIONS[method]}" if method else "root"
        return f"needs {needs} (--debug shows the bus's answer)"
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return f"ostreewatchd is not running on {_bus_label(bus)} (systemctl start ostreewatch)"
    if name in ("org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout"):
        return f"ostreewatchd on {_bus_label(bus)} did not answer in time"
    if name.startswith(errors.ERROR_PREFIX) or name == "org.freedesktop.DBus.Error.InvalidArgs":
        # The daemon's own messages are already sentences; keep the name for scripts.
        return f"{text.rstrip('.')} ({name})"
    return f"{text.rstrip('.')} ({name})" if name else text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ostreewatch",
        description="Show and watch an OSTree host's boot state.",
        epilog="Run `ostreewatch COMMAND --help` for a command's options.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--debug", action="store_true", default=False, help="print errors from the bus raw (D-Bus error name and text)"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_SubcommandParser)
    for add in SUBCOMMANDS:
        add(sub)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse; a missing COMMAND and an unknown top-level flag are reported as such."""
    p = build_parser()
    args, extras = p.parse_known_args(argv)
    if extras:
        p.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        names = ", ".join(add.__name__[len("add_") : -len("_parser")].replace("_", "-") for add in SUBCOMMANDS)
        p.error(f"choose a COMMAND ({names})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return 1  # `ostreewatch status | head`


if __name__ == "__main__":
    sys.exit(main())
