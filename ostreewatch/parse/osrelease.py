"""os-release files (freedesktop os-release(5); systemd's parse_env_file syntax).

KEY=value lines; values unquoted, "double quoted" (backslash escapes \\" \\\\ \\$ \\`,
newlines allowed) or 'single quoted' (literal); '#' comments and blank lines;
lines with invalid names or no '=' are ignored, as systemd does.
"""

from __future__ import annotations

import re
from typing import Dict, List

from ostreewatch.errors import OsReleaseError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WHITESPACE = " \t"
_NEWLINE = "\n\r"


def parse_os_release(text: str) -> Dict[str, str]:
    """Parse os-release text; raises OsReleaseError (invalid input, unclosed quote)."""
    try:
        return _parse(text)
    except OsReleaseError:
        raise
    except Exception as e:  # nothing but our own error leaves a parser
        raise OsReleaseError(f"cannot parse os-release: {e}") from e


def _parse(text: str) -> Dict[str, str]:
    if not isinstance(text, str):
        raise OsReleaseError("os-release must be text")
    if "\0" in text:
        raise OsReleaseError("NUL character in os-release")
    out: Dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        # Start of a line: skip blanks, comments.
        while i < n and text[i] in _WHITESPACE + _NEWLINE:
            i += 1
        if i >= n:
            break
        if text[i] in "#;":
            while i < n and text[i] != "\n":
                i += 1
            continue
        start = i
        while i < n and text[i] not in "=\n":
            i += 1
        if i >= n or text[i] == "\n":
            continue  # no '=': ignored
        key = text[start:i].strip(_WHITESPACE + "\r")
        i += 1
        while i < n and text[i] in _WHITESPACE:
            i += 1
        value: List[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if quote == "'":
                if c == "'":
                    quote = ""
                else:
                    value.append(c)
            elif quote == '"':
                if c == '"':
                    quote = ""
                elif c == "\\" and i + 1 < n:
                    i += 1
                    nxt = text[i]
                    if nxt in '"\\`$':
                        value.append(nxt)
                    elif nxt != "\n":  # backslash-newline continues the line
                        value.append("\\" + nxt)
                else:
                    value.append(c)
            else:
                if c in _NEWLINE:
                    break
                if c == "'" or c == '"':
                    quote = c
                elif c == "\\" and i + 1 < n:
                    i += 1
                    if text[i] != "\n":
                        value.append(text[i])
                else:
                    value.append(c)
            i += 1
        if quote:
            raise OsReleaseError(f"unterminated {quote} quote in value of {key!r}")
        # Trailing whitespace of an unquoted value is not part of it.
        val = "".join(value).rstrip(_WHITESPACE)
        if _NAME.fullmatch(key):
            out[key] = val
    return out
