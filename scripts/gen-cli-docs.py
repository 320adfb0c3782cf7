#!/usr/bin/env python3
"""Man pages and bash completion generated from the argparse parsers (`make` runs it).

    scripts/gen-cli-docs.py man ostreewatch    > ostreewatch.1    (ostreewatchd: section 8)
    scripts/gen-cli-docs.py bash ostreewatch   > the completion for bash

The parsers are the package's own build_parser(), imported from this checkout: the
python that runs this needs the package's dependencies (as `make` says). Output is
reproducible: no date, the version from ostreewatch.__version__.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ostreewatch import __version__  # noqa: E402

# program -> (module with build_parser, man section, section title, NAME line, SEE ALSO)
PROGRAMS: dict[str, tuple[str, int, str, str, list[str]]] = {
    "ostreewatch": (
        "ostreewatch.cli",
        1,
        "User Commands",
        "show, watch and change an OSTree host's boot state",
        ["ostreewatchd(8)", "ostree(1)", "busctl(1)"],
    ),
    "ostreewatchd": (
        "ostreewatch.daemon",
        8,
        "System Administration",
        "publish an OSTree host's boot state on the D-Bus system bus",
        ["ostreewatch(1)", "ostree(1)", "systemd.service(5)", "busctl(1)"],
    ),
}

DESCRIPTION_8 = (
    "ostreewatchd is started by systemd as ostreewatch.service (or by D-Bus activation of "
    "org.ostreewatch1); it is installed in libexec because it is not meant to be run by hand. "
    "It reads the boot state (BLS entries, ostree deployments, the default entry, the mount "
    "table), owns the name org.ostreewatch1 on the bus, and publishes every change with "
    "signals and structured journal records. SIGHUP makes it re-read the state."
)
FILES_8 = [
    ("/usr/lib/systemd/system/ostreewatch.service", "the unit (enable with systemctl enable ostreewatch.service)"),
    ("/usr/share/dbus-1/system.d/org.ostreewatch1.conf", "the bus policy"),
    ("/usr/share/polkit-1/actions/org.ostreewatch1.policy", "the polkit actions for the write methods"),
    ("/usr/share/doc/ostreewatch/", "README.md, hardening.md and fleet.md"),
]


def load_parser(prog: str) -> argparse.ArgumentParser:
    try:
        module = __import__(PROGRAMS[prog][0], fromlist=["build_parser"])
    except ImportError as e:
        raise SystemExit(
            f"gen-cli-docs: {sys.executable} cannot import {PROGRAMS[prog][0]} ({e}): run it (make's PYTHON=) "
            "with a python that has the package's dependencies"
        ) from None
    parser: argparse.ArgumentParser = module.build_parser()
    return parser


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order --help lists them."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            out += [(name, helps.get(name, ""), p) for name, p in action.choices.items()]
    return out


def options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction) and action.help != argparse.SUPPRESS:
            yield action


def expand_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as --help prints it (%(default)s and the like filled in)."""
    return parser._get_formatter()._expand_help(action) if action.help else ""


def arg_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The argument part of an option (`DIR`, `[NAME]`), or a positional's name, as argparse writes it."""
    formatter = parser._get_formatter()
    if not action.option_strings:
        return formatter._format_args(action, action.dest)
    if action.nargs == 0:
        return ""
    return formatter._format_args(action, action.dest.upper())


# --- roff --------------------------------------------------------------------------


