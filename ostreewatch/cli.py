"""`ostreewatch`: the command line.

One function per subcommand: `add_X_parser(subparsers)` declares it and sets
`func=cmd_X`; `cmd_X(args) -> exit code`. Add a subcommand by writing both
and listing the add function in SUBCOMMANDS.

Exit codes: 0 success (problems found are output, not failures), 1 an error
(unreadable or non-ostree sysroot, ...), 2 bad usage (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, List, Optional, TextIO

from . import model
from .errors import OstreewatchError

_NONE = "(none)"


# --- output -------------------------------------------------------------------


def _booted_mark(stream: TextIO) -> str:
    """rpm-ostree's ● when the terminal can show it, else *."""
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return "●" if encoding == "utf8" else "*"


def format_status(snap: model.Snapshot, booted_mark: str = "*") -> str:
    """Human status in the spirit of `rpm-ostree status`: deployments, entries, mounts, problems last."""
    out: List[str] = []
    state = "booted" if snap.BootedDeployment else ("ostree-booted" if snap.OstreeBooted else "not booted")
    out.append(f"State: {state}")
    out.append(f"Bootloader: {snap.Bootloader}")
    out.append("Deployments:")
    if not snap.Deployments:
        out.append(f"  {_NONE}")
    for d in snap.Deployments:
        marks = [m for m, on in (("staged", d.staged), ("default", d.default), ("rollback", d.rollback),
                                 ("pinned", d.pinned)) if on]
        flags = "".join(f" ({m})" for m in marks)
        out.append(f"{booted_mark if d.booted else ' '} {d.osname} {d.checksum}.{d.serial}{flags}")
        for label, value in (("Version", d.version), ("Title", d.title), ("Origin", d.origin),
                             ("Entry", d.entry or _NONE), ("Index", str(d.index) if d.index >= 0 else _NONE)):
            if value:
                out.append(f"{label:>18}: {value}")
    out.append("Boot entries:")
    if not snap.BootEntries:
        out.append(f"  {_NONE}")
    for e in snap.BootEntries:
        marks = "".join(f" ({m})" for m, on in (("default", e.default), ("booted", e.booted),
                                                ("next", e.id == snap.NextEntry)) if on)
        out.append(f"{booted_mark if e.booted else ' '} {e.id}{marks}")
        if e.title:
            out.append(f"{'Title':>18}: {e.title}")
        out.append(f"{'Deployment':>18}: {e.deployment or _NONE}")
    out.append(f"Default entry: {snap.DefaultEntry or _NONE}")
    out.append(f"Next entry: {snap.NextEntry or _NONE}")
    if snap.Mounts:
        out.append("Mounts:")
        for m in snap.Mounts:
            out.append(f"  {m.mount_point:<9} {'ro' if m.read_only else 'rw'} {m.fstype} {m.source} {m.root}")
    if snap.Problems:
        out.append(f"Problems ({len(snap.Problems)}):")
        for p in snap.Problems:
            subject = f" [{p.subject}]" if p.subject else ""
            out.append(f"  {p.code}{subject}: {p.message}")
    else:
        out.append("Problems: none")
    return "\n".join(out) + "\n"


def print_snapshot(snap: model.Snapshot, as_json: bool, stream: TextIO = sys.stdout) -> None:
    """--json: exactly {"Property": value}; otherwise the human form."""
    if as_json:
        json.dump(model.snapshot_to_plain(snap), stream, indent=2, ensure_ascii=False)
        stream.write("\n")
    else:
        stream.write(format_status(snap, _booted_mark(stream)))


# --- status -------------------------------------------------------------------


