"""os-release files (freedesktop os-release(5)), read as systemd reads them.

A port of the state machine of parse_env_file_internal() in systemd
src/basic/env-file.c: KEY=value lines; a value may mix unquoted parts
(backslash escapes the next character, a backslash-newline continues the line,
trailing blanks dropped), 'single quoted' parts (literal) and "double quoted"
parts (backslash escapes only \\" \\\\ \\` \\$ and newline); a quote is
special only where a value part starts, so A=con"cat" keeps its quotes;
"#" or ";" starts a comment line (ended by the newline even after a
backslash, as systemd >= 254); lines without "=" or with an invalid name
are ignored; an unclosed quote runs to the end of the file.
"""

from __future__ import annotations

from ostreewatch.errors import OsReleaseError
from ostreewatch.parse import checked_text

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_COMMENTS = "#;"
_SHELL_NEED_ESCAPE = '"\\`$'


def parse_os_release(text: str) -> dict[str, str]:
    """Parse os-release text; raises OsReleaseError (invalid input, unclosed quote)."""
    try:
        return _parse(text)
    except OsReleaseError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise OsReleaseError(f"cannot parse os-release: {e}") from e


def _append(buf: list[str], c: str, trailing_ws: int) -> int:
    """Append C to BUF; returns where BUF's trailing blanks now start (-1: none)."""
    if c not in _WHITESPACE:
        trailing_ws = -1
    elif trailing_ws < 0:
        trailing_ws = len(buf)
    buf.append(c)
    return trailing_ws


def _parse(text: str) -> dict[str, str]:
    checked_text(text, "os-release", OsReleaseError)
    out: dict[str, str] = {}
    key: list[str] = []
    value: list[str] = []
    last_key_ws = -1  # where trailing blanks of the key start (-1: none)
    last_value_ws = -1  # where trailing blanks of an unquoted value start (-1: none)
    state = "PRE_KEY"

    def push() -> None:
        k = "".join(key[:last_key_ws] if last_key_ws >= 0 else key)
        v = "".join(value[:last_value_ws] if last_value_ws >= 0 else value)
        if k and k[0] in _NAME_START and _NAME_CHARS.issuperset(k):  # [A-Za-z_][A-Za-z0-9_]*
            out[k] = v  # invalid names are ignored, as systemd does

    for c in text:
        if c in _NEWLINE and state in ("PRE_VALUE", "VALUE"):
            state = "PRE_KEY"  # the end of an unquoted (or empty) value
            push()
        elif state == "PRE_KEY":
            if c in _COMMENTS:
                state = "COMMENT"
            elif c not in _WHITESPACE:
                state = "KEY"
                key, value = [c], []
                last_key_ws = last_value_ws = -1
        elif state == "KEY":
            if c in _NEWLINE:
                state = "PRE_KEY"  # no '=': the line is ignored
            elif c == "=":
                state = "PRE_VALUE"  # last_value_ws is still -1 from the key's start
            else:
                last_key_ws = _append(key, c, last_key_ws)
        elif state == "PRE_VALUE":
            if c == "'":
                state = "SINGLE"
            elif c == '"':
                state = "DOUBLE"
            elif c == "\\":
                state = "VALUE_ESCAPE"
            elif c not in _WHITESPACE:
                state = "VALUE"
                value.append(c)
        elif state == "VALUE":
            if c == "\\":
                state = "VALUE_ESCAPE"
                last_value_ws = -1
            else:
                last_value_ws = _append(value, c, last_value_ws)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if c not in _NEWLINE:  # an escaped newline is eaten
                value.append(c)
        elif state == "SINGLE":
            if c == "'":
                state = "PRE_VALUE"
            else:
                value.append(c)
        elif state == "DOUBLE":
            if c == '"':
                state = "PRE_VALUE"
            elif c == "\\":
                state = "DOUBLE_ESCAPE"
            else:
                value.append(c)
        elif state == "DOUBLE_ESCAPE":
            state = "DOUBLE"
            if c in _SHELL_NEED_ESCAPE:
                value.append(c)
            elif c != "\n":
                value.append("\\")
                value.append(c)
        elif state == "COMMENT":  # noqa: SIM102 - one branch per state, as in the branches above
            # systemd < 254 let a backslash-newline continue a comment; 254+ does not.
            if c in _NEWLINE:
                state = "PRE_KEY"
    if state in ("PRE_VALUE", "VALUE", "VALUE_ESCAPE", "SINGLE", "DOUBLE", "DOUBLE_ESCAPE"):
        push()
    return out