def roff(text: str) -> str:
    """Text escaped for roff: backslashes, hyphens (kept ASCII for copy and paste), a leading dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"(?m)^([.'])", r"\\&\1", text)


def roff_invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{roff(s)}\\fR" for s in action.option_strings)
    args = arg_text(parser, action)
    if not action.option_strings:
        return f"\\fI{roff(args)}\\fR"
    return f"{names} \\fI{roff(args)}\\fR" if args else names


def roff_options(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in options(parser):
        lines += [".TP", roff_invocation(parser, action), roff(expand_help(parser, action))]
    return lines


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage line, unwrapped, without "usage: "."""
    formatter = argparse.HelpFormatter(parser.prog, width=10_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return " ".join(formatter.format_help().split())


def roff_synopsis(parser: argparse.ArgumentParser) -> list[str]:
    rest = usage(parser)[len(parser.prog) :].strip()
    return [f".B {roff(parser.prog)}"] + ([roff(rest)] if rest else [])


def man_page(prog: str) -> str:
    _, section, title, name_line, see_also = PROGRAMS[prog]
    parser = load_parser(prog)
    subs = subcommands(parser)
    lines = [
        f'.\\" Generated by scripts/gen-cli-docs.py from {PROGRAMS[prog][0]}.build_parser(): do not edit.',
        f'.TH {prog.upper()} {section} "" "ostreewatch {__version__}" "{title}"',
        ".nh",  # no hyphenation: option names and paths stay whole
        ".ad l",
        ".SH NAME",
        f"{roff(prog)} \\- {roff(name_line)}",
        ".SH SYNOPSIS",
    ]
    lines += roff_synopsis(parser)
    for _, _, sub in subs:
        lines += [".br", *roff_synopsis(sub)]
    lines += [".SH DESCRIPTION", roff(parser.description or "")]
    if section == 8:
        lines += [".PP", roff(DESCRIPTION_8)]
    if parser.epilog:
        lines += [".PP", roff(parser.epilog)]
    lines += [".SH OPTIONS", *roff_options(parser)]
    if subs:
        lines += [".SH COMMANDS"]
        for name, help_text, sub in subs:
            lines += [f".SS {roff(name)}", *roff_synopsis(sub)]
            lines += [".PP", roff(sub.description or help_text)]
            lines += roff_options(sub)
    if section == 8:
        lines += [".SH FILES"]
        for path, what in FILES_8:
            lines += [".TP", f"\\fI{roff(path)}\\fR", roff(what)]
    lines += [".SH SEE ALSO", ", ".join(f"\\fB{roff(s.split('(')[0])}\\fR({s.split('(')[1]}" for s in see_also)]
    return "\n".join(lines) + "\n"


# --- bash --------------------------------------------------------------------------


def value_words(action: argparse.Action) -> str:
    """The compgen arguments that complete ACTION's value."""
    if action.choices:
        return "-W " + sh_quote(" ".join(str(c) for c in action.choices))
    metavar = str(action.metavar or "")
    if metavar == "DIR":
        return "-d"
    if metavar == "FILE":
        return "-f"
    if metavar == "BUS":
        return "-W 'system session'"
    return ""  # a number, a bus address, an id: nothing to offer


def sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def bash_completion(prog: str) -> str:
    parser = load_parser(prog)
    subs = subcommands(parser)
    func = "_" + re.sub(r"\W", "_", prog)
    scopes: list[tuple[str, argparse.ArgumentParser]] = [("", parser)] + [(name, p) for name, _, p in subs]
    value_cases: list[str] = []
    option_cases: list[str] = []
    for scope, p in scopes:
        flags: list[str] = []
        for action in options(p):
            flags += action.option_strings
            if action.option_strings and action.nargs != 0:
                words = value_words(action)
                pattern = "|".join(f"{scope}:{o}" for o in action.option_strings)
                if action.nargs == "?":  # an optional value: offer it, and the options too
                    value_cases.append(f'        {pattern}) extra=$(compgen {words} -- "$cur") ;;')
                else:
                    body = f'COMPREPLY=($(compgen {words} -- "$cur"))' if words else "COMPREPLY=()"
                    value_cases.append(f"        {pattern}) {body}; return ;;")
        option_cases.append(f"        {sh_quote(scope)}) opts={sh_quote(' '.join(flags))} ;;")
    names = " ".join(name for name, _, _ in subs)
    return f"""# bash completion for {prog}, generated by scripts/gen-cli-docs.py
# from {PROGRAMS[prog][0]}.build_parser().
# shellcheck shell=bash
{func}() {{
    local cur prev cmd opts extra i
    cur=${{COMP_WORDS[COMP_CWORD]}}
    prev=${{COMP_WORDS[COMP_CWORD - 1]}}
    cmd=
    extra=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case " {names} " in
            *" ${{COMP_WORDS[i]}} "*) cmd=${{COMP_WORDS[i]}}; break ;;
        esac
    done
    case "$cmd:$prev" in
{chr(10).join(value_cases)}
    esac
    case "$cmd" in
{chr(10).join(option_cases)}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    elif [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W {sh_quote(names)} -- "$cur") $extra)
    else
        COMPREPLY=($extra)
    fi
}}
complete -F {func} {prog}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("kind", choices=["man", "bash"])
    p.add_argument("prog", choices=sorted(PROGRAMS))
    args = p.parse_args()
    out: Any = man_page(args.prog) if args.kind == "man" else bash_completion(args.prog)
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