def add_read_options(p: argparse.ArgumentParser) -> None:
    """--sysroot/--mountinfo/--cmdline/--run/--sample: where an offline read looks."""
    p.add_argument("--sysroot", default="/", metavar="DIR",
                   help="the directory holding boot/ and ostree/ (default: /)")
    p.add_argument("--mountinfo", default="/proc/self/mountinfo", metavar="FILE",
                   help="the mount table (default: /proc/self/mountinfo)")
    p.add_argument("--cmdline", default="/proc/cmdline", metavar="FILE",
                   help="the kernel command line (default: /proc/cmdline)")
    p.add_argument("--run", default="/run", metavar="DIR", help="the run directory (default: /run)")
    p.add_argument("--sample", action="store_true",
                   help="read the bundled sample host (an RHCOS node) instead; overrides the four above")


def paths_from_args(args: argparse.Namespace):  # -> state.Paths
    """The state.Paths the options name (the bundled sample with --sample)."""
    from . import state
    if getattr(args, "sample", False):
        return state.sample_paths()
    return state.Paths(sysroot=args.sysroot, mountinfo=args.mountinfo, cmdline=args.cmdline, run=args.run)


def read_offline(args: argparse.Namespace) -> model.Snapshot:
    """Read the boot state directly from the files (no daemon)."""
    from . import state
    return state.read_snapshot(paths_from_args(args))


def add_status_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("status", help="show the boot state",
                       description="Show the boot state: deployments, boot entries, default, mounts, problems.")
    p.add_argument("--json", action="store_true", help='print {"Property": value, ...} as JSON')
    p.add_argument("--offline", action="store_true",
                   help="read the files directly instead of asking the daemon (the only mode for now)")
    add_read_options(p)
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        snap = read_offline(args)
    except OstreewatchError as e:
        print(f"ostreewatch: {e}", file=sys.stderr)
        return 1
    print_snapshot(snap, args.json)
    return 0


# --- set-default / set-next (helper F) -----------------------------------------


def _add_set_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, which: str,
                    help_text: str) -> None:
    p = sub.add_parser(name, help=help_text, description=help_text + (
        " Asks the running ostreewatchd (root only); returns once the file is on disk."
        " See docs/default-entry.md."))
    p.add_argument("id", nargs="?", metavar="ID", help="the boot entry id (as in `status`; .conf tolerated)")
    p.add_argument("--clear", action="store_true", help="remove the setting instead")
    p.add_argument("--bus", default="system", metavar="BUS",
                   help="system (default), session, or a D-Bus address")
    p.set_defaults(func=cmd_set_entry, which=which, parser=p)


def add_set_default_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    _add_set_parser(sub, "set-default", "default", "Make a boot entry the default (SetDefaultEntry).")


def add_set_next_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    _add_set_parser(sub, "set-next", "next", "Boot an entry once, at the next boot (SetNextEntry).")


def cmd_set_entry(args: argparse.Namespace) -> int:
    """set-default / set-next: one call to the daemon; errors are printed with their D-Bus name."""
    import asyncio

    from . import service

    if args.clear == (args.id is not None):
        args.parser.print_usage(sys.stderr)
        print(f"ostreewatch {args.parser.prog.split()[-1]}: give an ID or --clear (not both)", file=sys.stderr)
        return 2
    entry_id = "" if args.clear else args.id
    try:
        entry_id.encode("utf-8", "strict")
    except UnicodeEncodeError:
        print("ostreewatch: org.freedesktop.DBus.Error.InvalidArgs: the entry id is not valid UTF-8",
              file=sys.stderr)
        return 1

    async def call() -> None:
        client = await service.Client.connect(args.bus)
        try:
            await client.set_entry(args.which, entry_id)
        finally:
            client.close()

    try:
        asyncio.run(call())
    except OstreewatchError as e:
        print(f"ostreewatch: {e}", file=sys.stderr)
        return 1
    what = "default entry" if args.which == "default" else "next boot entry"
    print(f"{what}: {entry_id}" if entry_id else f"{what}: cleared")
    return 0


# --- entry point --------------------------------------------------------------

SUBCOMMANDS: List[Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]] = [
    add_status_parser,
    add_set_default_parser,
    add_set_next_parser,
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ostreewatch", description="Show and watch an OSTree host's boot state.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:
        return 1  # `ostreewatch status | head`


if __name__ == "__main__":
    sys.exit(main())
